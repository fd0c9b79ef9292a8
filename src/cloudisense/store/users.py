"""Users and roles, stored with argon2 hashes of the client's credential.

The existing client never sends the plain password: it sends the lowercase hex
SHA-256 of it. That hex string is the credential, and only its argon2 hash is
stored. Tools that take a plain password (the CLI) hash it the same way first.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloudisense.core.errors import BadRequest, Conflict, NotFound
from cloudisense.core.roles import Role
from cloudisense.store.db import Database

MIGRATIONS = [
    """
    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
    # Tokens issued before this second are refused: a password change ends old sessions.
    "ALTER TABLE users ADD COLUMN credentials_changed INTEGER NOT NULL DEFAULT 0;",
]

_HASHER = PasswordHasher()
# Verifying an unknown user still costs one argon2 check, so timing does not reveal which users exist.
_DUMMY_HASH = _HASHER.hash("not-a-real-credential")




def client_credential(plain_password: str) -> str:
    """The credential the existing client sends: lowercase hex SHA-256 of the password."""
    return hashlib.sha256(plain_password.encode("utf-8")).hexdigest()


def generate_password() -> str:
    """A random password for a first admin (printed once, never stored in clear)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class User:
    """A user record without its hash."""

    username: str
    role: Role
    created: float
    #: Epoch second of the last password change (0: never); older tokens are refused.
    credentials_changed: int = 0


def validate_username(username: str) -> str:
    """Usernames: 1-64 characters of letters, digits, ``._-@``."""
    if not (1 <= len(username) <= 64) or not all(c.isalnum() or c in "._-@" for c in username):
        raise BadRequest("username must be 1-64 characters of letters, digits and ._-@")
    return username


class UserStore:
    """CRUD and credential checks over the ``users`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self) -> None:
        """Create the table if needed."""
        await self._db.migrate("users", MIGRATIONS)

    async def count(self) -> int:
        """How many users exist."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM users")
        return int(row[0]) if row else 0

    async def add(self, username: str, credential: str, role: Role) -> User:
        """Create a user; ``credential`` is the SHA-256 hex form (see :func:`client_credential`)."""
        validate_username(username)
        if await self.get(username) is not None:
            raise Conflict(f"user {username!r} already exists")
        created = time.time()
        await self._db.execute(
            "INSERT INTO users (username, password_hash, role, created) VALUES (?, ?, ?, ?)",
            (username, _HASHER.hash(credential), Role(role).value, created),
        )
        return User(username, Role(role), created)

    async def set_password(self, username: str, credential: str) -> None:
        """Replace a user's credential."""
        if await self.get(username) is None:
            raise NotFound(f"no user {username!r}")
        await self._db.execute(
            "UPDATE users SET password_hash = ?, credentials_changed = ? WHERE username = ?",
            (_HASHER.hash(credential), int(time.time()), username),
        )

    async def get(self, username: str) -> User | None:
        """The user, or ``None``."""
        row = await self._db.fetchone(
            "SELECT username, role, created, credentials_changed FROM users WHERE username = ?", (username,))
        return User(row["username"], Role(row["role"]), row["created"], row["credentials_changed"]) if row else None

    async def list(self) -> list[User]:
        """All users by name."""
        rows = await self._db.fetchall("SELECT username, role, created FROM users ORDER BY username")
        return [User(r["username"], Role(r["role"]), r["created"]) for r in rows]

    async def verify(self, username: str, credential: str) -> User | None:
        """The user if ``credential`` matches, else ``None`` (constant work either way)."""
        row = await self._db.fetchone(
            "SELECT username, role, created, password_hash FROM users WHERE username = ?", (username,)
        )
        stored = row["password_hash"] if row else _DUMMY_HASH
        try:
            _HASHER.verify(stored, credential)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        return User(row["username"], Role(row["role"]), row["created"])
