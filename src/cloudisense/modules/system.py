"""System observation with psutil, periodic ``/stats`` events, and the node's own configuration and restart.

``/stats`` events are ``data_generated`` (``meta.event = "stats_generated"``) with the
existing CloudiSENSE client's shape: ``{"system": {"os", "cpu", "memory", "disk": [...],
"network": [...]}, "target": {<target>: {state, pid}}, "timestamp"}`` (see docs/protocol.md).
``get_system_stats`` answers our flat figures (``cpu``, ``memory``, ``disk`` of ``/``, ``load``...)
plus the same ``system`` block.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from datetime import datetime
from typing import Any, Literal

import psutil
from pydantic import BaseModel, Field

from cloudisense.config import Section
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, NotFound, Unavailable
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import DATA_EVENT

log = logging.getLogger(__name__)


class SystemSettings(Section):
    """The system module."""

    stats_interval: float = Field(5.0, gt=0, description="seconds between /stats events")
    #: Seconds ``list_processes`` samples CPU use over (a first psutil figure is always 0).
    cpu_sample: float = Field(0.5, gt=0, le=5)

STATS_TOPIC = "/stats"
STATS_KIND = "stats_generated"
#: Seconds between the ``restart_self`` answer and the restart (the answer must leave first).
RESTART_DELAY = 0.5
#: File systems that are not disks (they would flood the per-disk list).
_PSEUDO_FS = {"tmpfs", "devtmpfs", "squashfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "devpts"}


class ProcessParams(Params):
    """A process name."""

    name: str = Field(min_length=1, max_length=256, description="process name, e.g. nginx")


class ListProcessesParams(Params):
    """Ordering and size of a process listing."""

    sort_by: Literal["cpu", "memory"] = "cpu"
    limit: int = Field(10, ge=1, le=500)


class DiskParams(Params):
    """A mount point or folder."""

    path: str = Field("/", min_length=1, max_length=4096)


class _CpuFigures(BaseModel):
    percent: float = Field(description="cpu busy, percent")
    count: int = Field(description="number of cpu cores")


class _MemoryFigures(BaseModel):
    percent: float = Field(description="memory used, percent")
    available: int = Field(description="memory available, bytes")


class _DiskFigures(BaseModel):
    percent: float = Field(description="disk space used on /, percent")
    free: int = Field(description="free disk space, bytes")


class StatsResult(BaseModel):
    """The fields of ``get_system_stats`` that conditions may test (``${s1.data.disk.percent} > 90``)."""

    cpu: _CpuFigures
    memory: _MemoryFigures
    disk: _DiskFigures
    uptime_seconds: int = Field(description="seconds since the machine booted")


class DiskResult(BaseModel):
    """The fields of ``get_disk_usage`` that conditions may test."""

    path: str
    percent: float = Field(description="disk space used, percent")
    free: int = Field(description="free disk space, bytes")


class ProcessResult(BaseModel):
    """The fields of ``check_process`` that conditions may test."""

    name: str
    running: bool = Field(description="whether a process of this name is running")
    count: int = Field(description="how many processes of this name run")


def system_stats() -> dict[str, Any]:
    """CPU, memory, swap, load, disk of ``/``, network counters and uptime (our flat figures)."""
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    disk = psutil.disk_usage("/")
    net = psutil.net_io_counters()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count()},
        "memory": {"total": vm.total, "available": vm.available, "used": vm.used, "percent": vm.percent},
        "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
        "load": {"1m": load[0], "5m": load[1], "15m": load[2]},
        "disk": {"path": "/", "total": disk.total, "used": disk.used, "free": disk.free, "percent": disk.percent},
        "network": {"bytes_sent": net.bytes_sent, "bytes_recv": net.bytes_recv} if net else {},
        "uptime_seconds": int(time.time() - psutil.boot_time()),
        "timestamp": int(time.time() * 1000),
    }


def _os_flavor() -> str:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return platform.system()
    return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()


class StatsCollector:
    """The existing client's ``system`` block; keeps the last NIC counters to give per-NIC rates."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, Any]] | None = None
        self._flavor = _os_flavor()

    def system(self) -> dict[str, Any]:
        """``os``, ``cpu``, ``memory``, ``disk`` (one item per mounted disk) and ``network`` (per NIC)."""
        now = time.time()
        boot = psutil.boot_time()
        vm, swap = psutil.virtual_memory(), psutil.swap_memory()
        freq = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        local = datetime.now().astimezone()
        return {
            "os": {"arch": platform.machine(), "name": platform.system(), "type": os.name, "flavor": self._flavor,
                   "version": platform.release(), "boot_time": int(boot), "uptime": int(now - boot),
                   "system_datetime": local.isoformat(timespec="seconds"), "timezone": local.tzname(),
                   "average_load": [round(x, 2) for x in load]},
            "cpu": {"max_frequency": (freq.max or freq.current) if freq else None, "count": psutil.cpu_count(),
                    "percent": psutil.cpu_percent(interval=None)},
            "memory": {"total": vm.total, "used": vm.used, "free": vm.available, "swap_total": swap.total,
                       "swap_used": swap.used, "swap_free": swap.free, "percent": vm.percent},
            "disk": self._disks(),
            "network": self._network(now),
        }

    @staticmethod
    def _disks() -> list[dict[str, Any]]:
        disks, seen = [], set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _PSEUDO_FS or part.mountpoint in seen:
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:  # a vanished or unreadable mount is left out, never an error
                continue
            seen.add(part.mountpoint)
            disks.append({"mountpoint": part.mountpoint, "fstype": part.fstype, "total": usage.total,
                          "used": usage.used, "free": usage.free, "percent": usage.percent})
        if not disks:  # containers often list no partition: / is still worth showing
            usage = psutil.disk_usage("/")
            disks.append({"mountpoint": "/", "fstype": "", "total": usage.total, "used": usage.used,
                          "free": usage.free, "percent": usage.percent})
        return disks

    def _network(self, now: float) -> list[dict[str, Any]]:
        counters = {nic: c._asdict() for nic, c in psutil.net_io_counters(pernic=True).items()}
        last = self._last
        self._last = (now, counters)
        out = []
        for nic in sorted(counters):
            c = counters[nic]
            item = {"id": nic, **c, "bytes_recv_rate": 0.0, "bytes_sent_rate": 0.0}
            if last is not None and nic in last[1] and now > last[0]:
                span, before = now - last[0], last[1][nic]
                item["bytes_recv_rate"] = round(max(0, c["bytes_recv"] - before["bytes_recv"]) / span, 1)
                item["bytes_sent_rate"] = round(max(0, c["bytes_sent"] - before["bytes_sent"]) / span, 1)
            out.append(item)
        return out


