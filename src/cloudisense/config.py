"""Settings: a TOML file plus ``CLOUDISENSE_*`` environment variables (env wins).

Every key is typed and validated; an unknown key or a wrong type stops start-up
with a message that names the key. Nested keys map to environment variables with
``__`` between the parts: ``[server] port`` is ``CLOUDISENSE_SERVER__PORT``.

This file holds the node's own sections (identity, data dir, server, auth, llm).
Every module declares its own settings model (``Module.settings_model``) for its
own section (``Module.settings_section``, default its name), built-in and
third-party alike: the node validates each loaded module's section when it loads
the modules, and a section that no installed module owns is an error.

Paths typed :data:`ConfigPath` that are relative are resolved against the config
file's folder (the working directory when there is no file).
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from cloudisense.core.errors import ConfigError

ENV_PREFIX = "CLOUDISENSE_"
#: Variables of the CLI client (``cloudisense rpc``), not server settings.
CLIENT_ENV = {"CONFIG", "URL", "USER", "PASSWORD"}


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("config_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        return Path(base) / value
    return value


#: A path setting: relative values are relative to the config file's folder.
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


class Section(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoSettings(Section):
    """The section of a module that has no settings."""


SectionT = TypeVar("SectionT", bound=BaseModel)


class ServerSettings(Section):
    """HTTP / WebSocket listener."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: Larger WebSocket frames are refused with close code 1009.
    max_message_bytes: int = Field(1_048_576, ge=1024)
    ping_interval: float = Field(20.0, ge=0)
    #: Default time limit of one intent, in seconds.
    request_timeout: float = Field(30.0, gt=0)
    #: Requests one connection may have in flight before it gets 429 answers.
    max_inflight_per_client: int = Field(256, ge=1)
    #: Events queued per client before new ones are dropped (and counted).
    client_queue_size: int = Field(1000, ge=1)
    #: Bytes written to a connection but not yet taken by its peer above which the server stops
    #: reading that connection's requests until they drain (backpressure on a slow reader).
    max_unwritten_bytes: int = Field(4_194_304, ge=65_536)
    #: A connection whose unwritten bytes stay above the limit this many seconds is closed (1008).
    write_stall_timeout: float = Field(60.0, gt=0, description="seconds")
    #: Serve the browser dashboard at ``/``.
    dashboard: bool = True


class AuthSettings(Section):
    """Users, tokens and login rate limiting."""

    #: Secret that signs JWTs; when unset one is generated into the data dir.
    jwt_secret: SecretStr | None = None
    access_ttl: int = Field(900, ge=10, description="seconds")
    refresh_ttl: int = Field(7 * 24 * 3600, ge=60, description="seconds")
    login_max_failures: int = Field(5, ge=1)
    login_window: int = Field(300, ge=1, description="seconds")


class CorsSettings(Section):
    """Cross-origin browser clients (the existing CloudiSENSE web client served from elsewhere)."""

    #: Origins allowed to call the HTTP routes, e.g. ``https://console.example.com``; ``[]``: none.
    origins: list[str] = Field(default_factory=list)
    #: Seconds a browser may cache a preflight answer.
    max_age: int = Field(600, ge=0, le=86_400)


class ProviderSettings(Section):
    """Keys and endpoints of the LLM providers (environment variables of the SDKs win)."""

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    #: How ``response_schema`` is sent to OpenAI-compatible servers: ``json_schema`` (OpenAI,
    #: Ollama, vLLM, llama.cpp) or ``json_object`` with a ``schema`` (llama-cpp-python's server).
    openai_response_format: Literal["json_schema", "json_object"] = "json_schema"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    ollama_host: str | None = None
    #: Path of a GGUF file for the ``local`` provider; default: the model pulled into the data dir
    #: (``cloudisense model pull``), else the model shipped on PyPI.
    local_model_path: ConfigPath | None = None
    local_context: int = Field(4096, ge=256)
    #: CPU threads the ``local`` model computes with; default: every core, for writing the answer
    #: as for reading the prompt (llama-cpp-python's own default writes with half the cores,
    #: about 1.7 times slower on two).
    local_threads: int | None = Field(None, ge=1)
    #: llama-cpp-python chat format for the local model; default: the GGUF's own template,
    #: or ``gemma`` for Gemma files that carry none (like the shipped model).
    local_chat_format: str | None = None
    #: Prompts whose computed state (llama.cpp's KV cache) the ``local`` provider keeps, so a
    #: request that begins like one of them evaluates only the rest: the planner's instructions
    #: and the intents of the modules a request is about once, not per request. Each costs memory
    #: (about 28 KB per token for a 1.5B model: about 9 MB for a module's opening, up to about
    #: 17 MB for a longer prompt);
    #: 0 keeps only llama.cpp's own reuse of the last prompt.
    local_prompt_states: int = Field(16, ge=0, le=64)
    #: After start, while the local model is idle, compute the planner's opening for each module
    #: (its instructions and that module's intents; about 30 ms per token on two cores, once), so
    #: the first request about a module is as quick as later ones. A request never waits more than
    #: one 32-token chunk for it. Kept in ``local_prompt_states``: one per module.
    local_warm_up: bool = True


