"""The alert monitor: turns ``/stats`` and ``/targets`` events, health checks and new log lines into alerts.

All decisions are made on one task (:meth:`Monitor.run`), in the order things happened: the pub/sub
listener only queues events, and a tick every ``[alerts] interval`` seconds checks the rules that
depend on time (windows, durations) and reads the logs. Conditions are kept in memory; the alerts
they raise are in :class:`~cloudisense.modules.alerts_store.AlertBook`. After a restart, a rule whose
alert is still firing starts in the firing state, so it resolves by the same hysteresis.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudisense.modules.alerts_model import AlertsSettings, LogRule, StatRule, TargetRule
from cloudisense.modules.alerts_store import AlertBook, fingerprint
from cloudisense.modules.logfiles import FileFollower

log = logging.getLogger(__name__)

STATS_TOPIC = "/stats"
TARGETS_TOPIC = "/targets"
#: Lines of a log burst kept with its alert (the newest), each cut to this many characters.
SAMPLE_LINES, SAMPLE_CHARS = 5, 300
_UNITS = {"cpu": "%", "memory": "%", "disk": "%", "load": ""}
_DOWN = ("stopped", "crashed")


def stat_value(rule: StatRule, system: dict[str, Any]) -> float | None:
    """The figure ``rule`` watches in a ``/stats`` event's ``system`` block (``None`` when absent)."""
    try:
        if rule.metric == "cpu":
            return float(system["cpu"]["percent"])
        if rule.metric == "memory":
            return float(system["memory"]["percent"])
        if rule.metric == "load":
            return float(system["os"]["average_load"][0])
        for disk in system.get("disk") or []:
            if disk.get("mountpoint") == rule.mount:
                return float(disk["percent"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None


def clip(text: str, limit: int = SAMPLE_CHARS) -> str:
    """Outside text made safe to keep and show: no control characters, at most ``limit`` characters."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass
class _StatState:
    above_since: float | None = None
    #: The same moment as epoch seconds (shown with the alert).
    above_since_epoch: float | None = None
    firing: bool = False


@dataclass
class _TargetHistory:
    state: str = "unknown"
    since: float = field(default_factory=time.monotonic)
    exit_code: int | None = None
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    changes: collections.deque[float] = field(default_factory=collections.deque)
    failed_checks: int = 0


@dataclass
class _LogState:
    rule: LogRule
    follower: FileFollower
    regex: re.Pattern[str]
    hits: collections.deque[float] = field(default_factory=collections.deque)
    sample: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=SAMPLE_LINES))
    firing: bool = False
    total: int = 0


class Monitor:
    """Evaluates the ``[alerts]`` rules and raises or resolves alerts in ``book``."""

    def __init__(self, settings: AlertsSettings, book: AlertBook, targets: Any, log_path: Callable[[str], Path],
                 log_allowed: Callable[[Path], bool], health: Callable[[str | None], Any]) -> None:
        self.settings = settings
        self.book = book
        self.targets = targets  # the targets module, or None
        self._log_path = log_path
        self._log_allowed = log_allowed
        self._health = health
        self._inbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self._wake = asyncio.Event()
        self._stats = {r.name: _StatState() for r in settings.stats}
        self._history: dict[str, _TargetHistory] = {}
        self._logs: list[_LogState] = []
        self._health_due = 0.0

    # -- lifecycle ------------------------------------------------------------

    def target_names(self, rule: TargetRule) -> list[str]:
        """The targets a rule covers."""
        known = sorted(getattr(self.targets, "backends", {}) or {})
        return known if rule.target == "*" else [rule.target] if rule.target in known else []

    def prepare(self) -> None:
        """Seed conditions from what is firing (after a restart) and from the targets' current states."""
        for rule in self.settings.stats:
            if self._fp_stat(rule) in self.book.active:
                self._stats[rule.name].firing = True
        for lrule in self.settings.logs:
            follower = FileFollower(self._log_path(lrule.log), allow=self._log_allowed)
            follower.open(at_end=True)  # lines written before the node started are history, not a burst
            state = _LogState(lrule, follower, re.compile(lrule.pattern))
            if self._fp_log(lrule) in self.book.active:  # still firing from before a restart
                # It resolves after a whole quiet window from now, like a burst that just ended.
                state.firing = True
                state.hits.append(time.monotonic())
            self._logs.append(state)

    def _hist(self, name: str) -> _TargetHistory:
        """What the monitor knows of target ``name``; first from the targets module's last known state
        (a target adopted or left stopped at start publishes no state change)."""
        hist = self._history.get(name)
        if hist is None:
            known = (getattr(self.targets, "states", None) or {}).get(name) or {}
            hist = self._history[name] = _TargetHistory(state=str(known.get("state", "unknown")))
        return hist

    def close(self) -> None:
        """Release the followed files."""
        for state in self._logs:
            state.follower.close()

    def on_event(self, message: dict[str, Any]) -> None:
        """Pub/sub listener: keep what the rules look at, decide later on the monitor's task."""
        topic = message.get("topic")
        # Only what some rule reads, and only this node's own events (federation forwards others').
        wanted = (topic == STATS_TOPIC and self.settings.stats) or (topic == TARGETS_TOPIC and self.settings.targets)
        if wanted and "identity" not in message:
            self._inbox.append(message)
            self._wake.set()

    async def run(self) -> None:
        """Process events as they come and tick every ``interval`` seconds, until cancelled."""
        next_tick = time.monotonic()
        while True:
            while self._inbox:
                await self._guarded(self._handle, self._inbox.popleft())
            if time.monotonic() >= next_tick:
                await self._guarded(self._tick)
                next_tick = time.monotonic() + self.settings.interval
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_tick - time.monotonic()))
            except TimeoutError:
                pass

    async def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad event or unreadable file must not stop the monitor
            log.exception("alert monitor: could not evaluate the rules")

    # -- events -----------------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        if message["topic"] == STATS_TOPIC and isinstance(data.get("system"), dict):
            for rule in self.settings.stats:
                await self._check_stat(rule, data["system"])
        elif message["topic"] == TARGETS_TOPIC and isinstance(data.get("name"), str):
            now = time.monotonic()
            hist = self._hist(data["name"])
            state = str(data.get("state"))
            if state != hist.state:
                hist.changes.append(now)
                hist.state, hist.since = state, now
            hist.exit_code = data.get("exit_code")
            if state == "crashed":
                hist.crashes.append(now)
            if state != "running":
                hist.failed_checks = 0
            await self._check_targets()

    async def _check_stat(self, rule: StatRule, system: dict[str, Any]) -> None:
        value = stat_value(rule, system)
        if value is None:
            return
        st, now = self._stats[rule.name], time.monotonic()
        unit = _UNITS[rule.metric]
        what = "load" if rule.metric == "load" else f"{rule.metric} {rule.mount}" if rule.metric == "disk" \
            else rule.metric.upper() if rule.metric == "cpu" else rule.metric
        if not st.firing:
            if value <= rule.above:
                st.above_since = None
                return
            if st.above_since is None:
                st.above_since, st.above_since_epoch = now, time.time()
            lasted = now - st.above_since
            if lasted < rule.for_seconds:
                return
            st.firing = True
            await self.book.fire(
                self._fp_stat(rule), source="stats", rule=rule.name, severity=rule.severity, subject=rule.metric,
                summary=f"{what} at {value:g}{unit} (above {rule.above:g}{unit} for {lasted:.0f} s)",
                details={"metric": rule.metric, "value": value, "above": rule.above,
                         "clear_below": rule.clear_below, "for_seconds": rule.for_seconds, "unit": unit,
                         "above_since": st.above_since_epoch,
                         **({"mount": rule.mount} if rule.metric == "disk" else {})})
        elif rule.clear_below is not None and value < rule.clear_below:
            st.firing, st.above_since = False, None
            await self.book.resolve(self._fp_stat(rule), f"{what} back at {value:g}{unit} "
                                                         f"(below {rule.clear_below:g}{unit})")

    # -- the tick ---------------------------------------------------------------

    async def _tick(self) -> None:
        await self._check_health()
        await self._check_targets()
        for state in self._logs:
            await self._check_log(state)

    async def _check_health(self) -> None:
        rules = [r for r in self.settings.targets if r.condition == "unhealthy"]
        now = time.monotonic()
        if not rules or now < self._health_due:
            return
        self._health_due = now + self.settings.health_interval
        names = sorted({n for r in rules for n in self.target_names(r)})
        backends = getattr(self.targets, "backends", {})
        checked = [n for n in names if self._hist(n).state == "running" and backends[n].settings.health_url]
        results = await asyncio.gather(*(self._health(backends[n].settings.health_url) for n in checked))
        for name, result in zip(checked, results, strict=True):
            hist = self._hist(name)
            hist.failed_checks = hist.failed_checks + 1 if result == "unhealthy" else 0

    async def _check_targets(self) -> None:
        now = time.monotonic()
        for rule in self.settings.targets:
            for name in self.target_names(rule):
                hist = self._hist(name)
                for window in (hist.crashes, hist.changes):
                    while window and now - window[0] > max(r.window for r in self.settings.targets):
                        window.popleft()
                crashes = sum(1 for t in hist.crashes if now - t <= rule.window)
                changes = sum(1 for t in hist.changes if now - t <= rule.window)
                if rule.condition == "stopped":
                    down = hist.state in _DOWN and now - hist.since >= rule.for_seconds
                    code = f", exit code {hist.exit_code}" if hist.exit_code is not None else ""
                    await self._target_alert(rule, name, down, f"target {name} is {hist.state}{code}",
                                             f"target {name} is {hist.state} again",
                                             {"state": hist.state, "exit_code": hist.exit_code},
                                             clear=hist.state == "running")
                elif rule.condition == "crash_loop":
                    await self._target_alert(rule, name, crashes >= rule.count,
                                             f"target {name} crashed {crashes} times within {rule.window:g} s",
                                             f"no more than {crashes} crash(es) of {name} within {rule.window:g} s",
                                             {"crashes": crashes, "window": rule.window, "state": hist.state})
                elif rule.condition == "flapping":
                    await self._target_alert(rule, name, changes >= rule.count,
                                             f"target {name} changed state {changes} times within {rule.window:g} s",
                                             f"target {name} is steady ({hist.state})",
                                             {"changes": changes, "window": rule.window, "state": hist.state})
                else:
                    await self._target_alert(rule, name, hist.failed_checks >= rule.count,
                                             f"target {name} failed {hist.failed_checks} health checks in a row",
                                             f"target {name} answers its health check again",
                                             {"failed_checks": hist.failed_checks},
                                             clear=hist.failed_checks == 0 and hist.state == "running")

    async def _target_alert(self, rule: TargetRule, name: str, holds: bool, summary: str, cleared: str,
                            details: dict[str, Any], clear: bool | None = None) -> None:
        fp = fingerprint("target", rule.name, name)
        firing = fp in self.book.active
        if holds and not firing:
            await self.book.fire(fp, source="target", rule=rule.name, severity=rule.severity, subject=name,
                                 summary=summary, details={"condition": rule.condition, **details})
        elif firing and (clear if clear is not None else not holds):
            await self.book.resolve(fp, cleared)

    async def _check_log(self, state: _LogState) -> None:
        rule, now = state.rule, time.monotonic()
        lines = await asyncio.to_thread(state.follower.poll)
        search = state.regex.search
        matched = [line for line in lines if search(line, 0, 4096)]  # a huge line is judged by its start
        new = len(matched)
        state.hits.extend([now] * new)
        state.sample.extend(clip(line) for line in matched[-SAMPLE_LINES:])  # only the kept ones are cleaned
        state.total += new
        while state.hits and now - state.hits[0] > rule.window:
            state.hits.popleft()
        fp = self._fp_log(rule)
        details = {"log": rule.log, "pattern": rule.pattern, "window": rule.window, "in_window": len(state.hits),
                   "lines": list(state.sample)}
        summary = f"{len(state.hits)} line(s) matching the error pattern in log {rule.log} within {rule.window:g} s"
        if not state.firing and len(state.hits) >= rule.count:
            state.firing = True
            await self.book.fire(fp, source="log", rule=rule.name, severity=rule.severity, subject=rule.log,
                                 summary=summary, details=details, untrusted=True, occurrences=len(state.hits))
        elif state.firing and new:
            await self.book.fire(fp, source="log", rule=rule.name, severity=rule.severity, subject=rule.log,
                                 summary=summary, details=details, untrusted=True, occurrences=new)
        elif state.firing and not state.hits:
            state.firing = False
            await self.book.resolve(fp, f"no matching line in log {rule.log} for {rule.window:g} s")

    @staticmethod
    def _fp_stat(rule: StatRule) -> str:
        return fingerprint("stats", rule.name, rule.metric)

    @staticmethod
    def _fp_log(rule: LogRule) -> str:
        return fingerprint("log", rule.name, rule.log)