def _process_info(proc: psutil.Process) -> dict[str, Any] | None:
    try:
        with proc.oneshot():
            mem = proc.memory_info()
            return {
                "pid": proc.pid,
                "name": proc.name(),
                "status": proc.status(),
                "cpu_percent": proc.cpu_percent(interval=None),
                "memory_percent": round(proc.memory_percent(), 3),
                "rss": mem.rss,
                "cmdline": proc.cmdline()[:8],
                "started": int(proc.create_time() * 1000),
            }
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def find_processes(name: str) -> list[dict[str, Any]]:
    """Processes whose name or command line's program matches ``name`` (case-insensitive)."""
    wanted = name.lower()
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        pname = (proc.info.get("name") or "").lower()
        cmd = proc.info.get("cmdline") or []
        programs = {os.path.basename(part).lower() for part in cmd[:2]}
        if pname == wanted or wanted in programs:
            info = _process_info(proc)
            if info:
                found.append(info)
    return found


def sample_processes(seconds: float) -> list[dict[str, Any]]:
    """Every process with its CPU use measured over ``seconds`` (psutil's first figure is always 0)."""
    procs = list(psutil.process_iter())
    for proc in procs:
        try:
            proc.cpu_percent(interval=None)  # prime: the next call reports use since now
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    time.sleep(seconds)
    return [i for i in (_process_info(proc) for proc in procs) if i]


