"""Modules: the units that bring intents, topics and background work to a node.

Built-in modules are registered exactly as third-party ones are: through the
``cloudisense.modules`` entry-point group, whose values are :class:`Module`
subclasses.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from cloudisense.core.intents import Intent

if TYPE_CHECKING:
    from cloudisense.node import Node

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cloudisense.modules"


class Module:
    """Base class of a module. Override what applies."""

    name: ClassVar[str] = ""
    #: The module's settings: a pydantic model for its config section (``None``: it has none, and
    #: a section of that name is an error). Validated when the node loads the module.
    settings_model: ClassVar[type[BaseModel] | None] = None
    #: The config section it reads; ``None`` means its ``name``.
    settings_section: ClassVar[str | None] = None

    @classmethod
    def section_name(cls) -> str:
        """The config section of this module."""
        return cls.settings_section or cls.name

    @property
    def settings(self) -> Any:
        """This module's settings section, validated by ``settings_model`` (once, on first use)."""
        if self.settings_model is None:
            raise AttributeError(f"module {self.name} has no settings")
        return self.node.settings.section(self.section_name(), self.settings_model)

    def __init__(self, node: Node) -> None:
        self.node = node

    def intents(self) -> list[Intent]:
        """The intents this module adds (``module`` is filled in by the node)."""
        return []

    def entities(self) -> dict[str, list[str]]:
        """Configured names by entity kind (``{"log": ["app", ...]}``), for the planner."""
        return {}

    def http_routes(self) -> list[tuple[str, type, dict[str, Any]]]:
        """Tornado routes this module serves beside ``/ws`` (``(pattern, handler, kwargs)``)."""
        return []

    async def start(self) -> None:
        """Start background work (called after every module has registered)."""

    async def stop(self) -> None:
        """Stop background work and release resources."""


def discover_modules() -> dict[str, type[Module]]:
    """Installed module classes by entry-point name."""
    found: dict[str, type[Module]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.exception("could not load module %s (%s)", ep.name, ep.value)
            continue
        if isinstance(cls, type) and issubclass(cls, Module):
            found[ep.name] = cls
        else:
            log.error("entry point %s is not a cloudisense Module subclass", ep.name)
    return found
