"""Settings: a TOML file plus ``CLOUDISENSE_*`` environment variables (env wins).

Every key is typed and validated; an unknown key or a wrong type stops start-up
with a message that names the key. Nested keys map to environment variables with
``__`` between the parts: ``[server] port`` is ``CLOUDISENSE_SERVER__PORT``.
Relative paths in a config file are resolved against the file's folder.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cloudisense.core.errors import ConfigError

ENV_PREFIX = "CLOUDISENSE_"
#: Variables of the CLI client (``cloudisense rpc``), not server settings.
CLIENT_ENV = {"CONFIG", "URL", "USER", "PASSWORD"}


class Section(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


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


class SystemSettings(Section):
    """The system module."""

    stats_interval: float = Field(5.0, gt=0, description="seconds between /stats events")


class LogsSettings(Section):
    """Configured log files, by name."""

    files: dict[str, Path] = Field(default_factory=dict)
    poll_interval: float = Field(0.25, gt=0)


class ScriptsSettings(Section):
    """The scripts folder."""

    folder: Path | None = None
    time_limit: float = Field(300.0, gt=0, description="seconds before a script is killed")


class TargetSettings(Section):
    """One managed service."""

    backend: Literal["process", "systemd"] = "process"
    #: For ``process``: the command as an argument list (never a shell string).
    command: list[str] = Field(default_factory=list)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    #: Where a ``process`` target's stdout/stderr go.
    log: Path | None = None
    #: For ``systemd``: the unit name (must be listed here to be managed).
    unit: str | None = None
    #: Start with the node.
    autostart: bool = False
    stop_timeout: float = Field(5.0, gt=0)
    #: Optional HTTP URL that answers 2xx when the service is healthy.
    health_url: str | None = None
    #: After a start or restart, wait up to this many seconds for ``health_url`` to answer healthy.
    health_wait: float = Field(10.0, ge=0, le=300)
    #: For ``systemd``: the ``systemctl`` program (a path, or a name looked up on PATH).
    systemctl: str = "systemctl"


class NotifySettings(Section):
    """Outgoing notifications."""

    webhooks: list[str] = Field(default_factory=list)
    timeout: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_base_url: str = "https://api.telegram.org"
    #: Seconds before the first retry; doubled for each further retry.
    backoff: float = Field(0.2, ge=0, le=30)


class RulesSettings(Section):
    """The reaction engine."""

    folder: Path | None = None
    #: At most this many firings of one rule per minute (loop guard).
    max_firings_per_minute: int = Field(30, ge=1)


class ProvisionSettings(Section):
    """Ansible provisioning."""

    folder: Path | None = None
    inventory: Path | None = None
    time_limit: float = Field(900.0, gt=0)


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
    #: Path of a GGUF file for the ``local`` provider; default: the model shipped on PyPI.
    local_model_path: Path | None = None
    local_context: int = Field(4096, ge=256)
    local_threads: int | None = None
    #: llama-cpp-python chat format for the local model; default: the GGUF's own template,
    #: or ``gemma`` for Gemma files that carry none (like the shipped model).
    local_chat_format: str | None = None


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


class AgentSettings(Section):
    """The assistant: planning, policy, approvals, escalation."""

    policy_file: Path | None = None
    approval_ttl: int = Field(900, ge=10, description="seconds")
    #: Below this plan confidence the assistant asks or escalates instead of acting.
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_steps: int = Field(8, ge=1, le=50)
    max_observation_chars: int = Field(4000, ge=200)
    #: Where escalations are sent: ``webhook`` or ``telegram`` (through the notify module).
    escalate_via: Literal["webhook", "telegram", "none"] = "webhook"


class FederationSettings(Section):
    """MQTT federation between nodes."""

    #: Join the federation: connect to the broker and answer requests of other nodes.
    enabled: bool = False
    #: The MQTT broker every node of the federation connects to.
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(1883, ge=1, le=65535)
    #: Broker credentials: the broker's authentication and ACLs are the federation's trust boundary.
    username: str | None = None
    #: Never logged or answered.
    password: SecretStr | None = None
    #: First MQTT topic levels of every federation topic (no wildcards, no empty levels).
    topic_prefix: str = Field("cloudisense", pattern=r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$", max_length=200)
    #: Seconds to wait for another node's answer before a 504.
    request_timeout: float = Field(15.0, gt=0)
    #: The highest role a request from another node runs with here (lower origin roles stay lower).
    max_remote_role: Literal["viewer", "operator", "admin"] = "operator"
    #: Local topics whose events other nodes may receive (an entry ending in ``/`` covers the topics under it).
    forward_topics: list[str] = Field(default_factory=lambda: ["/stats", "/notification", "/targets"])
    #: Larger messages from the broker are dropped, and larger answers are refused.
    max_payload_bytes: int = Field(1_048_576, ge=1024)
    #: MQTT keepalive in seconds: how soon the broker notices a dead node and publishes its last will.
    keepalive: int = Field(15, ge=5, le=3600)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloudisense"


class Settings(Section):
    """All settings of one node."""

    identity: str = Field(default_factory=socket.gethostname)
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Modules to load (entry point names); ``None`` loads every installed module.
    modules: list[str] | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    system: SystemSettings = Field(default_factory=SystemSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    scripts: ScriptsSettings = Field(default_factory=ScriptsSettings)
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    provision: ProvisionSettings = Field(default_factory=ProvisionSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)

    @property
    def db_path(self) -> Path:
        """The node's SQLite database."""
        return self.data_dir / "cloudisense.db"


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


_PATH_KEYS = (
    ("data_dir",),
    ("scripts", "folder"),
    ("rules", "folder"),
    ("provision", "folder"),
    ("provision", "inventory"),
    ("agent", "policy_file"),
    ("llm", "providers", "local_model_path"),
)


def _resolve_relative(tree: dict[str, Any], base: Path) -> None:
    """Make the file's relative paths relative to the file, not to the working directory."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(base / value)
        return value

    for path in _PATH_KEYS:
        node: Any = tree
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = fix(node[path[-1]])
    files = tree.get("logs", {}).get("files") if isinstance(tree.get("logs"), dict) else None
    if isinstance(files, dict):
        for name in files:
            files[name] = fix(files[name])
    targets = tree.get("targets")
    if isinstance(targets, dict):
        for target in targets.values():
            if isinstance(target, dict):
                for key in ("cwd", "log"):
                    if key in target:
                        target[key] = fix(target[key])


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the key."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
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
        _resolve_relative(tree, path.resolve().parent)
        source = str(path)
    tree = _merge(tree, _env_overrides(env))
    tree = _merge(tree, overrides or {})
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source + " + environment")) from None