def redacted_configuration(settings: Any) -> dict[str, Any]:
    """The node's settings as JSON with every secret hidden: secret fields, target environments,
    secret-looking keys, and webhook paths (which often carry a token)."""
    from urllib.parse import urlsplit

    from cloudisense.store.audit import redact

    data = settings.model_dump(mode="json")  # SecretStr fields come out as "**********"
    for target in (data.get("targets") or {}).values():
        target["env"] = {k: "***" for k in target.get("env") or {}}

    def host_only(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/***"

    notify = data.get("notify") or {}
    notify["webhooks"] = [host_only(u) for u in notify.get("webhooks") or []]
    return redact(data)


class SystemModule(Module):
    """``get_system_stats``, ``check_process``, ``list_processes``, ``get_disk_usage``, ``/stats``,
    ``get_configuration`` and ``restart_self``."""

    name = "system"
    settings_model = SystemSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self._task: asyncio.Task[None] | None = None
        self.collector = StatsCollector()

    def intents(self) -> list[Intent]:
        return [
            Intent("get_system_stats", "CPU, memory, load, disk and network figures of this node",
                   self.get_system_stats, NoParams, Risk.READ,
                   ("how is the server doing", "show system stats", "cpu and memory usage",
                    "what's the load on this box", "is the machine overloaded", "cpu memory load of the box"),
                   result=StatsResult, say=_say_stats),
            Intent("check_process", "Whether a process with this name is running, with its pids and usage",
                   self.check_process, ProcessParams, Risk.READ,
                   ("is nginx running", "check if redis is up", "is there a python process",
                    "find the postgres process"), result=ProcessResult, say=_say_process),
            Intent("list_processes", "The top processes by CPU or memory", self.list_processes,
                   ListProcessesParams, Risk.READ,
                   ("top processes", "what is eating memory", "which processes use the most cpu",
                    "show the 5 biggest processes by memory"), say=_say_processes),
            Intent("get_disk_usage", "Used and free space of a file system", self.get_disk_usage, DiskParams,
                   Risk.READ, ("how much disk is left", "disk usage of /var", "is the disk full",
                               "free space on /", "check disk"), result=DiskResult, say=_say_disk),
            Intent("get_configuration", "This node's configuration, with every secret hidden (admins only)",
                   self.get_configuration, NoParams, Risk.READ, ("show the node configuration",),
                   admin_only=True, agent_use=AgentUse.MANUAL),
            Intent("restart_self", "Restart this server cleanly (admins only; sessions and approvals are kept)",
                   self.restart_self, NoParams, Risk.DESTRUCTIVE, ("restart the server",),
                   admin_only=True, agent_use=AgentUse.HUMAN_ONLY),
        ]

    async def start(self) -> None:
        self.node.pubsub.add_static(STATS_TOPIC)
        psutil.cpu_percent(interval=None)  # prime the counter so the first figure is meaningful
        self._task = asyncio.create_task(self._publish_stats(), name="system-stats")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _targets(self) -> dict[str, Any]:
        targets = self.node.module("targets")
        return dict(getattr(targets, "states", {})) if targets is not None else {}

    async def _publish_stats(self) -> None:
        interval = self.settings.stats_interval
        while True:
            await asyncio.sleep(interval)
            try:
                block = await asyncio.to_thread(self.collector.system)
                self.node.pubsub.publish(STATS_TOPIC, DATA_EVENT, {
                    "system": block, "target": self._targets(), "timestamp": int(time.time() * 1000)},
                    kind=STATS_KIND)
            except Exception:
                log.exception("could not collect system stats")

    async def get_system_stats(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        flat = await asyncio.to_thread(system_stats)
        return {**flat, "system": await asyncio.to_thread(self.collector.system)}

    async def check_process(self, p: ProcessParams, ctx: ActionContext) -> dict[str, Any]:
        procs = await asyncio.to_thread(find_processes, p.name)
        return {"name": p.name, "running": bool(procs), "count": len(procs), "processes": procs}

    async def list_processes(self, p: ListProcessesParams, ctx: ActionContext) -> dict[str, Any]:
        seconds = self.settings.cpu_sample

        def collect() -> list[dict[str, Any]]:
            infos = sample_processes(seconds)
            key = "cpu_percent" if p.sort_by == "cpu" else "memory_percent"
            return sorted(infos, key=lambda i: i[key], reverse=True)[: p.limit]

        return {"sort_by": p.sort_by, "sampled_seconds": seconds, "processes": await asyncio.to_thread(collect)}

    async def get_disk_usage(self, p: DiskParams, ctx: ActionContext) -> dict[str, Any]:
        if "\x00" in p.path:
            raise BadRequest("params.path: must not contain NUL")
        try:
            usage = await asyncio.to_thread(psutil.disk_usage, p.path)
        except FileNotFoundError:
            raise NotFound(f"no such path: {p.path}") from None
        except PermissionError:
            raise BadRequest(f"no permission to read {p.path}") from None
        except (OSError, ValueError) as exc:  # name too long, not encodable, ...: the client's path is at fault
            raise BadRequest(f"params.path: can't read {p.path[:200]!r}: {exc.__class__.__name__}") from None
        return {"path": p.path, "total": usage.total, "used": usage.used, "free": usage.free, "percent": usage.percent}

    async def get_configuration(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        return redacted_configuration(self.node.settings)

    async def restart_self(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        hook = getattr(self.node, "restart_hook", None)
        if hook is None:
            raise Unavailable("this node runs inside another program, not `cloudisense serve`: restart that program")
        log.warning("restart requested by %s", ctx.user)
        asyncio.get_running_loop().call_later(RESTART_DELAY, hook)
        return {"restarting": True, "in_seconds": RESTART_DELAY,
                "note": "the server stops cleanly and starts again; log in tokens and approvals stay valid"}

# -- how results read in words (Intent.say) -----------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB"


def _say_stats(p: Any, d: dict[str, Any]) -> str:
    cpu, mem, disk, load = d.get("cpu", {}), d.get("memory", {}), d.get("disk", {}), d.get("load", {})
    return (f"CPU {cpu.get('percent', '?')} % of {cpu.get('count', '?')} cores, "
            f"memory {mem.get('percent', '?')} % used, disk / {disk.get('percent', '?')} % used, "
            f"load {load.get('1m', '?')} / {load.get('5m', '?')} / {load.get('15m', '?')}")


def _say_process(p: Any, d: dict[str, Any]) -> str:
    if not d.get("running"):
        return f"no process named {d.get('name')} is running"
    pids = ", ".join(str(x.get("pid")) for x in d.get("processes", [])[:8])
    return f"{d.get('name')} is running ({d.get('count')} process(es), pid {pids})"


def _say_processes(p: Any, d: dict[str, Any]) -> str:
    rows = [f"  {x.get('name')} (pid {x.get('pid')}): cpu {x.get('cpu_percent')} %, mem {x.get('memory_percent')} %"
            for x in d.get("processes", [])[:15]]
    return f"top processes by {d.get('sort_by')}:\n" + "\n".join(rows)


def _say_disk(p: Any, d: dict[str, Any]) -> str:
    return f"{d.get('path')}: {d.get('percent')} % used, {_gib(d.get('free', 0))} free of {_gib(d.get('total', 0))}"
