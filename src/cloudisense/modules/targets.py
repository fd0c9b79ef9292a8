"""Managed services ("targets"): list, status, start, restart and stop them.

Each ``[targets.<name>]`` names one service and a backend that runs it:

* ``process``: the node starts the command itself and supervises it (see
  :class:`ProcessBackend`);
* ``systemd``: the node drives an already installed unit through ``systemctl``
  (see :class:`SystemdBackend`); only units named in the configuration can be touched.

Every state change is published on the static topic ``/targets`` as an event
``target_state`` with data ``{name, state, pid, exit_code}``.

``list_targets`` answers what the existing CloudiSENSE client expects, an array of target names;
``list_targets {"details": true}`` answers ``{"targets": [status, ...], "count"}``. The intents
that take a target accept its name as ``name`` or as ``module`` (the existing client's word).

Status shape (``target_status``, and each item of ``list_targets`` with ``details``)::

    {"name": "web", "backend": "process", "state": "running" | "stopped" | "crashed" | "stopping"
     | "starting" | "unknown", "pid": 1234 | None, "uptime": 12.5 | None (seconds),
     "started_at": epoch ms | None, "exit_code": last run's exit code | None,
     "health": "healthy" | "unhealthy" | "unknown", "autostart": bool, ...backend extras}
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, Protocol

from pydantic import AliasChoices, BaseModel, Field
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from cloudisense.core.context import ActionContext
from cloudisense.core.errors import NotFound
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.modules.target_backends import ProcessBackend, SystemdBackend
from cloudisense.modules.target_config import TargetSettings, TargetsSettings

log = logging.getLogger(__name__)

TARGETS_TOPIC = "/targets"
STATE_EVENT = "target_state"
#: Seconds a health check may take before the target counts as unhealthy.
HEALTH_TIMEOUT = 2.0
#: How often a service that just started is asked whether it is healthy yet.
HEALTH_POLL = 0.25


class Backend(Protocol):
    """What the module needs from a backend; every method may raise :mod:`core.errors`."""

    name: str
    settings: TargetSettings

    async def start(self) -> None:
        """Start the service; :class:`Conflict` when it already runs."""

    async def stop(self) -> bool:
        """Stop the service; ``False`` when it was not running."""

    async def restart(self) -> None:
        """Stop (when running) and start again."""

    async def status(self) -> dict[str, Any]:
        """``state``, ``pid``, ``uptime``, ``started_at``, ``exit_code`` and backend extras."""

    async def recover(self) -> None:
        """Called once at node start: pick up what a previous node left behind."""

    async def shutdown(self) -> None:
        """Called at node stop: release what the node owns (process targets are stopped)."""


class TargetParams(Params):
    """One configured target (``module`` is accepted for ``name``: the existing client sends it)."""

    name: str = Field(min_length=1, max_length=128, validation_alias=AliasChoices("name", "module"),
                      description="the target's configured name, e.g. web, worker, nginx, redis")


class ListTargetsParams(Params):
    """Names only (the existing client's shape), or every target's status."""

    details: bool = Field(False, description="true: each target's state, pid, uptime and health")


def _say_targets(p: Any, data: Any) -> str:
    """``list_targets`` in words, for either shape."""
    if isinstance(data, list):
        return "services: " + (", ".join(str(n) for n in data) or "none are configured")
    items = data.get("targets", []) if isinstance(data, dict) else []
    return "services: " + ("; ".join(f"{t.get('name')} {t.get('state')}" for t in items) or "none are configured")


async def check_health(url: str | None) -> str:
    """``healthy`` when ``url`` answers 2xx within :data:`HEALTH_TIMEOUT`, ``unhealthy`` otherwise,
    ``unknown`` when no URL is configured."""
    if not url:
        return "unknown"
    try:
        resp = await AsyncHTTPClient().fetch(url, request_timeout=HEALTH_TIMEOUT, connect_timeout=HEALTH_TIMEOUT,
                                             follow_redirects=False, raise_error=False)
    except (HTTPClientError, OSError):
        return "unhealthy"
    except Exception:  # any other transport failure means "not healthy", never a crashed status call
        log.debug("health check of %s failed", url, exc_info=True)
        return "unhealthy"
    return "healthy" if 200 <= resp.code < 300 else "unhealthy"


class TargetResult(BaseModel):
    """The fields of a target's status that conditions may test (``${s1.data.state} != "running"``)."""

    name: str
    #: The first value is the good state: "down" is ``!= "running"``.
    state: Literal["running", "starting", "stopping", "stopped", "crashed", "unknown"] = Field(
        description="running when the service is up")
    health: Literal["healthy", "unhealthy", "unknown"] = Field(description="result of the health check")
    pid: int | None = None
    uptime: float | None = Field(None, description="seconds since it started")


class TargetsModule(Module):
    """``list_targets``, ``target_status``, ``start_target``, ``restart_target``, ``stop_target``."""

    name = "targets"
    settings_model = TargetsSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.backends: dict[str, Backend] = {}
        #: The last state each backend reported (cheap to read: the ``/stats`` event carries it).
        self.states: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        state_dir = node.settings.data_dir / "targets"
        for tname, tset in self.settings.root.items():
            backend: Backend
            if tset.backend == "systemd":
                backend = SystemdBackend(tname, tset, self._on_state)
            else:
                backend = ProcessBackend(tname, tset, state_dir, self._on_state)
            self.backends[tname] = backend
            self._locks[tname] = asyncio.Lock()

    def intents(self) -> list[Intent]:
        ent = {"name": "target"}
        # Stopping may wait stop_timeout before the forced kill: leave room for that and a start.
        slow = max((t.stop_timeout + t.health_wait for t in self.settings.root.values()), default=0) + 30
        return [
            Intent("list_targets", "Every managed service with its state, pid, uptime and health",
                   self.list_targets, ListTargetsParams, Risk.READ,
                   ("status of all services", "list the targets", "which services are running",
                    "show me every managed service", "are all services up?", "list services"), say=_say_targets,
                   assistant_params={"details": True}),
            Intent("target_status", "State, pid, uptime, last exit code and health of one managed service",
                   self.target_status, TargetParams, Risk.READ,
                   ("is nginx up?", "status of the web service", "is the worker running",
                    "how long has redis been up", "check the health of web", "service status"),
                   entities=ent, result=TargetResult, say=_say_target),
            Intent("start_target", "Start a managed service that is not running",
                   self.start_target, TargetParams, Risk.WRITE,
                   ("start redis", "bring the worker up", "launch the web service", "start nginx again",
                    "start the service"),
                   entities=ent, say=_say_target),
            Intent("restart_target", "Restart a managed service (stop it when running, then start it)",
                   self.restart_target, TargetParams, Risk.WRITE,
                   ("restart the worker", "bounce the web service", "restart nginx", "kick redis",
                    "give the web app a restart", "restart the service"), entities=ent, timeout=slow, say=_say_target),
            Intent("stop_target", "Stop a managed service (graceful, then forced after its stop timeout)",
                   self.stop_target, TargetParams, Risk.DESTRUCTIVE,
                   ("stop nginx", "shut down the worker", "take the web service down", "kill redis",
                    "stop the service"),
                   entities=ent, timeout=slow, say=_say_target),
        ]

    def entities(self) -> dict[str, list[str]]:
        return {"target": sorted(self.backends)}

    async def start(self) -> None:
        self.node.pubsub.add_static(TARGETS_TOPIC)
        for backend in self.backends.values():
            try:
                await backend.recover()
            except Exception:
                log.exception("target %s: could not recover its previous state", backend.name)
        for backend in self.backends.values():  # what /stats reports until the first state change
            try:
                status = await backend.status()
                self.states.setdefault(backend.name, {"state": status["state"], "pid": status.get("pid")})
            except Exception:
                self.states.setdefault(backend.name, {"state": "unknown", "pid": None})
        autostart = [b for b in self.backends.values() if b.settings.autostart]
        await asyncio.gather(*(self._autostart(b) for b in autostart))

    async def _autostart(self, backend: Backend) -> None:
        async with self._locks[backend.name]:
            try:
                if (await backend.status())["state"] != "running":
                    await backend.start()
            except Exception as exc:  # one broken target must not keep the node from starting
                log.error("target %s: autostart failed: %s", backend.name, getattr(exc, "message", exc))

    async def stop(self) -> None:
        await asyncio.gather(*(self._shutdown(b) for b in self.backends.values()))

    async def _shutdown(self, backend: Backend) -> None:
        try:
            async with self._locks[backend.name]:
                await backend.shutdown()
        except Exception:
            log.exception("target %s: could not stop it with the node", backend.name)

    def _on_state(self, name: str, state: str, pid: int | None, exit_code: int | None) -> None:
        """Backends call this on every state change; it becomes a ``/targets`` event."""
        log.info("target %s: %s (pid %s, exit code %s)", name, state, pid, exit_code)
        self.states[name] = {"state": state, "pid": pid}
        self.node.pubsub.publish(TARGETS_TOPIC, STATE_EVENT,
                                 {"name": name, "state": state, "pid": pid, "exit_code": exit_code})

    def _backend(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is None:
            known = ", ".join(sorted(self.backends)) or "none are configured ([targets.<name>] in the config)"
            raise NotFound(f"no target named {name!r}; known targets: {known}")
        return backend

    async def _status(self, backend: Backend) -> dict[str, Any]:
        status = await backend.status()
        healthy = await check_health(backend.settings.health_url) if status["state"] == "running" else "unknown"
        return {"name": backend.name, "backend": backend.settings.backend, **status, "health": healthy,
                "autostart": backend.settings.autostart}

    async def _status_once_up(self, backend: Backend) -> dict[str, Any]:
        """The status after a start: a freshly started service gets ``health_wait`` seconds to turn healthy,
        so "restart it and tell me when it's healthy" reports the service as it settles, not as it boots."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + backend.settings.health_wait
        status = await self._status(backend)
        while status["health"] == "unhealthy" and status["state"] == "running" and loop.time() < deadline:
            await asyncio.sleep(HEALTH_POLL)
            status = await self._status(backend)
        return status

    # -- intents ------------------------------------------------------------

    async def list_targets(self, p: ListTargetsParams, ctx: ActionContext) -> list[str] | dict[str, Any]:
        if not p.details:
            return sorted(self.backends)
        items = await asyncio.gather(*(self._status(self.backends[n]) for n in sorted(self.backends)))
        return {"targets": list(items), "count": len(items)}

    async def target_status(self, p: TargetParams, ctx: ActionContext) -> dict[str, Any]:
        return await self._status(self._backend(p.name))

    async def start_target(self, p: TargetParams, ctx: ActionContext) -> dict[str, Any]:
        backend = self._backend(p.name)
        async with self._locks[p.name]:
            await backend.start()
        return {"action": "started", **await self._status_once_up(backend)}

    async def restart_target(self, p: TargetParams, ctx: ActionContext) -> dict[str, Any]:
        backend = self._backend(p.name)
        async with self._locks[p.name]:
            await backend.restart()
        return {"action": "restarted", **await self._status_once_up(backend)}

    async def stop_target(self, p: TargetParams, ctx: ActionContext) -> dict[str, Any]:
        backend = self._backend(p.name)
        async with self._locks[p.name]:
            changed = await backend.stop()
        return {"action": "stopped" if changed else "already_stopped", "changed": changed,
                **await self._status(backend)}


# -- how results read in words (Intent.say) -----------------------------------------------------

def _say_target(p: Any, d: dict[str, Any]) -> str:
    target = d.get("target", d)
    health = target.get("health")
    extra = f", health {health}" if health and health != "unknown" else ""
    pid = f", pid {target.get('pid')}" if target.get("pid") else ""
    return f"{target.get('name', p.get('name'))} is {target.get('state', 'unknown')}{pid}{extra}"
