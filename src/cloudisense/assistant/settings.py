"""Settings of the assistant module, section ``[agent]``."""

from __future__ import annotations

from pydantic import Field, field_validator

from cloudisense.config import ConfigPath, Section, Settings


class DiagnoseSettings(Section):
    """What the read-only investigation of open questions checks and how much it keeps."""

    #: Folders to watch: a files root label, optionally with a path below it (``logs``,
    #: ``demo/reports``) -> the size in MB above which the folder counts as too full.
    folder_limits: dict[str, float] = Field(default_factory=dict)
    #: The script (in the scripts folder) that frees space in those folders; proposed when one is too full.
    cleanup_script: str | None = Field(None, max_length=255)
    #: How far back log searches look, in minutes.
    window_minutes: int = Field(60, ge=1, le=1440)
    #: Tokens (about 4 characters each) the condensed evidence may use in all.
    token_budget: int = Field(1500, ge=100, le=50_000)

    @field_validator("folder_limits")
    @classmethod
    def _check_limits(cls, value: dict[str, float]) -> dict[str, float]:
        for folder, mb in value.items():
            if not folder.strip() or mb <= 0:
                raise ValueError(f"folder limit {folder!r} = {mb!r}: give a files root label and a size in MB above 0")
        return value


class EscalationSettings(Section):
    """Who is paged, and when: the channels of each severity of escalation, and how often one repeats.

    Each list names channels (``webhook``, ``telegram``, ``email``) or notification intents (which are
    given a ``message``); an empty list pages nobody; a severity left out uses ``[agent] escalate_via``.
    """

    info: list[str] | None = Field(None, max_length=10)
    warning: list[str] | None = Field(None, max_length=10)
    critical: list[str] | None = Field(None, max_length=10)
    #: Seconds before the same escalation (same alert, or same session and reason) pages again; 0: every time.
    repeat_after: int = Field(900, ge=0, le=7 * 86400)

    @field_validator("info", "warning", "critical")
    @classmethod
    def _check_channels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [v.strip() for v in value]
        if any(not n or len(n) > 100 or not n.replace("_", "").replace("-", "").isalnum() for n in names):
            raise ValueError("name channels (webhook, telegram, email) or notification intents, one word each")
        return list(dict.fromkeys(names))


class ContextSettings(Section):
    """The summary of the node's state that every model prompt and investigation gets."""

    #: Tokens (about 4 characters each) the summary may use.
    token_budget: int = Field(600, ge=100, le=20_000)
    #: Seconds of ``/stats`` history kept in memory for trends.
    history_seconds: int = Field(600, ge=10, le=86_400)
    #: How far back the problem lines of the logs go, in minutes.
    log_window_minutes: int = Field(30, ge=1, le=1440)
    #: Top processes listed.
    processes: int = Field(5, ge=0, le=50)
    #: Recent actions (audit records of intents that change something) listed.
    actions: int = Field(8, ge=0, le=100)
    #: Seconds one summary is reused for the same user and role.
    max_age: float = Field(5.0, ge=0, le=300)


class AgentSettings(Section):
    """The assistant: planning, policy, approvals, escalation."""

    policy_file: ConfigPath | None = None
    approval_ttl: int = Field(900, ge=10, description="seconds")
    #: Below this plan confidence the assistant asks or escalates instead of acting.
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_steps: int = Field(8, ge=1, le=50)
    max_observation_chars: int = Field(4000, ge=200)
    #: The intent that sends escalation notices (it is given a ``message``); ``none``: no notices.
    escalate_via: str | None = "simple_http_notify"
    #: What people call configured things: phrase -> entity name (``"kv store" = "redis"``); the planner
    #: reads "restart the kv store" as ``redis``.
    aliases: dict[str, str] = Field(default_factory=dict)
    #: The investigation of open questions ("why is the site slow?").
    diagnose: DiagnoseSettings = Field(default_factory=DiagnoseSettings)
    #: Escalation notices by severity (``[agent.escalation]``).
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    #: The node's state summarized for model prompts (``[agent.context]``).
    context: ContextSettings = Field(default_factory=ContextSettings)

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for phrase, name in value.items():
            said = " ".join(phrase.lower().split())
            if not said or len(said) > 100 or not name.strip() or len(name) > 256:
                raise ValueError(f"alias {phrase!r} = {name!r}: give a phrase (1-100 characters) and a configured name")
            out[said] = name.strip()
        return out

    @field_validator("escalate_via")
    @classmethod
    def _none_means_off(cls, value: str | None) -> str | None:
        return None if value in (None, "", "none") else value


def agent_settings(settings: Settings) -> AgentSettings:
    """The typed ``[agent]`` section (the node validates it when it loads the assistant module)."""
    return settings.section("agent", AgentSettings)
