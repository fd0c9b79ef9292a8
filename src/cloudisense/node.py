"""A node: settings, database, registry, hub, router and modules, started and stopped together."""

from __future__ import annotations

import logging
from collections.abc import Callable
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

#: How long a stopping node waits for running requests to finish and write their audit rows.
DRAIN_SECONDS = 5.0


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
        #: Set by the program that runs the node (``cloudisense serve``): stops it cleanly and starts
        #: it again. ``None`` when the node is embedded, and then ``restart_self`` is refused.
        self.restart_hook: Callable[[], None] | None = None

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
        repeated = sorted({name for name in wanted if wanted.count(name) > 1})
        if repeated:
            raise ConfigError(f"modules: listed more than once: {', '.join(repeated)}")
        missing = [name for name in wanted if name not in available]
        if missing:
            raise ConfigError(f"modules: not installed: {', '.join(missing)} "
                              f"(installed: {', '.join(sorted(available))})")
        self._check_sections(available, wanted)
        for name in wanted:
            cls = available[name]
            if cls.settings_model is not None:
                # Validated before the module is built, so a bad key stops start-up naming it.
                self.settings.section(cls.section_name(), cls.settings_model)
            module = cls(self)
            self.modules[name] = module
            for intent in module.intents():
                self.registry.add(intent if intent.module else _with_module(intent, name))

    def _check_sections(self, available: dict[str, type[Module]], wanted: list[str]) -> None:
        """Every module section present must belong to an installed module that has settings."""
        # Modules given explicitly (tests, embedding) join the installed ones: a section of an
        # installed module that is not loaded is fine, a section nobody reads is a typo.
        owners = {cls.section_name(): cls for cls in [*discover_modules().values(), *available.values()]}
        for section in self.settings.section_names():
            cls = owners.get(section)
            if cls is None:
                raise ConfigError(f"[{section}]: no installed module reads this section "
                                  f"(sections: {', '.join(sorted(owners))})")
            if cls.settings_model is None:
                raise ConfigError(f"[{section}]: the module {cls.name} has no settings")

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
        """Refuse new requests, stop modules (reverse order), let running requests write their
        audit rows (at most ``DRAIN_SECONDS``), flush the audit log, close the database."""
        self.router.close()
        for module in reversed(list(self.modules.values())):
            try:
                await module.stop()
            except Exception:
                log.exception("module %s failed to stop", module.name)
        left = await self.router.drain(DRAIN_SECONDS)
        if left:
            log.warning("stopping with %d request(s) still running; their outcome is not in the audit log", left)
        await self.audit.stop()
        await self.db.close()
        self._started = False


def _with_module(intent: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(intent, module=name)
