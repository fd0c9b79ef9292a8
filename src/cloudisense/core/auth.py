"""JWT access/refresh tokens and login rate limiting (no I/O)."""

from __future__ import annotations

import math
import secrets
import time
import uuid
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
            role = Role(payload.get("role", ""))
        except ValueError:
            raise Unauthorized("invalid token") from None
        return Claims(str(payload["sub"]), role, kind, int(payload.get("iat", 0)) * 1000, int(payload["exp"]) * 1000)


#: Usernames are at most 64 characters; a longer one is counted under its first this many, so a
#: spray of megabyte-long names can't fill memory (the key count is bounded separately).
MAX_KEY_CHARS = 128
#: Keys kept before expired ones are pruned (and, if still over, the oldest dropped).
MAX_KEYS = 100_000


class LoginLimiter:
    """Slows down password guessing without letting anyone lock out the real owner.

    Failures are counted per (username, address) pair, so guesses from one address never
    slow down the same user logging in from another. The first ``max_failures`` failures
    of a pair are free; each further one makes the pair wait twice as long as the one
    before (1 s, 2 s, 4 s, ... at most ``window`` seconds) before its next attempt. A pair
    with no failure for ``window`` seconds starts over, and a good login clears it.
    An admin clears every pair of a user with :meth:`unlock` (``cloudisense user unlock``).
    Attempts refused while waiting are not counted, so waiting never grows by itself.
    """

    def __init__(self, max_failures: int, window_seconds: float, clock: Any = time.time) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._clock = clock
        #: key -> (failures, time of the last failure)
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}

    def _wait(self, key: tuple[str, str], now: float, unlocked_at: float) -> float:
        """Seconds ``key`` must still wait (0: may try now)."""
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        count, last = entry
        if now - last >= self._window or last < unlocked_at:
            del self._failures[key]
            return 0.0
        if count < self._max:
            return 0.0
        delay = min(float(self._window), 2.0 ** (count - self._max))
        return max(0.0, last + delay - now)

    def check(self, username: str, address: str, unlocked_at: float = 0.0) -> None:
        """Raise :class:`TooManyRequests` while this user must wait at this address.

        ``unlocked_at``: epoch seconds of the user's last admin unlock (failures before it are forgiven).
        """
        wait = self._wait(_key(username, address), self._clock(), unlocked_at)
        if wait > 0:
            raise TooManyRequests(f"too many failed logins for this user from this address; try again in "
                                  f"{math.ceil(wait - 1e-6)} s "
                                  "(an admin can clear this with: cloudisense user unlock NAME)")

    def failed(self, username: str, address: str) -> None:
        """Count one failure of this user at this address."""
        now = self._clock()
        key = _key(username, address)
        count, _ = self._failures.get(key, (0, now))
        self._failures[key] = (count + 1, now)
        if len(self._failures) > MAX_KEYS:  # bound memory under a spray of names and addresses
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < self._window}
            while len(self._failures) > MAX_KEYS:
                del self._failures[next(iter(self._failures))]  # oldest first (insertion order)

    def succeeded(self, username: str, address: str) -> None:
        """A good login clears that user's count at that address."""
        self._failures.pop(_key(username, address), None)

    def unlock(self, username: str) -> int:
        """Forget every failure of ``username`` (any address); how many addresses were waiting."""
        keys = [k for k in self._failures if k[0] == username[:MAX_KEY_CHARS]]
        for k in keys:
            del self._failures[k]
        return len(keys)


def _key(username: str, address: str) -> tuple[str, str]:
    """The limiter's key for one attempt (long names cut, see :data:`MAX_KEY_CHARS`)."""
    return username[:MAX_KEY_CHARS], address[:MAX_KEY_CHARS]
