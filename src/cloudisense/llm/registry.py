"""Provider selection by a ``"provider:model"`` spec, through a registry.

Specs::

    openai:gpt-4o-mini            OpenAI (or OPENAI_BASE_URL / [llm.providers] openai_base_url)
    anthropic:claude-3-5-haiku-latest
    ollama:llama3                 the openai provider at $OLLAMA_HOST/v1
    local                         the shipped GGUF model, in-process
    local:/path/to/model.gguf     any GGUF file
    scripted                      llmcore.testing.ScriptedModel (tests)
    offline                       no model (refused here with a clear error)

Built-in providers are registered exactly as third-party ones are: a plugin is
a function that receives :func:`register` and calls it. Plugins are found
through the entry-point group ``cloudisense.llm_providers``::

    # pyproject.toml of a plugin
    [project.entry-points."cloudisense.llm_providers"]
    mine = "my_pkg.llm:register_providers"

    # my_pkg/llm.py
    def register_providers(register):
        register("mine", lambda model, settings: MyProvider(model, settings))

A factory imports its SDK itself, so an SDK is imported only when its provider
is used. Providers are cached: the same spec and settings give the same object
(the local model is loaded once and shared). Providers holding network clients
are cached per event loop, since an HTTP connection pool cannot cross loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from cloudisense.llm.base import Provider
from cloudisense.llm.errors import ProviderNotConfigured, UnknownProvider

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cloudisense.llm_providers"
OFFLINE = "offline"

#: ``factory(model, settings) -> Provider``; ``model`` is the part after the first ``:`` ("" if none).
ProviderFactory = Callable[[str, "LLMSettings"], Provider]
#: What a plugin's entry point is: a function that registers its providers.
RegisterHook = Callable[..., None]


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: ProviderFactory
    per_loop: bool


_FACTORIES: dict[str, _Entry] = {}
_SHARED: dict[tuple[str, str], Provider] = {}
_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Provider]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.RLock()
_plugins_loaded = False

# Environment variables the built-in providers read: part of the cache key.
_ENV_KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OLLAMA_HOST")


def register(name: str, factory: ProviderFactory, *, per_loop: bool = True, replace: bool = False) -> None:
    """Make ``name`` usable in specs.

    ``per_loop=False`` when the provider may be shared across event loops (it
    holds no loop-bound connections). Registering a taken name raises unless
    ``replace=True``.
    """
    if not name or ":" in name:
        raise ValueError(f"invalid provider name {name!r}")
    with _LOCK:
        if name in _FACTORIES and not replace:
            raise ValueError(f"llm provider {name!r} is already registered")
        _FACTORIES[name] = _Entry(factory, per_loop)


def _builtins(reg: RegisterHook) -> None:
    """The built-in providers, registered like plugins."""

    def openai(model: str, settings: LLMSettings) -> Provider:
        from cloudisense.llm.openai_provider import make_openai

        return make_openai(model, settings)

    def ollama(model: str, settings: LLMSettings) -> Provider:
        from cloudisense.llm.openai_provider import make_ollama

        return make_ollama(model, settings)

    def anthropic(model: str, settings: LLMSettings) -> Provider:
        from cloudisense.llm.anthropic_provider import make_anthropic

        return make_anthropic(model, settings)

    def local(model: str, settings: LLMSettings) -> Provider:
        from cloudisense.llm.local import make_local

        return make_local(model, settings)

    def scripted(model: str, settings: LLMSettings) -> Provider:
        from cloudisense.llm.testing import ScriptedModel

        return ScriptedModel(model=model or "scripted")

    reg("openai", openai)
    reg("ollama", ollama)
    reg("anthropic", anthropic)
    reg("local", local, per_loop=False)
    reg("scripted", scripted, per_loop=False)


def _load_plugins() -> None:
    global _plugins_loaded
    with _LOCK:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        _builtins(register)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                hook = ep.load()
                hook(register)
            except Exception:
                # One broken plugin must not take the built-in providers down.
                log.exception("llm provider plugin %s (%s) failed to register", ep.name, ep.value)


def registered() -> list[str]:
    """Names usable before the ``:`` of a spec."""
    _load_plugins()
    return sorted(_FACTORIES)


def parse_spec(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` → ``("openai", "gpt-4o")``; ``"local"`` → ``("local", "")``."""
    name, _, model = spec.strip().partition(":")
    return name.strip().lower(), model.strip()


def _fingerprint(settings: LLMSettings) -> str:
    """Hash of everything a provider is built from (secrets included, but only hashed)."""

    def reveal(value: Any) -> Any:
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        return str(value)

    data = settings.model_dump(mode="python")
    env = {k: os.environ.get(k) for k in _ENV_KEYS}
    blob = json.dumps([data, env, str(settings.data_dir)], default=reveal, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _build(spec: str, settings: LLMSettings) -> Provider:
    _load_plugins()
    name, model = parse_spec(spec)
    if name == OFFLINE:
        raise ProviderNotConfigured(
            "no language model is configured ([llm] provider = 'offline'); "
            "set it to e.g. 'local', 'openai:gpt-4o-mini' or 'anthropic:claude-3-5-haiku-latest'"
        )
    entry = _FACTORIES.get(name)
    if entry is None:
        raise UnknownProvider(
            f"unknown llm provider {name!r} in spec {spec!r}; known: {', '.join(registered())} "
            "(write 'provider:model', e.g. 'openai:gpt-4o-mini')"
        )
    key = (spec.strip(), _fingerprint(settings))
    with _LOCK:
        loop = _running_loop() if entry.per_loop else None
        cache = _PER_LOOP.setdefault(loop, {}) if loop is not None else _SHARED
        provider = cache.get(key)
        if provider is None:
            provider = cache[key] = entry.factory(model, settings)
        return provider


def get_provider(spec: str | None, settings: LLMSettings, *, with_fallback: bool = True) -> Provider:
    """The provider for ``spec`` (``None``: ``settings.provider``), cached.

    When ``spec`` is the configured primary and ``[llm] fallback`` is set (and
    ``with_fallback``), the result is a
    :class:`~cloudisense.llm.faults.FallbackProvider` that tries the fallback
    only when the primary failed before any output.

    Raises :class:`UnknownProvider` for an unknown name and
    :class:`ProviderNotConfigured` when the provider cannot be used (missing key,
    missing package, ``offline``); messages say how to fix it.
    """
    spec = spec or settings.provider
    primary = _build(spec, settings)
    if with_fallback and settings.fallback and spec == settings.provider and settings.fallback != spec:
        from cloudisense.llm.faults import FallbackProvider

        return FallbackProvider(primary, _build(settings.fallback, settings))
    return primary


def is_offline(settings: LLMSettings) -> bool:
    """True when no model is configured (the assistant uses its built-in planner)."""
    return parse_spec(settings.provider)[0] == OFFLINE


def clear_cache() -> list[Provider]:
    """Forget cached providers (tests; settings reload). Returns them so the caller may close them."""
    with _LOCK:
        dropped = list(_SHARED.values())
        for cache in _PER_LOOP.values():
            dropped.extend(cache.values())
        _SHARED.clear()
        _PER_LOOP.clear()
        return dropped


async def aclose_all() -> None:
    """Close every cached provider (server shutdown)."""
    for provider in clear_cache():
        try:
            await provider.aclose()
        except Exception:  # closing is best effort; a dead loop's client may refuse
            log.debug("closing %r failed", provider, exc_info=True)
