"""Alerts in the node's SQLite database, deduplicated by fingerprint, and their events.

One row per alert. While a condition holds, every new observation of it adds to the same row's
``count`` (one alert per condition, not one per log line or per notification). A condition that
clears resolves its alert; one that comes back within ``reopen_window`` reopens it (count + 1,
acknowledgement cleared) instead of starting a new row. A silence belongs to the fingerprint: it
also covers the condition's next alert while it lasts.

Events on ``/alerts`` are ``data_generated`` with ``meta.event`` one of ``alert_firing``,
``alert_updated``, ``alert_resolved``, ``alert_acknowledged``, ``alert_silenced``; the data is the
alert (:meth:`Alert.to_wire`). While an alert is silenced only acknowledge/silence events are sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cloudisense.core.errors import NotFound
from cloudisense.core.pubsub import DATA_EVENT, NOTICE_SUCCESS, NOTICE_WARNING, TEXT_NOTIFICATION, PubSub
from cloudisense.store.db import Database

ALERTS_TOPIC = "/alerts"
NOTIFICATION_TOPIC = "/notification"

_MIGRATIONS = [
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        fingerprint TEXT NOT NULL,
        source TEXT NOT NULL,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        subject TEXT NOT NULL,
        summary TEXT NOT NULL,
        details TEXT NOT NULL,
        state TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        resolved_at REAL,
        acked_by TEXT,
        acked_at REAL,
        ack_note TEXT,
        silenced_until REAL,
        silence_reason TEXT,
        untrusted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alerts_fingerprint ON alerts (fingerprint, id);
    CREATE INDEX alerts_state ON alerts (state, last_seen);
    """,
]

_COLUMNS = ("id", "fingerprint", "source", "rule", "severity", "subject", "summary", "details", "state", "count",
            "first_seen", "last_seen", "resolved_at", "acked_by", "acked_at", "ack_note", "silenced_until",
            "silence_reason", "untrusted")


