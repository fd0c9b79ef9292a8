"""A small third-party module used only by the tests: database backups and TLS certificates.

It is never imported by ``cloudisense``: the tests install it through the ``cloudisense.modules``
entry point (see ``tests/plugin/conftest.py``), exactly as a module author's package would be, and
the planner evaluation (``eval/planner/plugin``) measures the offline planner on intents it has
never seen. Its state is kept in memory (a catalogue of backups and certificates seeded at start),
so every handler returns real, changing results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from cloudisense.core.errors import NotFound
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module

#: Databases and domains this node backs up / serves (a real module would read them from its config).
DATABASES = ("orders", "billing-db", "users-db")
DOMAINS = ("api.example.com", "www.example.com", "shop.example.org")
HOUR = 3600.0
DAY = 24 * HOUR

_BACKUP_ID = r"^b-\d{1,9}$"


class DatabaseFilter(Params):
    database: str | None = Field(None, max_length=64, description="only the backups of this database")
    limit: int = Field(10, ge=1, le=100, description="how many backups to list, newest first")


class DatabaseParams(Params):
    database: str = Field(min_length=1, max_length=64, description="the database, e.g. orders")


class StartBackupParams(Params):
    database: str = Field(min_length=1, max_length=64, description="the database to back up")
    full: bool = Field(False, description="take a full backup instead of an incremental one")


class RestoreParams(Params):
    database: str = Field(min_length=1, max_length=64, description="the database to restore into")
    backup_id: str = Field(pattern=_BACKUP_ID, description="the backup's id, e.g. b-42")
    force: bool = Field(False, description="force the restore even when the database has newer writes")


class BackupIdParams(Params):
    backup_id: str = Field(pattern=_BACKUP_ID, description="the backup's id, e.g. b-42")


class PruneParams(Params):
    database: str = Field(min_length=1, max_length=64, description="the database whose old backups go")
    older_than_days: int = Field(ge=1, le=3650, description="delete the backups older than this many days")


class ScheduleParams(Params):
    database: str = Field(min_length=1, max_length=64, description="the database to back up automatically")
    interval_minutes: int = Field(ge=5, le=100_000, description="minutes between two automatic backups")


class DomainParams(Params):
    domain: str = Field(min_length=3, max_length=253, description="the certificate's domain, e.g. api.example.com")


class RenewParams(Params):
    domain: str = Field(min_length=3, max_length=253, description="the certificate's domain")
    dry_run: bool = Field(False, description="only test that renewal would work (dry-run), change nothing")


class BackupStatusResult(BaseModel):
    """What ``backup_status`` returns."""

    database: str
    backup_id: str = Field(description="id of the last backup")
    finished_at: str = Field(description="when the last backup finished (UTC)")
    ok: bool = Field(description="whether the last backup succeeded")
    age_hours: float = Field(description="hours since the last backup finished")
    size_bytes: int


class CertResult(BaseModel):
    """What ``cert_expiry`` returns."""

    domain: str
    expires_at: str = Field(description="when the certificate expires (UTC)")
    days_left: int = Field(description="days until the certificate expires")
    issuer: str


@dataclass
class Backup:
    id: str
    database: str
    finished: float
    ok: bool
    size: int
    full: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "database": self.database, "finished_at": _iso(self.finished), "ok": self.ok,
                "size_bytes": self.size, "full": self.full}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


class BackupsModule(Module):
    """Backups of the node's databases and its TLS certificates (in memory)."""

    name = "backups"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        now = time.time()
        self.backups: list[Backup] = []
        for i, (db, age, ok) in enumerate([("orders", 50, True), ("billing-db", 30, True), ("users-db", 26, True),
                                           ("orders", 26, False), ("billing-db", 6, False), ("users-db", 2, True)]):
            self.backups.append(Backup(f"b-{40 + i}", db, now - age * HOUR, ok, 10_000_000 * (i + 1)))
        self.certs = {"api.example.com": now + 12 * DAY, "www.example.com": now + 70 * DAY,
                      "shop.example.org": now + 3 * DAY}
        self.schedules: dict[str, int] = {}

    def entities(self) -> dict[str, list[str]]:
        return {"database": list(DATABASES), "domain": list(DOMAINS)}

    def intents(self) -> list[Intent]:
        db = {"database": "database"}
        dom = {"domain": "domain"}
        return [
            Intent("list_backups", "Recent backups of the databases, newest first: id, database, time, size, result",
                   self.list_backups, DatabaseFilter, Risk.READ,
                   ("list the backups", "show recent backups of orders", "which backups do we have"),
                   entities=db, say=_say_backups),
            Intent("backup_status", "When the last backup of one database ran, whether it succeeded, its size and id",
                   self.backup_status, DatabaseParams, Risk.READ,
                   ("when did the last backup of orders run", "did the billing-db backup succeed",
                    "status of the users-db backup"), entities=db, result=BackupStatusResult, say=_say_status),
            Intent("start_backup", "Start a new backup of one database now",
                   self.start_backup, StartBackupParams, Risk.WRITE,
                   ("back up orders", "start a backup of billing-db", "take a full backup of users-db"),
                   entities=db),
            Intent("restore_backup", "Restore a database from one of its backups (overwrites the database)",
                   self.restore_backup, RestoreParams, Risk.DESTRUCTIVE,
                   ("restore orders from backup b-12", "roll billing-db back to b-7"), entities=db),
            Intent("delete_backup", "Delete one backup by id", self.delete_backup, BackupIdParams, Risk.DESTRUCTIVE,
                   ("delete backup b-3", "remove the backup b-9")),
            Intent("prune_backups", "Delete the backups of a database that are older than some number of days",
                   self.prune_backups, PruneParams, Risk.DESTRUCTIVE,
                   ("prune orders backups older than 30 days", "clean up old backups of billing-db"), entities=db),
            Intent("schedule_backups", "Set how often a database is backed up automatically",
                   self.schedule_backups, ScheduleParams, Risk.WRITE,
                   ("back up orders every 6 hours", "schedule billing-db backups every 30 minutes"), entities=db),
            Intent("list_certs", "Every TLS certificate of the node with its domain and expiry date",
                   self.list_certs, NoParams, Risk.READ, ("list the certificates", "which certs do we have")),
            Intent("cert_expiry", "When the TLS certificate of one domain expires and how many days are left",
                   self.cert_expiry, DomainParams, Risk.READ,
                   ("when does the cert for www.example.com expire", "how long is the api.example.com certificate valid"),
                   entities=dom, result=CertResult, say=_say_cert),
            Intent("renew_cert", "Renew the TLS certificate of one domain",
                   self.renew_cert, RenewParams, Risk.WRITE,
                   ("renew the certificate of api.example.com", "renew the www.example.com cert"), entities=dom),
        ]

    def _db(self, name: str) -> str:
        if name not in DATABASES:
            raise NotFound(f"no database named {name!r}; known: {', '.join(DATABASES)}")
        return name

    def _domain(self, name: str) -> str:
        if name not in self.certs:
            raise NotFound(f"no certificate for {name!r}; known: {', '.join(self.certs)}")
        return name

    async def list_backups(self, p: DatabaseFilter, ctx: Any) -> dict[str, Any]:
        rows = [b for b in reversed(self.backups) if p.database is None or b.database == self._db(p.database)]
        return {"backups": [b.as_dict() for b in rows[: p.limit]]}

    async def backup_status(self, p: DatabaseParams, ctx: Any) -> dict[str, Any]:
        last = next((b for b in reversed(self.backups) if b.database == self._db(p.database)), None)
        if last is None:
            raise NotFound(f"{p.database} has no backups yet")
        return BackupStatusResult(database=last.database, backup_id=last.id, finished_at=_iso(last.finished),
                                  ok=last.ok, age_hours=round((time.time() - last.finished) / HOUR, 1),
                                  size_bytes=last.size).model_dump()

    async def start_backup(self, p: StartBackupParams, ctx: Any) -> dict[str, Any]:
        backup = Backup(f"b-{40 + len(self.backups)}", self._db(p.database), time.time(), True, 5_000_000, p.full)
        self.backups.append(backup)
        return {"backup_id": backup.id, "database": backup.database, "full": p.full}

    def _backup(self, backup_id: str) -> Backup:
        found = next((b for b in self.backups if b.id == backup_id), None)
        if found is None:
            raise NotFound(f"no backup {backup_id}; list_backups shows the ids")
        return found

    async def restore_backup(self, p: RestoreParams, ctx: Any) -> dict[str, Any]:
        backup = self._backup(p.backup_id)
        if backup.database != self._db(p.database):
            raise NotFound(f"backup {p.backup_id} is of {backup.database}, not {p.database}")
        return {"database": p.database, "backup_id": p.backup_id, "restored": True}

    async def delete_backup(self, p: BackupIdParams, ctx: Any) -> dict[str, Any]:
        self.backups.remove(self._backup(p.backup_id))
        return {"deleted": p.backup_id}

    async def prune_backups(self, p: PruneParams, ctx: Any) -> dict[str, Any]:
        cutoff = time.time() - p.older_than_days * DAY
        gone = [b.id for b in self.backups if b.database == self._db(p.database) and b.finished < cutoff]
        self.backups = [b for b in self.backups if b.id not in gone]
        return {"deleted": gone}

    async def schedule_backups(self, p: ScheduleParams, ctx: Any) -> dict[str, Any]:
        self.schedules[self._db(p.database)] = p.interval_minutes
        return {"database": p.database, "interval_minutes": p.interval_minutes}

    async def list_certs(self, p: NoParams, ctx: Any) -> dict[str, Any]:
        now = time.time()
        return {"certs": [{"domain": d, "expires_at": _iso(t), "days_left": int((t - now) // DAY)}
                          for d, t in sorted(self.certs.items())]}

    async def cert_expiry(self, p: DomainParams, ctx: Any) -> dict[str, Any]:
        expires = self.certs[self._domain(p.domain)]
        return CertResult(domain=p.domain, expires_at=_iso(expires), days_left=int((expires - time.time()) // DAY),
                          issuer="Test CA").model_dump()

    async def renew_cert(self, p: RenewParams, ctx: Any) -> dict[str, Any]:
        self._domain(p.domain)
        if not p.dry_run:
            self.certs[p.domain] = time.time() + 90 * DAY
        return {"domain": p.domain, "renewed": not p.dry_run, "dry_run": p.dry_run,
                "expires_at": _iso(self.certs[p.domain])}


def _say_status(params: Any, data: dict[str, Any]) -> str:
    result = "succeeded" if data["ok"] else "FAILED"
    return (f"the last backup of {data['database']} ({data['backup_id']}) finished {data['finished_at']}, "
            f"{data['age_hours']} hours ago, and {result}")


def _say_cert(params: Any, data: dict[str, Any]) -> str:
    return f"the certificate of {data['domain']} expires {data['expires_at']} ({data['days_left']} days left)"


def _say_backups(params: Any, data: dict[str, Any]) -> str:
    rows = data.get("backups") or []
    if not rows:
        return "no backups found"
    lines = [f"  {b['id']}  {b['database']:<10}  {b['finished_at']}  {'ok' if b['ok'] else 'FAILED'}" for b in rows]
    return f"{len(rows)} backup(s), newest first:\n" + "\n".join(lines)


__all__ = ["BackupsModule", "DATABASES", "DOMAINS", "BaseModel"]
