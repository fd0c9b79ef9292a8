"""The file manager's settings: labels, extensions, relative roots; and its intents' declared risks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudisense.config import load_settings
from cloudisense.core.errors import ConfigError
from cloudisense.modules.files import FilesSettings


def test_roots_are_resolved_against_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[files.roots.demo]\npath = "files"\nwritable = true\n'
                      '[files]\nread_extensions = [".TXT", ".md"]\n')
    settings = load_settings(config, environ={}).section("files", FilesSettings)
    assert settings.roots["demo"].path == tmp_path / "files"
    assert settings.roots["demo"].writable and not settings.roots["demo"].downloadable
    assert settings.read_extensions == [".txt", ".md"]  # compared in lower case


@pytest.mark.parametrize("bad, key", [
    ({"roots": {"../up": {"path": "/tmp"}}}, "files.roots"),
    ({"roots": {"a/b": {"path": "/tmp"}}}, "files.roots"),
    ({"roots": {"ok": {"path": "/tmp", "shell": True}}}, "files.roots.ok.shell"),
    ({"read_extensions": ["txt"]}, "files.read_extensions"),
    ({"write_extensions": [".t xt"]}, "files.write_extensions"),
    ({"max_read_bytes": 0}, "files.max_read_bytes"),
    ({"download_ttl": 1}, "files.download_ttl"),
])
def test_bad_settings_name_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={}, overrides={"files": bad}).section("files", FilesSettings)
    assert key in info.value.message


def test_intents_declare_their_risks(tmp_path: Path) -> None:
    from cloudisense.modules.files import FilesModule
    from cloudisense.node import Node

    node = Node(load_settings(None, environ={}, overrides={"data_dir": str(tmp_path)}), {"files": FilesModule})
    node.load_modules()
    risks = {i.name: i.risk.value for i in node.registry.all()}
    assert risks == {"get_accessible_paths": "read", "list_content": "read", "read_file": "read",
                     "write_file": "write", "delete_file": "destructive", "delete_folder": "destructive",
                     "download_file": "read", "download_log": "read"}