def fingerprint(*parts: str) -> str:
    """The identity of a condition: the same source, rule and subject give the same fingerprint."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass
class Alert:
    """One alert (a row of ``alerts``)."""

    fingerprint: str
    source: str
    rule: str
    severity: str
    subject: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    state: str = "firing"
    count: int = 1
    first_seen: float = 0.0
    last_seen: float = 0.0
    resolved_at: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    ack_note: str | None = None
    silenced_until: float | None = None
    silence_reason: str | None = None
    #: Whether details hold text from outside (log lines, Alertmanager labels): data, never instructions.
    untrusted: bool = False
    id: int = 0

    def silenced(self, now: float | None = None) -> bool:
        """Whether a silence covers this alert now."""
        return self.silenced_until is not None and self.silenced_until > (time.time() if now is None else now)

    def to_wire(self) -> dict[str, Any]:
        """The alert as intents answer it and events carry it (times in epoch seconds)."""
        out = asdict(self)
        out["acknowledged"] = self.acked_by is not None
        out["silenced"] = self.silenced()
        return out

    @classmethod
    def from_row(cls, row: Any) -> Alert:
        """An alert from a database row."""
        values = dict(zip(_COLUMNS, tuple(row), strict=True))
        values["details"] = json.loads(values["details"])
        values["untrusted"] = bool(values["untrusted"])
        return cls(**values)


class AlertBook:
    """The alerts of one node: the firing ones in memory (by fingerprint), all of them in SQLite."""

    def __init__(self, db: Database, pubsub: PubSub, reopen_window: float, notify: bool) -> None:
        self.db = db
        self.pubsub = pubsub
        self.reopen_window = reopen_window
        self.notify = notify
        self.active: dict[str, Alert] = {}
        # One change at a time: an observation and an acknowledgement of the same alert never interleave.
        self._lock = asyncio.Lock()

    async def start(self, keep_days: int) -> None:
        """Create the table, forget resolved alerts older than ``keep_days``, load the firing ones."""
        await self.db.migrate("alerts", _MIGRATIONS)
        await self.db.execute("DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?",
                              (time.time() - keep_days * 86400,))
        rows = await self.db.fetchall(f"SELECT {', '.join(_COLUMNS)} FROM alerts WHERE state = 'firing'")
        self.active = {a.fingerprint: a for a in map(Alert.from_row, rows)}

    # -- changes -----------------------------------------------------------

    async def fire(self, fp: str, *, source: str, rule: str, severity: str, subject: str, summary: str,
                   details: dict[str, Any], untrusted: bool = False, occurrences: int = 1) -> Alert:
        """Record that the condition ``fp`` holds; ``occurrences`` new observations of it."""
        async with self._lock:
            now = time.time()
            alert = self.active.get(fp)
            if alert is not None:
                alert.count += occurrences
                alert.last_seen, alert.summary, alert.details, alert.severity = now, summary, details, severity
                await self._save(alert)
                self._publish(alert, "alert_updated")
                return alert
            last = await self._latest(fp)
            if last is not None and last.resolved_at is not None and now - last.resolved_at <= self.reopen_window:
                alert = last
                alert.state, alert.resolved_at, alert.count = "firing", None, alert.count + occurrences
                alert.acked_by = alert.acked_at = alert.ack_note = None  # it came back: look again
                alert.last_seen, alert.summary, alert.details, alert.severity = now, summary, details, severity
                await self._save(alert)
            else:
                alert = Alert(fp, source, rule, severity, subject, summary, details, "firing", occurrences, now, now,
                              untrusted=untrusted)
                if last is not None and last.silenced(now):
                    alert.silenced_until, alert.silence_reason = last.silenced_until, last.silence_reason
                alert.id = await self._insert(alert)
            self.active[fp] = alert
            self._publish(alert, "alert_firing")
            return alert

    async def resolve(self, fp: str, note: str | None = None) -> Alert | None:
        """The condition ``fp`` cleared: resolve its firing alert (``None`` when none fires)."""
        async with self._lock:
            alert = self.active.pop(fp, None)
            if alert is None:
                return None
            alert.state, alert.resolved_at = "resolved", time.time()
            if note:
                alert.details = {**alert.details, "resolution": note}
            await self._save(alert)
            self._publish(alert, "alert_resolved")
            return alert

    async def acknowledge(self, alert_id: int, user: str, note: str | None) -> Alert:
        """Someone has seen the alert and is on it."""
        async with self._lock:
            alert = await self._get(alert_id)
            alert.acked_by, alert.acked_at, alert.ack_note = user, time.time(), note
            await self._save(alert)
            self._publish(alert, "alert_acknowledged", always=True)
            return alert

    async def silence(self, alert_id: int, seconds: float, reason: str | None) -> Alert:
        """Mute the alert's events for ``seconds`` (0 lifts the silence)."""
        async with self._lock:
            alert = await self._get(alert_id)
            alert.silenced_until = time.time() + seconds if seconds > 0 else None
            alert.silence_reason = reason if seconds > 0 else None
            await self._save(alert)
            self._publish(alert, "alert_silenced", always=True)
            return alert

    # -- reading -----------------------------------------------------------

    async def get(self, alert_id: int) -> Alert:
        """One alert by id (:class:`NotFound` otherwise)."""
        return await self._get(alert_id)

    async def query(self, *, state: str | None, severity: str | None, source: str | None,
                    acknowledged: bool | None, limit: int) -> tuple[list[Alert], int]:
        """Alerts matching the filters, newest first, and how many match in all."""
        where, args = [], []
        for column, value in (("state", state), ("severity", severity), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if acknowledged is not None:
            where.append("acked_by IS NOT NULL" if acknowledged else "acked_by IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = await self.db.fetchone(f"SELECT COUNT(*) FROM alerts{clause}", args)
        rows = await self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM alerts{clause} ORDER BY last_seen DESC, id DESC LIMIT ?",
            [*args, limit])
        return [self._fresh(Alert.from_row(r)) for r in rows], int(total[0]) if total else 0

    def firing_by_severity(self) -> dict[str, int]:
        """How many alerts fire, per severity (for ``/metrics``)."""
        counts: dict[str, int] = {}
        for alert in self.active.values():
            counts[alert.severity] = counts.get(alert.severity, 0) + 1
        return counts

    # -- internals ---------------------------------------------------------

    def _fresh(self, alert: Alert) -> Alert:
        # The firing ones in memory are the truth (a count may be newer than the row read a moment ago).
        live = self.active.get(alert.fingerprint)
        return live if live is not None and live.id == alert.id else alert

    async def _get(self, alert_id: int) -> Alert:
        for alert in self.active.values():
            if alert.id == alert_id:
                return alert
        row = await self.db.fetchone(f"SELECT {', '.join(_COLUMNS)} FROM alerts WHERE id = ?", (alert_id,))
        if row is None:
            raise NotFound(f"no alert {alert_id}; list_alerts shows the alerts and their ids")
        return Alert.from_row(row)

    async def _latest(self, fp: str) -> Alert | None:
        row = await self.db.fetchone(
            f"SELECT {', '.join(_COLUMNS)} FROM alerts WHERE fingerprint = ? ORDER BY id DESC LIMIT 1", (fp,))
        return Alert.from_row(row) if row is not None else None

    def _values(self, alert: Alert) -> list[Any]:
        return [alert.fingerprint, alert.source, alert.rule, alert.severity, alert.subject, alert.summary,
                json.dumps(alert.details, default=str), alert.state, alert.count, alert.first_seen, alert.last_seen,
                alert.resolved_at, alert.acked_by, alert.acked_at, alert.ack_note, alert.silenced_until,
                alert.silence_reason, int(alert.untrusted)]

    async def _insert(self, alert: Alert) -> int:
        cols = _COLUMNS[1:]
        return await self.db.execute(
            f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", self._values(alert))

    async def _save(self, alert: Alert) -> None:
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
        await self.db.execute(f"UPDATE alerts SET {sets} WHERE id = ?", [*self._values(alert), alert.id])

    def _publish(self, alert: Alert, kind: str, always: bool = False) -> None:
        if alert.silenced() and not always:
            return
        wire = alert.to_wire()
        self.pubsub.publish(ALERTS_TOPIC, DATA_EVENT, wire, kind=kind)
        if self.notify and kind in ("alert_firing", "alert_resolved"):
            firing = kind == "alert_firing"
            word = "firing" if firing else "resolved"
            self.pubsub.publish(NOTIFICATION_TOPIC, TEXT_NOTIFICATION, {
                "message": f"alert {alert.id} {word} ({alert.severity}): {alert.summary}",
                "code": NOTICE_WARNING if firing else NOTICE_SUCCESS, "data": {"alert": wire}}, kind=kind)
