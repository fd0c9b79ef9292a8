"""Settings of the assistant module, section ``[agent]``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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


#: A user name the agent acts as (audit rows, approvals): letters, digits and ``_.-``.
AGENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class RunbookMatch(Section):
    """Which alerts a runbook is for: globs on the alert's fields (every one that is set must match)."""

    source: str | None = Field(None, max_length=64, description="stats, target, log or alertmanager")
    rule: str | None = Field(None, max_length=128, description="the alert rule's name, e.g. service-*")
    subject: str | None = Field(None, max_length=128, description="what the alert is about: a target, a log, a metric")
    severity: str | None = Field(None, max_length=16)

    @model_validator(mode="after")
    def _something(self) -> RunbookMatch:
        if not any((self.source, self.rule, self.subject, self.severity)):
            raise ValueError("a runbook's `when` needs at least one of source, rule, subject, severity")
        return self


class RunbookStep(Section):
    """One step: an intent and its params; string params may name the alert's fields as ``{subject}``,
    ``{rule}``, ``{id}``, ``{severity}``, ``{source}`` or ``{labels.<name>}`` (Alertmanager's labels)."""

    intent: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class RunbookCheck(Section):
    """How the agent checks that a fix worked."""

    check: Literal["target_running", "target_healthy", "metric_below"] = Field(
        description="target_running: the target runs (and stays up for `settle` seconds); target_healthy: it "
                    "also answers its health URL; metric_below: a figure of get_system_stats is below `below`")
    target: str = Field("{subject}", max_length=128, description="for target checks (templated like step params)")
    metric: Literal["cpu", "memory", "disk", "load"] | None = Field(
        None, description="for metric_below (default: the alert's metric)")
    below: float | None = Field(None, description="for metric_below (default: the alert's clear_below)")
    within: float = Field(30.0, gt=0, le=3600, description="seconds the check may take to pass")
    settle: float = Field(3.0, ge=0, le=600, description="seconds it must keep passing (a target that crashes "
                                                         "again at once fails)")


class Runbook(Section):
    """A fix for a kind of alert, declared in configuration: no model needed."""

    name: str = Field(pattern=AGENT_NAME)
    when: RunbookMatch
    steps: list[RunbookStep] = Field(min_length=1, max_length=10)
    verify: RunbookCheck | None = None


class AutonomySettings(Section):
    """The node's agent: who it acts as, whether it acts on alerts on its own, and its hard limits."""

    #: The user name the agent's actions carry (audit rows, approvals; only admins decide its approvals).
    name: str = Field("agent", pattern=AGENT_NAME)
    #: The role it acts with (roles and the policy apply to it like to anyone).
    role: Literal["viewer", "operator", "admin"] = "operator"
    #: off: alerts are not investigated; suggest: investigate and propose each fix as an approval;
    #: autonomous: run the fixes the policy allows, ask for the rest. ``set_autonomy`` overrides it
    #: (kept across restarts).
    mode: Literal["off", "suggest", "autonomous"] = "suggest"
    #: At most this many fixes the agent runs on its own within `window_minutes`; then it escalates.
    max_actions: int = Field(5, ge=0, le=1000)
    #: At most this many of them on one subject (a flapping target is not restarted forever).
    max_per_target: int = Field(2, ge=0, le=1000)
    window_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)
    #: An investigation's fix below this confidence is escalated instead of run on its own.
    min_confidence: Literal["low", "medium", "high"] = "medium"
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
    #: The agent that answers alerts (``[agent.autonomy]``).
    autonomy: AutonomySettings = Field(default_factory=AutonomySettings)
    #: Fixes per kind of alert (``[[agent.runbooks]]``), first match wins; other alerts are investigated.
    runbooks: list[Runbook] = Field(default_factory=list, max_length=100)
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
