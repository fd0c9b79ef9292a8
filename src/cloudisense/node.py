"""A node: settings, database, registry, hub, router and modules, started and stopped together."""

from __future__ import annotations

import logging
from typing import Any

from cloudisense.config import Settings
from cloudisense.core.auth import LoginLimiter, TokenKind, TokenService, load_or_create_secret
from cloudisense.core.errors import ConfigError, Unauthorized
from cloudisense.core.intents import IntentRegistry
from cloudisense.core.metrics import Metrics
from cloudisense.core.modules import Module, discover_modules
from cloudisense.core.pubsub import PubSub
from cloudisense.core.router import MessageRouter
from cloudisense.store.audit import AuditLog
from cloudisense.store.db import Database
from cloudisense.store.logins import LoginUnlocks
from cloudisense.store.users import User, UserStore

log = logging.getLogger(__name__)


class Node:
    """Everything one CloudiSENSE node runs, without the HTTP server."""

    def __init__(self, settings: Settings, module_classes: dict[str, type[Module]] | None = None) -> None:
        self.settings = settings
        self.identity = settings.identity
        self.metrics = Metrics()
        self.db = Database(settings.db_path)
        self.audit = AuditLog(self.db)
        self.users = UserStore(self.db)
        self.unlocks = LoginUnlocks(self.db)
        self.registry = IntentRegistry()
        self.pubsub = PubSub(self.identity, on_drop=self.metrics.dropped.inc)
        self.router = MessageRouter(self)
        secret = settings.auth.jwt_secret.get_secret_value() if settings.auth.jwt_secret else None
        self.tokens = TokenService(secret or load_or_create_secret(settings.data_dir),
                                   settings.auth.access_ttl, settings.auth.refresh_ttl)
        self.login_limiter = LoginLimiter(settings.auth.login_max_failures, settings.auth.login_window)
        self.modules: dict[str, Module] = {}
        self._module_classes = module_classes
        self._started = False

    def module(self, name: str) -> Any:
        """A loaded module by name, or ``None``."""
        return self.modules.get(name)

    async def authenticate(self, token: str | None, kind: TokenKind = "access") -> User:
        """The user a valid token speaks for, as stored now (role included), else :class:`Unauthorized`.

        A token outlives changes to its user, so it is checked against the store: a deleted
        user is refused, a token issued before the last password change is refused, and the
        role is the stored one (a demoted user's old token does not keep the old role).
        """
        claims = self.tokens.verify(token, kind)
        user = await self.users.get(claims.username)
        if user is None:
            raise Unauthorized("user no longer exists")
        if claims.issued_ms // 1000 < user.credentials_changed:
            raise Unauthorized("the password changed since this token was issued: log in again")
        return user

    def entities(self) -> dict[str, list[str]]:
        """Every module's configured entity names, merged by kind."""
        merged: dict[str, list[str]] = {}
        for module in self.modules.values():
            for kind, names in module.entities().items():
                merged.setdefault(kind, []).extend(names)
        return merged

    def load_modules(self) -> None:
        """Instantiate the configured modules and register their intents (once; no I/O)."""
        if self.modules:
            return
        available = self._module_classes if self._module_classes is not None else discover_modules()
        wanted = self.settings.modules if self.settings.modules is not None else sorted(available)
        missing = [name for name in wanted if name not in available]
        if missing:
            raise ConfigError(f"modules: not installed: {', '.join(missing)} (installed: {', '.join(sorted(available))})")
        for name in wanted:
            module = available[name](self)
            self.modules[name] = module
            for intent in module.intents():
                self.registry.add(intent if intent.module else _with_module(intent, name))

    async def start(self) -> None:
        """Open the database, load and start modules."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.open()
        await self.users.start()
        await self.unlocks.start()
        await self.audit.start()
        self.load_modules()
        for module in self.modules.values():
            await module.start()
        self._started = True
        log.info("node %s started with %d modules and %d intents", self.identity, len(self.modules), len(self.registry))

    async def stop(self) -> None:
        """Stop modules (reverse order), flush the audit log, close the database."""
        for module in reversed(list(self.modules.values())):
            try:
                await module.stop()
            except Exception:
                log.exception("module %s failed to stop", module.name)
        await self.audit.stop()
        await self.db.close()
        self._started = False


def _with_module(intent: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(intent, module=name)
