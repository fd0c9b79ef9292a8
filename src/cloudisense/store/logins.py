"""Admin unlocks of the login limiter, kept in the database so the CLI can reach a running node.

``cloudisense user unlock NAME`` works on the database directly (like the other ``user``
commands); the running node reads the time of the user's last unlock at each login attempt
and forgives the failures counted before it (see :class:`cloudisense.core.auth.LoginLimiter`).
"""

from __future__ import annotations

import time

from cloudisense.store.db import Database

MIGRATIONS = [
    """
    CREATE TABLE login_unlocks (
        username TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    """
]


class LoginUnlocks:
    """When each user was last unlocked by an admin."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> None:
        """Create the table if needed."""
        await self._db.migrate("logins", MIGRATIONS)

    async def unlock(self, username: str) -> float:
        """Forgive ``username``'s failed logins so far (every address); returns the unlock time."""
        now = time.time()
        await self._db.execute("INSERT INTO login_unlocks (username, at) VALUES (?, ?)"
                               " ON CONFLICT(username) DO UPDATE SET at = excluded.at", (username, now))
        return now

    async def unlocked_at(self, username: str) -> float:
        """Epoch seconds of the user's last unlock (0 if never)."""
        row = await self._db.fetchone("SELECT at FROM login_unlocks WHERE username = ?", (username,))
        return float(row["at"]) if row else 0.0