class LLMSettings(Section):
    """llmcore: which model answers, and limits."""

    #: ``"provider:model"``; ``"offline"`` means no model (the built-in planner only).
    provider: str = "offline"
    fallback: str | None = None
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    #: Token budgets (input + output); 0 means unlimited.
    session_token_budget: int = Field(0, ge=0)
    user_token_budget: int = Field(0, ge=0)
    providers: ProviderSettings = Field(default_factory=ProviderSettings)
    #: The node's data dir (set by :class:`Settings`; pulled models live in ``<data_dir>/models``).
    _data_dir: Path | None = PrivateAttr(None)

    @property
    def data_dir(self) -> Path:
        """The node's data dir (the default one for settings built on their own)."""
        return self._data_dir if self._data_dir is not None else _default_data_dir()


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudisense"


class Settings(BaseModel):
    """All settings of one node: the node's own sections, then one section per module."""

    # Module sections are kept raw here and validated by their modules' models at load.
    model_config = ConfigDict(extra="allow")

    identity: str = Field(default_factory=socket.gethostname)
    data_dir: ConfigPath = Field(default_factory=_default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Modules to load (entry point names); ``None`` loads every installed module.
    modules: list[str] | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    _config_dir: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _share_data_dir(self) -> Settings:
        self.llm._data_dir = self.data_dir
        return self

    @property
    def db_path(self) -> Path:
        """The node's SQLite database."""
        return self.data_dir / "cloudisense.db"

    @property
    def config_dir(self) -> Path | None:
        """The config file's folder (relative paths of module sections resolve against it)."""
        return self._config_dir

    def section_names(self) -> list[str]:
        """Names of the module sections present (in the file, the environment or overrides)."""
        return sorted(self.__pydantic_extra__ or {})

    def section(self, name: str, model: type[SectionT]) -> SectionT:
        """Section ``name`` validated by ``model`` (once; later calls return the same object).

        After it, ``settings.<name>`` is the typed section too. A bad section raises
        :class:`ConfigError` naming each bad key as ``name.key``.
        """
        extra = self.__pydantic_extra__
        if extra is None:  # pragma: no cover - extra="allow" always sets it
            raise ConfigError("settings have no module sections")
        raw = extra.get(name, {})
        if isinstance(raw, model):
            return raw
        if isinstance(raw, BaseModel):
            raise ConfigError(f"[{name}] is claimed by two settings models ({type(raw).__name__}, {model.__name__})")
        try:
            value = model.model_validate(raw, context={"config_dir": self._config_dir})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"section [{name}]", prefix=name)) from None
        extra[name] = value
        return value


def _set_path(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment sets {'.'.join(parts)} but {part} is not a table")
        tree = child
    tree[parts[-1]] = value


def _env_value(raw: str) -> Any:
    """Environment values are JSON when they parse as JSON (lists, numbers, bools), else strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key[len(ENV_PREFIX):] in CLIENT_ENV:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if parts:
            _set_path(tree, parts, _env_value(raw))
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(error: ValidationError, source: str, prefix: str = "") -> str:
    """One line per problem, each naming the key (``prefix.key`` for a module section)."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in [*([prefix] if prefix else []), *item["loc"]]) or "(root)"
        lines.append(f"  {key}: {item['msg']}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)


def load_settings(
    path: Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read ``path`` (optional), apply ``CLOUDISENSE_*`` variables, then ``overrides`` (CLI flags)."""
    env = dict(os.environ if environ is None else environ)
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = path.expanduser()
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        source = str(path)
    tree = _merge(tree, _env_overrides(env))
    tree = _merge(tree, overrides or {})
    config_dir = path.resolve().parent if path is not None else None
    for key, value in tree.items():
        if key not in Settings.model_fields and not isinstance(value, dict):
            raise ConfigError(f"invalid configuration ({source} + environment):\n  {key}: unknown key "
                              "(module sections are tables, such as [logs])")
    try:
        settings = Settings.model_validate(tree, context={"config_dir": config_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source + " + environment")) from None
    settings._config_dir = config_dir
    return settings
