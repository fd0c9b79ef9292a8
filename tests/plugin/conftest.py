"""Installs the test-only ``cloudisense_backups`` module through the ``cloudisense.modules`` entry point.

A temporary ``*.dist-info`` folder with an ``entry_points.txt`` goes on ``sys.path`` (exactly what
``pip install`` of a module author's package leaves behind), next to the package folder, so
``discover_modules()`` finds it like any third-party module. Nothing is added to ``cloudisense``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The entry-point name of the installed plugin module (``backups``)."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "cloudisense_backups-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cloudisense-backups\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cloudisense.modules]\nbackups = cloudisense_backups:BackupsModule\n")
    added = [str(site), str(PLUGIN_ROOT)]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield "backups"
    finally:
        for entry in added:
            sys.path.remove(entry)
        importlib.invalidate_caches()
