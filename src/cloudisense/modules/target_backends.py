"""The two backends of the targets module: supervised processes and systemd units.

Both report state changes through a callback ``on_state(name, state, pid, exit_code)``
and raise :mod:`cloudisense.core.errors` with messages that say what to fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from cloudisense.core.errors import ActionFailed, BadRequest, Conflict, Unavailable
from cloudisense.modules.target_config import TargetSettings

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str, "int | None", "int | None"], None]

#: Seconds after a start during which an exit counts as "failed to start" (reported to the caller).
START_GRACE = 0.2
#: How often an adopted process (not our child, so not waitable) is checked for exit.
ADOPTED_POLL = 0.5
#: Environment variables never passed on to supervised processes (the node's own secrets);
#: a target that needs one sets it in its ``env`` table.
_SECRET_ENV = re.compile(r"^(CLOUDISENSE_.*|OPENAI_API_KEY|ANTHROPIC_API_KEY)$")
_RUNNING = ("starting", "running", "stopping")
#: Environment variable naming the pid file of the target a process was started for.
TARGET_MARKER = "CLOUDISENSE_TARGET_PID_FILE"


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``.

    Zombies are ignored: an orphan reparented to an init that never reaps (some containers)
    would otherwise look alive forever.
    """
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


class ProcessBackend:
    """Starts the command in its own session (process group) and supervises it.

    * output (stdout and stderr) is appended to ``log`` (or discarded when unset);
    * the pid is also written to ``<data_dir>/targets/<name>.pid`` (JSON: pid, create_time,
      argv). A node that starts again finds the file: when the same process (same pid
      *and* start time, so a reused pid is not mistaken for it) still runs, it is adopted
      — reported as running, polled for exit, stoppable — otherwise the stale file is removed.
      The file is written just after the spawn, so every process also carries
      ``CLOUDISENSE_TARGET_PID_FILE`` (the file's path) in its environment from before the
      fork: a node killed between the spawn and the file finds it by that mark and adopts it;
    * stop sends SIGTERM to the whole group, and SIGKILL to whatever is left after
      ``stop_timeout``;
    * an exit that nobody asked for is ``crashed`` (or ``stopped`` for exit code 0); the
      rest of its group is then sent SIGTERM so that a restart finds its ports free.

    Exit codes follow asyncio: a negative code ``-N`` means "killed by signal N"; an adopted
    process's exit code can't be known (``None``).
    """

    def __init__(self, name: str, settings: TargetSettings, state_dir: Path, on_state: StateCallback) -> None:
        self.name = name
        self.settings = settings
        self.pid_file = state_dir / f"{name}.pid"
        self._on_state = on_state
        self._state = "stopped"
        self._pid: int | None = None
        self._started_wall: float | None = None
        self._started_mono: float | None = None
        self._exit_code: int | None = None
        self._stopping = False
        self._adopted = False
        self._watcher: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._exited.set()

    # -- helpers --------------------------------------------------------------

    def _base_dir(self) -> str:
        return str(self.settings.cwd) if self.settings.cwd else os.getcwd()

    def argv(self) -> list[str]:
        """The command with ``{python}`` (this interpreter) and ``{demo}`` / ``{config_dir}`` expanded.

        ``{demo}`` and ``{config_dir}`` stand for the target's ``cwd``, which the config loader
        resolves against the config file's folder (the node's working directory when unset).
        Other items are passed as they are; relative paths in them are relative to ``cwd``.
        """
        if not self.settings.command:
            raise BadRequest(f"targets.{self.name}.command is empty; set it to an argument list such as "
                             '["{python}", "app.py"]')
        base = self._base_dir()
        return [item.replace("{python}", sys.executable).replace("{demo}", base).replace("{config_dir}", base)
                for item in self.settings.command]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.match(k)}
        env.update(self.settings.env)
        # Set before the fork: a process whose pid file was never written (the node died between
        # spawning it and writing the file) is still found and adopted by the next start.
        env[TARGET_MARKER] = str(self.pid_file.resolve())
        return env

    def _find_orphan(self) -> psutil.Process | None:
        """A live group leader started for this target (by its marker) that no pid file names."""
        marker = str(self.pid_file.resolve())
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or os.getpgid(proc.pid) != proc.pid:
                    continue  # targets run in their own session: the leader's pid is the group id
                if proc.environ().get(TARGET_MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                    return proc
            except (psutil.Error, OSError):
                continue
        return None

    def _set_state(self, state: str) -> None:
        self._state = state
        self._on_state(self.name, state, self._pid, self._exit_code)

    def _write_pid_file(self, argv: list[str]) -> None:
        assert self._pid is not None
        create_time: float | None
        try:
            create_time = psutil.Process(self._pid).create_time()
        except psutil.Error:
            create_time = self._started_wall
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self._pid, "create_time": create_time, "argv": argv}), encoding="utf-8")
        tmp.replace(self.pid_file)

    def _remove_pid_file(self) -> None:
        self.pid_file.unlink(missing_ok=True)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the command; :class:`ActionFailed` when it can't start or exits at once."""
        if self._state in _RUNNING:
            raise Conflict(f"target {self.name} is already running (pid {self._pid}); use restart_target to restart it")
        argv = self.argv()
        cwd = self.settings.cwd
        if cwd is not None and not cwd.is_dir():
            raise ActionFailed(f"target {self.name}: working folder {cwd} does not exist; fix targets.{self.name}.cwd")
        out: Any = asyncio.subprocess.DEVNULL
        if self.settings.log is not None:
            self.settings.log.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.settings.log, "ab")  # noqa: SIM115 - handed to the child, closed below
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} cloudisense starts target {self.name}\n".encode())
            out.flush()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(cwd) if cwd else None, env=self._env(), stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            raise ActionFailed(f"target {self.name}: program not found: {argv[0]}; "
                               f"fix targets.{self.name}.command") from None
        except OSError as exc:
            raise ActionFailed(f"target {self.name}: could not start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            if out is not asyncio.subprocess.DEVNULL:
                out.close()
        self._pid, self._exit_code, self._adopted, self._stopping = proc.pid, None, False, False
        self._started_wall, self._started_mono = time.time(), time.monotonic()
        self._exited = asyncio.Event()
        try:
            self._write_pid_file(argv)
        except OSError as exc:  # supervision still works; only adoption after a node crash is lost
            log.warning("target %s: could not write %s: %s", self.name, self.pid_file, exc)
        self._set_state("running")
        self._watcher = asyncio.create_task(self._watch_child(proc), name=f"target-{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self._exited.wait()), START_GRACE)
        except TimeoutError:
            return
        where = f"; see its log {self.settings.log}" if self.settings.log else ""
        raise ActionFailed(f"target {self.name} exited right after start with code {self._exit_code}{where}")

    async def _watch_child(self, proc: asyncio.subprocess.Process) -> None:
        self._on_exit(await proc.wait())

    async def _watch_adopted(self, proc: psutil.Process) -> None:
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            await asyncio.sleep(ADOPTED_POLL)
        self._on_exit(None)

    def _on_exit(self, code: int | None) -> None:
        pgid = self._pid
        expected = self._stopping
        self._exit_code = code
        self._remove_pid_file()
        if not expected and pgid is not None:
            _signal_group(pgid, signal.SIGTERM)  # leftovers of a crashed leader would block a restart
        self._pid, self._started_mono, self._started_wall = None, None, None
        self._stopping = False
        self._exited.set()
        self._set_state("stopped" if expected or code == 0 else "crashed")

    async def stop(self) -> bool:
        """SIGTERM the group, SIGKILL it after ``stop_timeout``; ``False`` when nothing ran."""
        if self._state not in _RUNNING or self._pid is None:
            return False
        pgid = self._pid  # a new session: the group id is the leader's pid
        deadline = time.monotonic() + self.settings.stop_timeout
        self._stopping = True
        self._set_state("stopping")
        _signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited.wait()), self.settings.stop_timeout)
        except TimeoutError:
            log.warning("target %s did not stop within %g s; killing its process group", self.name,
                        self.settings.stop_timeout)
            _signal_group(pgid, signal.SIGKILL)
            await self._exited.wait()
        # Children of the leader may outlive it; give them the rest of the grace time.
        while await asyncio.to_thread(_group_alive, pgid):
            if time.monotonic() >= deadline:
                _signal_group(pgid, signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        return True

    async def restart(self) -> None:
        """Stop when running, then start."""
        await self.stop()
        await self.start()

    async def status(self) -> dict[str, Any]:
        """The current state and the last run's exit code."""
        running = self._state in _RUNNING
        return {
            "state": self._state,
            "pid": self._pid,
            "uptime": round(time.monotonic() - self._started_mono, 3) if running and self._started_mono else None,
            "started_at": int(self._started_wall * 1000) if running and self._started_wall else None,
            "exit_code": self._exit_code,
            "adopted": self._adopted,
            "log": str(self.settings.log) if self.settings.log else None,
        }

    async def recover(self) -> None:
        """Adopt the process a previous node left running (by pid file, else by marker), or clean up."""
        proc = await self._from_pid_file()
        if proc is None:
            proc = await asyncio.to_thread(self._find_orphan)
            if proc is None:
                return
            log.warning("target %s: found pid %d started by a previous node that never recorded it",
                        self.name, proc.pid)
        pid = proc.pid
        try:
            create_time = proc.create_time()
        except psutil.Error:
            return
        self._pid, self._adopted, self._exit_code, self._stopping = pid, True, None, False
        self._started_wall = create_time
        self._started_mono = time.monotonic() - max(0.0, time.time() - create_time)
        self._exited = asyncio.Event()
        log.info("target %s: adopted pid %d left running by a previous node", self.name, pid)
        self._set_state("running")
        self._watcher = asyncio.create_task(self._watch_adopted(proc), name=f"target-{self.name}")
        try:
            self._write_pid_file(proc.cmdline())
        except (OSError, psutil.Error) as exc:
            log.warning("target %s: could not write %s: %s", self.name, self.pid_file, exc)

    async def _from_pid_file(self) -> psutil.Process | None:
        """The live process the pid file names (same start time), else ``None`` (a stale file is removed)."""
        try:
            info = json.loads(self.pid_file.read_text(encoding="utf-8"))
            pid, create_time = int(info["pid"]), float(info["create_time"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            log.warning("target %s: unreadable pid file %s removed", self.name, self.pid_file)
            self._remove_pid_file()
            return None
        try:
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - create_time) < 1.0
        except psutil.Error:
            alive = False
        if not alive:
            log.info("target %s: stale pid file (pid %d is gone) removed", self.name, pid)
            self._remove_pid_file()
            return None
        return proc

    async def shutdown(self) -> None:
        """The node stops: so do the processes it supervises."""
        await self.stop()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()


_UNIT_RE = re.compile(r"^[A-Za-z0-9@_.:\\-]{1,255}$")
_SYSTEMCTL_TIMEOUT = 60.0
_SHOW_PROPS = "ActiveState,SubState,MainPID,ExecMainStatus,ActiveEnterTimestampMonotonic,LoadState"
_STATE_MAP = {"active": "running", "inactive": "stopped", "failed": "crashed", "activating": "starting",
              "deactivating": "stopping", "reloading": "running"}


class SystemdBackend:
    """Drives one configured unit with ``systemctl`` (argument lists, never a shell).

    Only the unit named in ``targets.<name>.unit`` is ever passed to systemctl, so a caller
    can't reach other units. The node neither starts nor stops units when it starts or stops
    (systemd owns their lifetime), except ``autostart`` which starts the unit when inactive.
    ``targets.<name>.systemctl`` may name another program: tests use a small fake, since a real
    systemd is not available in containers and CI.
    """

    def __init__(self, name: str, settings: TargetSettings, on_state: StateCallback) -> None:
        self.name = name
        self.settings = settings
        self._on_state = on_state

    def unit(self) -> str:
        """The configured unit name (validated: it can't be taken for an option)."""
        unit = self.settings.unit
        if not unit:
            raise BadRequest(f"targets.{self.name}.unit is not set; name the systemd unit, e.g. nginx.service")
        if not _UNIT_RE.match(unit) or unit.startswith("-"):
            raise BadRequest(f"targets.{self.name}.unit {unit!r} is not a valid unit name")
        return unit

    def _program(self) -> str:
        exe = self.settings.systemctl
        found = shutil.which(exe)
        if found is None:
            raise Unavailable(f"systemctl not found ({exe}): the systemd backend needs systemd; set "
                              f"targets.{self.name}.systemctl or use backend = \"process\"")
        return found

    async def _run(self, *args: str) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._program(), *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                # systemctl needs none of the node's secrets either (the program is configurable).
                env={k: v for k, v in os.environ.items() if not _SECRET_ENV.match(k)})
        except OSError as exc:
            raise Unavailable(f"could not run systemctl for target {self.name}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _SYSTEMCTL_TIMEOUT)
        except TimeoutError:
            _signal_group(proc.pid, signal.SIGKILL)
            raise ActionFailed(f"systemctl {args[0]} {self.name} did not finish "
                               f"within {_SYSTEMCTL_TIMEOUT:g} s") from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def _change(self, verb: str) -> None:
        code, out, err = await self._run(verb, self.unit())
        if code != 0:
            detail = (err or out).strip()[-500:] or f"exit code {code}"
            raise ActionFailed(f"systemctl {verb} {self.unit()} failed: {detail}")
        status = await self.status()
        self._on_state(self.name, status["state"], status["pid"], status["exit_code"])

    async def _active(self) -> bool:
        code, out, _ = await self._run("is-active", self.unit())
        return code == 0 and out.strip() == "active"

    async def start(self) -> None:
        """``systemctl start``; :class:`Conflict` when the unit is already active."""
        if await self._active():
            raise Conflict(f"target {self.name} ({self.unit()}) is already active; use restart_target to restart it")
        await self._change("start")

    async def stop(self) -> bool:
        """``systemctl stop``; ``False`` when the unit was not active."""
        if not await self._active():
            return False
        await self._change("stop")
        return True

    async def restart(self) -> None:
        """``systemctl restart``."""
        await self._change("restart")

    async def status(self) -> dict[str, Any]:
        """From ``systemctl show -p ...``."""
        code, out, err = await self._run("show", "-p", _SHOW_PROPS, self.unit())
        if code != 0:
            raise ActionFailed(f"systemctl show {self.unit()} failed: {(err or out).strip()[-500:]}")
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        active = props.get("ActiveState", "unknown")
        pid = int(props.get("MainPID") or 0) or None
        uptime = None
        entered = int(props.get("ActiveEnterTimestampMonotonic") or 0)
        if active == "active" and entered:
            # systemd's monotonic clock is CLOCK_MONOTONIC, the clock of time.monotonic() on Linux.
            uptime = round(max(0.0, time.monotonic() - entered / 1e6), 3)
        exit_status = props.get("ExecMainStatus")
        return {
            "state": _STATE_MAP.get(active, "unknown"),
            "pid": pid,
            "uptime": uptime,
            "started_at": int((time.time() - uptime) * 1000) if uptime is not None else None,
            "exit_code": int(exit_status) if exit_status and exit_status.lstrip("-").isdigit() else None,
            "unit": self.unit(),
            "active_state": active,
            "sub_state": props.get("SubState"),
            "load_state": props.get("LoadState"),
        }

    async def recover(self) -> None:
        """Nothing to pick up: systemd keeps the state."""

    async def shutdown(self) -> None:
        """Units outlive the node: nothing to stop."""
