"""JWT access/refresh tokens and login rate limiting (no I/O)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt

from cloudisense.core.errors import TooManyRequests, Unauthorized
from cloudisense.core.roles import Role

ALGORITHM = "HS256"
TokenKind = Literal["access", "refresh"]


def load_or_create_secret(data_dir: Path) -> str:
    """The JWT signing secret kept in ``data_dir/jwt.secret`` (created 0600 on first use)."""
    path = data_dir / "jwt.secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = path.open("x", encoding="utf-8")
    path.chmod(0o600)
    with fd:
        fd.write(secret)
    return secret


@dataclass(frozen=True)
class Claims:
    """What a valid token says."""

    username: str
    role: Role
    kind: TokenKind
    issued_ms: int
    expires_ms: int


class TokenService:
    """Issues and checks signed JWTs."""

    def __init__(self, secret: str, access_ttl: int, refresh_ttl: int) -> None:
        self._secret = secret
        self._ttl = {"access": access_ttl, "refresh": refresh_ttl}

    def issue(self, username: str, role: Role, kind: TokenKind) -> dict[str, Any]:
        """``{"token", "issued", "expires"}`` with epoch-millisecond times, as protocol.md says."""
        now = time.time()
        exp = now + self._ttl[kind]
        token = jwt.encode(
            {"sub": username, "role": Role(role).value, "typ": kind, "iat": int(now), "exp": int(exp),
             "jti": uuid.uuid4().hex},
            self._secret,
            algorithm=ALGORITHM,
        )
        return {"token": token, "issued": int(now * 1000), "expires": int(exp * 1000)}

    def issue_pair(self, username: str, role: Role) -> dict[str, Any]:
        """The ``data`` of a successful ``/authorize``."""
        return {"access": self.issue(username, role, "access"), "refresh": self.issue(username, role, "refresh")}

    def verify(self, token: str | None, kind: TokenKind = "access") -> Claims:
        """The claims of a valid token of ``kind``, else :class:`Unauthorized`."""
        if not token:
            raise Unauthorized("missing token")
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired: log in again or use the refresh token") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid token") from None
        if payload.get("typ") != kind:
            raise Unauthorized(f"not an {kind} token")
        try:
            role = Role(payload.get("role"))
        except ValueError:
            raise Unauthorized("invalid token") from None
        return Claims(str(payload["sub"]), role, kind, int(payload.get("iat", 0)) * 1000, int(payload["exp"]) * 1000)


#: Usernames are at most 64 characters; a longer one is counted under its first this many, so a
#: spray of megabyte-long names can't fill memory (the key count is bounded separately).
MAX_KEY_CHARS = 128


class LoginLimiter:
    """Counts failed logins per user and per address in a sliding window."""

    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self._window:
            q.popleft()
        return q

    def check(self, username: str, address: str) -> None:
        """Raise :class:`TooManyRequests` while either key is over the limit."""
        now = time.monotonic()
        for key in _keys(username, address):
            q = self._recent(key, now)
            if len(q) >= self._max:
                wait = int(q[0] + self._window - now) + 1
                raise TooManyRequests(f"too many failed logins; try again in {wait} s")

    def failed(self, username: str, address: str) -> None:
        """Count one failure for both keys."""
        now = time.monotonic()
        for key in _keys(username, address):
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of names
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}

    def succeeded(self, username: str) -> None:
        """A good login clears that user's count (not the address's)."""
        self._failures.pop(_keys(username, "")[0], None)


def _keys(username: str, address: str) -> tuple[str, str]:
    """The limiter's keys for one attempt (long names cut, see :data:`MAX_KEY_CHARS`)."""
    return f"user:{username[:MAX_KEY_CHARS]}", f"addr:{address[:MAX_KEY_CHARS]}"
