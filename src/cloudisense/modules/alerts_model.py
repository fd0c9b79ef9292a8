"""Settings of the alert monitor (``[alerts]``) and Alertmanager's webhook payload (version 4).

Rules are lists of tables in the node's config::

    [alerts]
    webhook_token = "..."                 # turns on POST /alerts/alertmanager (no default token)
    prometheus_url = "http://127.0.0.1:9090"   # turns on query_metrics

    [[alerts.stats]]                      # cpu | memory | disk | load
    name = "high-cpu"
    metric = "cpu"
    above = 90                            # fires above this ...
    clear_below = 80                      # ... resolves below this (hysteresis)
    for_seconds = 60                      # ... once it stayed above this long

    [[alerts.targets]]                    # stopped | crash_loop | flapping | unhealthy
    name = "web-down"
    target = "web"                        # or "*": every configured target
    condition = "stopped"

    [[alerts.logs]]                       # error bursts
    name = "app-errors"
    log = "app"
    pattern = "ERROR|CRITICAL"
    count = 5
    window = 60
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from cloudisense.config import Section

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
RULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
#: What an error line is, when a log rule names no pattern.
DEFAULT_ERROR_PATTERN = r"\b(ERROR|CRITICAL|FATAL)\b"
# A quantified group holding a quantifier, e.g. (a+)+: patterns run on every new log line, so no blow-ups.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{?]")


class StatRule(Section):
    """A threshold on one node figure, with hysteresis and a minimum duration."""

    name: str = Field(pattern=RULE_NAME, description="the rule's name (part of the alert's identity)")
    metric: Literal["cpu", "memory", "disk", "load"] = Field(
        description="cpu, memory and disk are percent used; load is the 1-minute load average")
    above: float = Field(description="fires when the figure is above this")
    clear_below: float | None = Field(
        None, description="resolves when the figure falls below this (default: 90 % of `above`)")
    for_seconds: float = Field(0.0, ge=0, le=86400, description="the figure must stay above this long first")
    mount: str = Field("/", min_length=1, max_length=4096, description="for disk: the mount point")
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _hysteresis(self) -> StatRule:
        if self.clear_below is None:
            self.clear_below = round(self.above * 0.9, 3)
        if self.clear_below > self.above:
            raise ValueError(f"clear_below ({self.clear_below}) must not be above `above` ({self.above})")
        return self


class TargetRule(Section):
    """A condition on a managed service's state."""

    name: str = Field(pattern=RULE_NAME)
    target: str = Field(min_length=1, max_length=128, description='a configured target, or "*" for every one')
    condition: Literal["stopped", "crash_loop", "flapping", "unhealthy"] = Field(
        description="stopped: not running; crash_loop: `count` crashes within `window`; flapping: `count` state "
                    "changes within `window`; unhealthy: `count` failed health checks in a row")
    count: int = Field(3, ge=1, le=1000)
    window: float = Field(300.0, gt=0, le=7 * 86400, description="seconds, for crash_loop and flapping")
    for_seconds: float = Field(0.0, ge=0, le=86400, description="stopped: for at least this long")
    severity: Severity = "critical"


class LogRule(Section):
    """A burst of matching lines in a configured log."""

    name: str = Field(pattern=RULE_NAME)
    log: str = Field(min_length=1, max_length=128, description="a log configured in [logs.files]")
    pattern: str = Field(DEFAULT_ERROR_PATTERN, min_length=1, max_length=512,
                         description="a regular expression an error line contains")
    count: int = Field(5, ge=1, le=1_000_000, description="fires at this many matching lines within `window`")
    window: float = Field(60.0, gt=0, le=86400, description="seconds; resolves after a whole window without one")
    severity: Severity = "warning"

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if _NESTED_QUANTIFIER.search(value):
            raise ValueError("nested quantifiers such as (a+)+ are refused (they can take forever on a long line)")
        return value


class AlertsSettings(Section):
    """The alert monitor: rules, the Alertmanager receiver and the Prometheus read intent."""

    interval: float = Field(1.0, gt=0, le=60, description="seconds between checks of target and log rules")
    health_interval: float = Field(10.0, gt=0, le=3600, description="seconds between health checks (unhealthy)")
    reopen_window: float = Field(
        300.0, ge=0, le=7 * 86400,
        description="an alert that fires again this soon after it resolved is reopened (its count grows) "
                    "instead of becoming a new alert")
    keep_days: int = Field(30, ge=1, le=3650, description="resolved alerts older than this are deleted at start")
    notify: bool = Field(True, description="also post a text_notification on /notification when an alert "
                                           "fires or resolves (not while it is silenced)")
    webhook_token: SecretStr | None = Field(
        None, description="bearer token Alertmanager must send to POST /alerts/alertmanager; "
                          "the receiver refuses every call while none is set")
    prometheus_url: str | None = Field(None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
                                       description="a Prometheus server's base URL: turns on query_metrics")
    prometheus_timeout: float = Field(5.0, gt=0, le=60)
    stats: list[StatRule] = Field(default_factory=list)
    targets: list[TargetRule] = Field(default_factory=list)
    logs: list[LogRule] = Field(default_factory=list)

    @field_validator("webhook_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @model_validator(mode="after")
    def _unique(self) -> AlertsSettings:
        names = [*(r.name for r in self.stats), *(r.name for r in self.targets), *(r.name for r in self.logs)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique: {', '.join(repeated)} is used more than once")
        return self


# -- Alertmanager's webhook (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) --

_LabelMap = dict[str, str]


class _Lenient(BaseModel):
    # Alertmanager may add fields in later versions: keep what we know, check it strictly.
    model_config = ConfigDict(extra="ignore")


class AmAlert(_Lenient):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: _LabelMap = Field(max_length=64)
    annotations: _LabelMap = Field(default_factory=dict, max_length=64)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = Field("", max_length=4096)
    fingerprint: str = Field("", max_length=64)

    @field_validator("labels", "annotations")
    @classmethod
    def _sizes(cls, value: _LabelMap) -> _LabelMap:
        for key, text in value.items():
            if len(key) > 256 or len(text) > 4096:
                raise ValueError("a label or annotation is longer than 256 (name) or 4096 (value) characters")
        return value


class AmWebhook(_Lenient):
    """A notification: Alertmanager's webhook payload, version 4."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = Field(max_length=256)
    groupKey: str = Field(max_length=4096)
    truncatedAlerts: int = Field(0, ge=0)
    groupLabels: _LabelMap = Field(default_factory=dict)
    commonLabels: _LabelMap = Field(default_factory=dict)
    commonAnnotations: _LabelMap = Field(default_factory=dict)
    externalURL: str = Field("", max_length=4096)
    alerts: list[AmAlert] = Field(min_length=1, max_length=1000)
