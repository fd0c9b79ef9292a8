#!/usr/bin/env python3
"""Refresh or verify the dashboard's vendored JavaScript libraries.

The dashboard has no build step: it serves the built files of a few well-kept libraries
(markdown, sanitizing, charts) from ``src/cloudisense/web/vendor/``, and the browser tests
use axe-core from ``tests/web/vendor/``. ``PACKAGES`` below is the one list of what is
vendored (package, pinned version, which files go where). ``VERSIONS.md`` beside the files
records each package's tarball SHA-256 and each file's SHA-256; it is written by this script.

    python scripts/vendor_web.py          # fetch with `npm pack`, copy, write VERSIONS.md
    python scripts/vendor_web.py --check  # the files on disk match VERSIONS.md (no network)

Fetching needs the ``npm`` client and the npm registry; checking needs neither.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB_VENDOR = ROOT / "src" / "cloudisense" / "web" / "vendor"
TEST_VENDOR = ROOT / "tests" / "web" / "vendor"


@dataclass(frozen=True)
class Package:
    """One npm package: its pinned version and which of its files are copied where."""

    name: str
    version: str
    #: (path inside the tarball's ``package/`` folder, destination relative to ``root``)
    files: tuple[tuple[str, str], ...]
    root: Path = WEB_VENDOR


# Destinations end in .js (not .mjs): Python's mimetypes does not always know .mjs, and a module
# script served with another type is refused by the browser (the server sends nosniff).
PACKAGES: tuple[Package, ...] = (
    Package("marked", "18.2.1", (("lib/marked.esm.js", "marked/marked.esm.js"), ("LICENSE", "marked/LICENSE"))),
    Package("dompurify", "3.5.0", (("dist/purify.es.mjs", "dompurify/purify.es.js"),
                                   ("LICENSE", "dompurify/LICENSE"))),
    Package("uplot", "1.6.32", (("dist/uPlot.esm.js", "uplot/uPlot.esm.js"),
                                ("dist/uPlot.min.css", "uplot/uPlot.min.css"), ("LICENSE", "uplot/LICENSE"))),
    Package("axe-core", "4.14.1", (("axe.min.js", "axe.min.js"), ("LICENSE", "axe-core-LICENSE")), root=TEST_VENDOR),
)

ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<package>[\w.-]+)@(?P<version>[\w.-]+) \| `(?P<sha>[0-9a-f]{64})` \|$")


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versions_file(root: Path) -> Path:
    """Where the record of the files under ``root`` is kept."""
    return root / "VERSIONS.md"


def fetch(package: Package, workdir: Path) -> Path:
    """``npm pack`` the pinned version into ``workdir``; the tarball's path."""
    out = subprocess.run(["npm", "pack", f"{package.name}@{package.version}", "--silent"], cwd=workdir,
                         check=True, capture_output=True, text=True)
    return workdir / out.stdout.strip().splitlines()[-1]


def refresh() -> None:
    """Fetch every package, copy its files, and write the VERSIONS.md of each vendor folder."""
    tarballs: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            tarball = fetch(package, Path(tmp))
            tarballs[package.name] = sha256(tarball)
            with tarfile.open(tarball) as tar:
                for inner, dest in package.files:
                    member = tar.extractfile(f"package/{inner}")
                    if member is None:
                        raise SystemExit(f"{package.name}@{package.version} has no {inner}")
                    target = package.root / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as f:
                        shutil.copyfileobj(member, f)
    for root in {p.root for p in PACKAGES}:
        versions_file(root).write_text(render(root, tarballs), encoding="utf-8")
        print(f"wrote {versions_file(root).relative_to(ROOT)}")


def render(root: Path, tarballs: dict[str, str]) -> str:
    """The VERSIONS.md of one vendor folder (tarball and file hashes)."""
    packages = [p for p in PACKAGES if p.root == root]
    lines = ["# Vendored files", "",
             "Written by `scripts/vendor_web.py` (do not edit by hand): the built files of pinned npm",
             "packages, copied from the registry's tarballs. `python scripts/vendor_web.py --check` verifies",
             "them; `python scripts/vendor_web.py` fetches them again (needs `npm`).", "",
             "| package | version | licence | tarball SHA-256 |", "| --- | --- | --- | --- |"]
    for p in packages:
        licence = next(dest for inner, dest in p.files if inner.startswith("LICENSE"))
        lines.append(f"| {p.name} | {p.version} | `{licence}` | `{tarballs[p.name]}` |")
    lines += ["", "| file | from | SHA-256 |", "| --- | --- | --- |"]
    for p in packages:
        for _, dest in p.files:
            lines.append(f"| `{dest}` | {p.name}@{p.version} | `{sha256(root / dest)}` |")
    return "\n".join(lines) + "\n"


def problems() -> list[str]:
    """What does not match: missing files, changed files, versions other than the pinned ones."""
    found: list[str] = []
    for root in sorted({p.root for p in PACKAGES}):
        record = versions_file(root)
        if not record.exists():
            found.append(f"{record.relative_to(ROOT)} is missing")
            continue
        recorded = {m["path"]: m for line in record.read_text(encoding="utf-8").splitlines()
                    if (m := ROW.match(line))}
        for p in (p for p in PACKAGES if p.root == root):
            for _, dest in p.files:
                row = recorded.get(dest)
                path = root / dest
                if row is None:
                    found.append(f"{dest} is not recorded in {record.relative_to(ROOT)}")
                elif (row["package"], row["version"]) != (p.name, p.version):
                    found.append(f"{dest} is recorded as {row['package']}@{row['version']}, "
                                 f"pinned {p.name}@{p.version}")
                elif not path.exists():
                    found.append(f"{path.relative_to(ROOT)} is missing")
                elif sha256(path) != row["sha"]:
                    found.append(f"{path.relative_to(ROOT)} differs from the recorded SHA-256")
    return found


def main(argv: list[str] | None = None) -> int:
    """Refresh the vendored files, or with ``--check`` verify them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the files against VERSIONS.md (no network)")
    args = parser.parse_args(argv)
    if not args.check:
        refresh()
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print("run `python scripts/vendor_web.py` to fetch the pinned versions again", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
