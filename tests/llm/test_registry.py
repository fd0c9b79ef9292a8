"""Provider selection by spec, the register callback, entry points, caching, lazy SDK imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cloudisense.llm import (
    ChatRequest,
    Message,
    ProviderNotConfigured,
    UnknownProvider,
    get_provider,
    parse_spec,
    register,
    registered,
    registry,
)
from cloudisense.llm.testing import ScriptedModel


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("anthropic:claude-3-5-haiku-latest", ("anthropic", "claude-3-5-haiku-latest")),
        ("local", ("local", "")),
        ("local:/models/x.gguf", ("local", "/models/x.gguf")),
        ("ollama:llama3:8b", ("ollama", "llama3:8b")),
        (" Scripted ", ("scripted", "")),
    ],
)
def test_parse_spec(spec: str, expected: tuple[str, str]) -> None:
    assert parse_spec(spec) == expected


def test_builtins_registered() -> None:
    assert {"openai", "anthropic", "ollama", "local", "scripted"} <= set(registered())


def test_unknown_and_offline_are_clear(make_settings) -> None:
    with pytest.raises(UnknownProvider, match="unknown llm provider 'gpt'.*known: anthropic"):
        get_provider("gpt:4", make_settings())
    with pytest.raises(ProviderNotConfigured, match="offline"):
        get_provider(None, make_settings())  # the default provider is "offline"
    assert registry.is_offline(make_settings())


def test_register_callback_and_duplicates(make_settings) -> None:
    register("mine-test", lambda model, settings: ScriptedModel(["hi"], model=model), replace=True)
    provider = get_provider("mine-test:v1", make_settings())
    assert provider.model == "v1"
    with pytest.raises(ValueError, match="already registered"):
        register("mine-test", lambda model, settings: ScriptedModel())


def test_entry_point_plugins_register_the_same_way(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def plugin(reg) -> None:
        reg("plugged", lambda model, settings: ScriptedModel(["from plugin"], model=model or "p"))

    def broken(reg) -> None:
        raise RuntimeError("plugin bug")

    eps = [
        SimpleNamespace(name="plugged", value="x:plugin", load=lambda: plugin),
        SimpleNamespace(name="broken", value="y:broken", load=lambda: broken),
    ]
    seen_groups: list[str] = []

    def fake_entry_points(group: str):
        seen_groups.append(group)
        return eps

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_FACTORIES", {})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    provider = get_provider("plugged", make_settings())
    assert seen_groups == ["cloudisense.llm_providers"]
    assert asyncio.run(provider.complete(ChatRequest([Message.user("x")]))).text == "from plugin"
    assert "openai" in registered()  # a broken plugin does not take the built-ins down


def test_cache_per_settings_and_per_event_loop(make_settings) -> None:
    settings = make_settings(providers={"openai_base_url": "http://127.0.0.1:9/v1"})

    async def build():
        return get_provider("openai:m", settings), get_provider("openai:m", settings)

    a1, a2 = asyncio.run(build())
    b1, _ = asyncio.run(build())
    assert a1 is a2  # same loop, same spec and settings: one client
    assert a1 is not b1  # a network client is never shared across event loops

    async def build_two_settings():
        other = make_settings(providers={"openai_base_url": "http://127.0.0.1:9/v1"}, timeout=9)
        return get_provider("openai:m", settings), get_provider("openai:m", other)

    same, different = asyncio.run(build_two_settings())
    assert same is not different  # other settings, other provider
    # Providers without loop-bound connections (local, scripted) are shared everywhere.
    assert get_provider("scripted", settings) is asyncio.run(_scripted(settings))


async def _scripted(settings):
    return get_provider("scripted", settings)


async def test_missing_local_file_is_not_configured(make_settings) -> None:
    pytest.importorskip("llama_cpp")
    provider = get_provider("local:/nonexistent/model.gguf", make_settings())
    with pytest.raises(ProviderNotConfigured, match="model file not found"):
        await provider.complete(ChatRequest([Message.user("x")]))


def test_sdks_imported_only_when_used() -> None:
    code = (
        "import sys\n"
        "from cloudisense.config import LLMSettings\n"
        "from cloudisense.llm import get_provider\n"
        "get_provider('scripted', LLMSettings())\n"
        "heavy = [m for m in ('openai', 'anthropic', 'llama_cpp') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "get_provider('openai:m', LLMSettings(providers={'openai_base_url': 'http://127.0.0.1:9'}))\n"
        "assert 'openai' in sys.modules and 'anthropic' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
