"""Settings of the targets module: one table per managed service, ``[targets.<name>]``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, RootModel

from cloudisense.config import ConfigPath, Section


class TargetSettings(Section):
    """One managed service."""

    backend: Literal["process", "systemd"] = "process"
    #: For ``process``: the command as an argument list (never a shell string).
    command: list[str] = Field(default_factory=list)
    cwd: ConfigPath | None = None
    env: dict[str, str] = Field(default_factory=dict)
    #: Where a ``process`` target's stdout/stderr go.
    log: ConfigPath | None = None
    #: For ``systemd``: the unit name (must be listed here to be managed).
    unit: str | None = None
    #: Start with the node.
    autostart: bool = False
    stop_timeout: float = Field(5.0, gt=0)
    #: Optional HTTP URL that answers 2xx when the service is healthy.
    health_url: str | None = None
    #: After a start or restart, wait up to this many seconds for ``health_url`` to answer healthy.
    health_wait: float = Field(10.0, ge=0, le=300)
    #: For ``systemd``: the ``systemctl`` program (a path, or a name looked up on PATH).
    systemctl: str = "systemctl"


class TargetsSettings(RootModel[dict[str, TargetSettings]]):
    """Managed services by name."""

    root: dict[str, TargetSettings] = Field(default_factory=dict)
