"""Modules own their settings: each section is validated by its module's model, third-party ones too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from cloudisense.config import ConfigPath, Section, load_settings
from cloudisense.core.errors import ConfigError
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.modules.logs import LogsModule
from cloudisense.node import Node
from tests.conftest import make_settings, start_server


class VaultSettings(Section):
    """A third-party module's section."""

    buckets: list[str] = Field(default_factory=list)
    folder: ConfigPath | None = None
    retries: int = Field(3, ge=0)


class BucketParams(Params):
    """Which bucket."""

    bucket: str


class VaultModule(Module):
    """A plugin with its own settings and entities."""

    name = "vault"
    settings_model = VaultSettings

    def intents(self) -> list[Intent]:
        return [Intent("bucket_size", "Size of a configured bucket", self.bucket_size, BucketParams, Risk.READ,
                       ("how big is the photos bucket",), entities={"bucket": "bucket"})]

    def entities(self) -> dict[str, list[str]]:
        return {"bucket": list(self.settings.buckets)}

    async def bucket_size(self, p: BucketParams, ctx: Any) -> dict[str, Any]:
        return {"bucket": p.bucket, "known": p.bucket in self.settings.buckets, "retries": self.settings.retries}


def test_a_module_section_is_validated_by_its_model_with_keys_named(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, vault={"buckets": ["photos"], "retries": -1})
    with pytest.raises(ConfigError) as err:
        Node(settings, module_classes={"vault": VaultModule}).load_modules()
    assert "vault.retries" in err.value.message
    typo = make_settings(tmp_path, vault={"bucket": ["photos"]})
    with pytest.raises(ConfigError) as err:
        Node(typo, module_classes={"vault": VaultModule}).load_modules()
    assert "vault.bucket" in err.value.message


def test_a_section_nobody_reads_stops_start_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, vualt={"buckets": []})
    with pytest.raises(ConfigError) as err:
        Node(settings, module_classes={"vault": VaultModule}).load_modules()
    assert "[vualt]" in err.value.message and "no installed module" in err.value.message


def test_relative_paths_of_a_module_section_follow_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "node.toml"
    config.parent.mkdir()
    config.write_text('[vault]\nfolder = "data/vault"\n[logs.files]\napp = "log/app.log"\n')
    settings = load_settings(config, environ={})
    node = Node(settings, module_classes={"vault": VaultModule, "logs": LogsModule})
    node.load_modules()
    assert node.module("vault").settings.folder == config.parent / "data" / "vault"
    assert node.module("logs").settings.files["app"] == config.parent / "log" / "app.log"


def test_environment_reaches_a_third_party_section(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"CLOUDISENSE_VAULT__BUCKETS": '["photos", "backups"]',
                                            "CLOUDISENSE_DATA_DIR": str(tmp_path)})
    node = Node(settings, module_classes={"vault": VaultModule})
    node.load_modules()
    assert node.entities() == {"bucket": ["photos", "backups"]}


async def test_a_plugin_runs_through_the_router_with_its_settings(tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, vault={"buckets": ["photos"], "retries": 5}),
                                 module_classes={"vault": VaultModule})
    try:
        conn = await running.connect("viewer")
        data = await conn.call("bucket_size", {"bucket": "photos"})
        assert data == {"bucket": "photos", "known": True, "retries": 5}
        conn.close()
    finally:
        await running.server.stop()
