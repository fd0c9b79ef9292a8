"""Scripts from one configured folder: list, start, stop, status, output on ``/script/<id>``.

How a script runs (never through a shell string): a file that starts with ``#!`` and has
its executable bit is run directly as ``[path, *args]``; otherwise a ``.sh`` file is run as
``["/bin/sh", path, *args]``; anything else is refused. The working directory is the
scripts folder, stdin is empty, and the environment is the server's minus anything that
looks like a secret (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``CLOUDISENSE_*``)
plus ``CLOUDISENSE_SCRIPT_ID``.

Each run gets its own process group. When the time limit passes or someone stops it,
the whole group gets SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds, so children
die with the script. Only names of regular files directly in the folder are accepted,
and a file that resolves (symlinks followed) outside the folder is refused.

Events on ``/script/<script_id>`` are ``data_generated`` with the existing client's
``{"script": <name>, "state": "start" | "progress" | "stop", "data": <output text>}`` plus our
fields; ``meta.event`` names them: ``script_start``, ``script_output`` (``stream``
``stdout``/``stderr``, ``lines``), ``script_stop`` (``exit_code``, ``duration_seconds``,
``killed``, ``reason``). The caller of ``start_script_execution`` is subscribed before the
process starts (unless it passes ``subscribe: false``), so it misses nothing; others may
subscribe while the script runs, and the last :data:`KEEP_FINISHED` finished runs (with
the tail of their output) stay readable through ``script_status``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from cloudisense.config import ConfigPath, Section
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import DATA_EVENT, TopicProvider

log = logging.getLogger(__name__)


class ScriptsSettings(Section):
    """The scripts folder."""

    folder: ConfigPath | None = None
    time_limit: float = Field(300.0, gt=0, description="seconds before a script is killed")

TOPIC_PREFIX = "/script/"
#: Seconds between SIGTERM and SIGKILL of a script's process group.
KILL_GRACE = 2.0
#: Finished runs kept for late readers.
KEEP_FINISHED = 100
#: Output lines kept per run for ``script_status``.
TAIL_LINES = 200
#: Output published per run; beyond it lines are counted but not sent.
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024
MAX_RUNNING = 16
_CLIENT_STATES = {"script_start": "start", "script_output": "progress", "script_stop": "stop"}
#: Seconds between ``script_output`` batches.
FLUSH_INTERVAL = 0.1

_ID_RE = re.compile(r"^[a-f0-9]{16}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|^CLOUDISENSE_", re.IGNORECASE)

Arg = Annotated[str, StringConstraints(max_length=1024)]


class StartScriptParams(Params):
    """A script file name and its arguments."""

    name: str = Field(min_length=1, max_length=128, description="script file name, e.g. cleanup.sh")
    args: list[Arg] = Field(default_factory=list, max_length=32, description="arguments, each a separate string")
    subscribe: bool = Field(True, description="subscribe the caller to /script/<script_id> before it starts")


class ScriptIdParams(Params):
    """A script run's id."""

    script_id: str = Field(min_length=1, max_length=64, description="the id start_script_execution returned")


@dataclass
class Execution:
    """One run of a script: its process, state and the tail of its output."""

    script_id: str
    name: str
    args: list[str]
    user: str
    command: list[str]
    started: float = field(default_factory=time.time)
    finished: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    killed: bool = False
    reason: str | None = None
    output: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    lines: int = 0
    published_bytes: int = 0
    dropped_lines: int = 0
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None
    killer: asyncio.Task[None] | None = None
    _pending: list[tuple[str, str]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        """Where this run's events go."""
        return TOPIC_PREFIX + self.script_id

    @property
    def running(self) -> bool:
        """Not finished yet."""
        return self.finished is None

    def duration(self) -> float:
        """Seconds run so far (or in total)."""
        return round((self.finished or time.time()) - self.started, 3)

    def describe(self, with_output: bool = True) -> dict[str, Any]:
        """A JSON-ready status."""
        info: dict[str, Any] = {
            "script_id": self.script_id, "name": self.name, "args": self.args, "user": self.user,
            "state": "running" if self.running else "finished", "pid": self.pid,
            "started": int(self.started * 1000), "finished": int(self.finished * 1000) if self.finished else None,
            "duration_seconds": self.duration(), "exit_code": self.exit_code, "killed": self.killed,
            "reason": self.reason, "topic": self.topic, "output_lines": self.lines,
        }
        if with_output:
            info["output"] = list(self.output)
        return info


def script_env(script_id: str) -> dict[str, str]:
    """The server's environment without secrets, plus the run's id."""
    env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}
    env["CLOUDISENSE_SCRIPT_ID"] = script_id
    return env


def kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (gone groups are fine)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ScriptsModule(Module):
    """``list_scripts``, ``start_script_execution``, ``stop_script_execution``, ``script_status``."""

    name = "scripts"
    settings_model = ScriptsSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self._runs: OrderedDict[str, Execution] = OrderedDict()
        #: Seconds between SIGTERM and SIGKILL (an attribute so tests can shorten it).
        self.kill_grace = KILL_GRACE
        self._background: set[asyncio.Task[None]] = set()  # held so they are not garbage-collected

    # -- the folder -------------------------------------------------------

    @property
    def folder(self) -> Path | None:
        """The configured scripts folder (absolute), or ``None``."""
        folder = self.settings.folder
        return folder.expanduser().absolute() if folder else None

    def _scan(self) -> list[dict[str, Any]]:
        folder = self.folder
        if folder is None or not folder.is_dir():
            return []
        real_folder = folder.resolve()
        found = []
        for entry in sorted(folder.iterdir()):
            if not _NAME_RE.match(entry.name):
                continue
            try:
                real = entry.resolve()
                if not real.is_relative_to(real_folder) or not real.is_file():
                    continue  # symlinks out of the folder and sub-folders are not scripts
                st = real.stat()
                with open(real, "rb") as f:
                    shebang = f.read(2) == b"#!"
            except (OSError, RuntimeError):
                continue
            executable = bool(st.st_mode & 0o111) and os.access(real, os.X_OK)
            runner = "direct" if shebang and executable else "sh" if entry.name.endswith(".sh") else None
            found.append({"name": entry.name, "size": st.st_size, "executable": executable,
                          "runs_with": runner, "mtime": int(st.st_mtime * 1000)})
        return found

    def entities(self) -> dict[str, list[str]]:
        try:
            return {"script": [s["name"] for s in self._scan() if s["runs_with"]]}
        except OSError:
            return {"script": []}

    def resolve(self, name: str) -> tuple[Path, list[str]]:
        """The script file behind ``name`` and the argument list that runs it."""
        folder = self.folder
        if folder is None:
            raise Unavailable("no scripts folder is configured; set [scripts] folder in the config file")
        if "/" in name or "\\" in name or ".." in name or "\x00" in name or not _NAME_RE.match(name):
            raise BadRequest(f"invalid script name {name!r}: give a file name from list_scripts, not a path")
        path = folder / name
        if not path.is_file():
            known = ", ".join(s["name"] for s in self._scan()) or "none"
            raise NotFound(f"no script {name!r} in {folder}; available: {known}")
        real = path.resolve()
        if not real.is_relative_to(folder.resolve()):
            raise Forbidden(f"script {name!r} is refused: it resolves to a file outside the scripts folder")
        with open(real, "rb") as f:
            shebang = f.read(2) == b"#!"
        if shebang and os.access(real, os.X_OK):
            return real, [str(real)]
        if name.endswith(".sh"):
            return real, ["/bin/sh", str(real)]
        raise BadRequest(f"script {name!r} can't be run: give it a #! line and the executable bit, "
                         "or name it .sh to run it with /bin/sh")

    # -- intents ----------------------------------------------------------

    def intents(self) -> list[Intent]:
        script = {"name": "script"}
        return [
            Intent("list_scripts", "The scripts this node can run, with sizes and executable bits",
                   self.list_scripts, NoParams, Risk.READ,
                   ("which scripts are there", "list scripts", "what maintenance scripts can you run",
                    "show the available scripts", "is any script running")),
            Intent("start_script_execution", "Run a script from the scripts folder; output streams to "
                   "/script/<script_id>", self.start_script, StartScriptParams, Risk.WRITE,
                   ("run the cleanup script", "start backup.sh", "rotate the logs",
                    "execute cleanup.sh with --dry-run", "kick off a backup now",
                    "run rotate-logs.sh"),
                   entities=script, say=_say_started),
            Intent("stop_script_execution", "Stop a running script and everything it started",
                   self.stop_script, ScriptIdParams, Risk.WRITE,
                   ("stop the script", "kill the running backup", "abort script 3f9c0a1b2c3d4e5f",
                    "cancel that cleanup run")),
            Intent("script_status", "State, exit code and last output lines of a script run",
                   self.script_status, ScriptIdParams, Risk.READ,
                   ("did the backup finish", "status of the script run", "what did the cleanup script print",
                    "show the output of script 3f9c0a1b2c3d4e5f")),
        ]

    async def list_scripts(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        scripts = await asyncio.to_thread(self._scan)
        running = [r.describe(with_output=False) for r in self._runs.values() if r.running]
        return {"folder": str(self.folder) if self.folder else None, "scripts": scripts,
                "count": len(scripts), "running": running}

    async def start_script(self, p: StartScriptParams, ctx: ActionContext) -> dict[str, Any]:
        if any("\x00" in a for a in p.args):
            raise BadRequest("params.args: arguments must not contain NUL")
        path, command = await asyncio.to_thread(self.resolve, p.name)
        if sum(1 for r in self._runs.values() if r.running) >= MAX_RUNNING:
            raise TooManyRequests(f"{MAX_RUNNING} scripts are running already; wait for one to finish or stop one")
        run = Execution(secrets.token_hex(8), p.name, list(p.args), ctx.user, command + list(p.args))
        self._runs[run.script_id] = run
        if p.subscribe:
            await self.node.pubsub.subscribe(run.topic, ctx.client)
        try:
            run.proc = await asyncio.create_subprocess_exec(
                *run.command, cwd=str(path.parent), env=script_env(run.script_id),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)  # its own process group: a kill reaches its children
        except OSError as exc:
            run.finished, run.reason, run.exit_code = time.time(), f"failed to start: {exc.strerror}", None
            run.done.set()
            self._publish(run, "script_stop", self._stop_data(run))
            self._trim()
            return {"script_id": run.script_id, "topic": run.topic, "state": "finished", "reason": run.reason}
        run.pid = run.proc.pid
        self._publish(run, "script_start", {"script_id": run.script_id, "name": run.name, "args": run.args,
                                            "pid": run.pid, "user": run.user, "started": int(run.started * 1000)})
        run.task = asyncio.create_task(self._supervise(run), name=f"script-{run.script_id}")
        return {"script_id": run.script_id, "name": run.name, "topic": run.topic, "pid": run.pid,
                "state": "running", "time_limit": self.settings.time_limit}

    async def stop_script(self, p: ScriptIdParams, ctx: ActionContext) -> dict[str, Any]:
        run = self._get(p.script_id)
        if not run.running:
            raise Conflict(f"script run {p.script_id} already finished ({run.reason}); see script_status")
        await self._terminate(run, f"stopped by {ctx.user}")
        await run.done.wait()
        return run.describe(with_output=False)

    async def script_status(self, p: ScriptIdParams, ctx: ActionContext) -> dict[str, Any]:
        return self._get(p.script_id).describe()

    def _get(self, script_id: str) -> Execution:
        run = self._runs.get(script_id)
        if run is None:
            raise NotFound(f"no script run {script_id!r}; start_script_execution returns the ids "
                           f"(the last {KEEP_FINISHED} finished runs are kept)")
        return run

    # -- running ----------------------------------------------------------

    def _publish(self, run: Execution, name: str, data: dict[str, Any]) -> None:
        # On the wire: the existing client's data_generated {script, state, data}; our name rides in meta.event.
        text = "".join(f"{line}\n" for line in data.get("lines", ()))
        wire = {"script": run.name, "state": _CLIENT_STATES[name], "data": text, **data}
        self.node.pubsub.publish(run.topic, DATA_EVENT, wire, kind=name)

    def _stop_data(self, run: Execution) -> dict[str, Any]:
        return {"script_id": run.script_id, "name": run.name, "exit_code": run.exit_code,
                "duration_seconds": run.duration(), "killed": run.killed, "reason": run.reason,
                "dropped_lines": run.dropped_lines}

    async def _read_stream(self, run: Execution, stream: asyncio.StreamReader, label: str) -> None:
        partial = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            parts = (partial + chunk).split(b"\n")
            partial = parts.pop()
            while len(partial) > MAX_LINE_BYTES:  # a line without end: pass it on in pieces
                parts.append(partial[:MAX_LINE_BYTES])
                partial = partial[MAX_LINE_BYTES:]
            for raw in parts:
                self._add_line(run, label, raw)
        if partial:
            self._add_line(run, label, partial)

    def _add_line(self, run: Execution, label: str, raw: bytes) -> None:
        text = raw[:MAX_LINE_BYTES].rstrip(b"\r").decode("utf-8", errors="replace")
        run.lines += 1
        run.output.append({"stream": label, "line": text})
        if run.published_bytes >= MAX_OUTPUT_BYTES:
            run.dropped_lines += 1
            return
        run.published_bytes += len(raw) + 1
        run._pending.append((label, text))

    def _flush(self, run: Execution) -> None:
        """Publish pending lines, one ``script_output`` per stretch of one stream (order kept)."""
        pending, run._pending = run._pending, []
        batch: list[str] = []
        label = None
        for stream, text in pending:
            if stream != label and batch:
                self._publish(run, "script_output", {"script_id": run.script_id, "stream": label, "lines": batch})
                batch = []
            label = stream
            batch.append(text)
        if batch:
            self._publish(run, "script_output", {"script_id": run.script_id, "stream": label, "lines": batch})

    async def _supervise(self, run: Execution) -> None:
        proc = run.proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        readers = [asyncio.create_task(self._read_stream(run, proc.stdout, "stdout")),
                   asyncio.create_task(self._read_stream(run, proc.stderr, "stderr"))]
        limit = self.settings.time_limit
        deadline = asyncio.get_running_loop().time() + limit
        waiter = asyncio.create_task(proc.wait())
        try:
            while not waiter.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 and run.stop_reason is None:
                    await self._terminate(run, f"time limit of {limit:g} s reached")
                pause = min(FLUSH_INTERVAL, remaining) if remaining > 0 else FLUSH_INTERVAL
                await asyncio.wait({waiter}, timeout=pause)
                self._flush(run)
            # Give the pipes a moment to drain; a child that keeps them open is left to itself.
            _, pending = await asyncio.wait(readers, timeout=1.0)
            for task in pending:
                task.cancel()
        except asyncio.CancelledError:  # the node is stopping
            await self._terminate(run, "server stopping")
            for task in readers:
                task.cancel()
            raise
        finally:
            if run.killer is not None:  # the stop event says killed only once the whole group is gone
                await asyncio.shield(run.killer)
            self._flush(run)
            run.exit_code = proc.returncode
            run.finished = time.time()
            run.killed = run.stop_reason is not None
            if run.reason is None:
                exited = "exited" if run.exit_code == 0 else f"exited with code {run.exit_code}"
                run.reason = run.stop_reason or exited
            self._publish(run, "script_stop", self._stop_data(run))
            run.done.set()
            self._trim()

    async def _terminate(self, run: Execution, reason: str) -> None:
        """SIGTERM the run's group, SIGKILL it after the grace period (in the background)."""
        if run.pid is None or run.stop_reason is not None:
            return
        run.stop_reason = reason
        kill_group(run.pid, signal.SIGTERM)

        async def finish() -> None:
            proc = run.proc
            if proc is not None:
                try:
                    await asyncio.wait_for(proc.wait(), self.kill_grace)
                except TimeoutError:
                    pass
            # Children that outlived the script, or ignored SIGTERM, go now.
            kill_group(run.pid, signal.SIGKILL)  # type: ignore[arg-type]

        run.killer = asyncio.get_running_loop().create_task(finish())

    def _trim(self) -> None:
        finished = [sid for sid, r in self._runs.items() if not r.running]
        for sid in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            run = self._runs.pop(sid)
            if self.node.pubsub.subscribers(run.topic):
                task = asyncio.get_running_loop().create_task(self._drop_topic(run.topic))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _drop_topic(self, topic: str) -> None:
        try:
            await self.node.pubsub.remove_channel(topic)
        except Exception:  # already gone
            pass

    # -- topics and lifecycle ---------------------------------------------

    def _accepts(self, topic: str) -> bool:
        script_id = topic[len(TOPIC_PREFIX):]
        return bool(_ID_RE.match(script_id)) and script_id in self._runs

    async def start(self) -> None:
        self.node.pubsub.add_provider(TopicProvider(TOPIC_PREFIX, self._accepts))

    async def stop(self) -> None:
        tasks = [r.task for r in self._runs.values() if r.task and not r.task.done()]
        for run in self._runs.values():
            if run.running:
                await self._terminate(run, "server stopping")
        if tasks:
            await asyncio.wait(tasks, timeout=self.kill_grace + 2)
        for run in self._runs.values():
            if run.running and run.pid is not None:
                kill_group(run.pid, signal.SIGKILL)


__all__ = ["KILL_GRACE", "TOPIC_PREFIX", "Execution", "ScriptIdParams", "ScriptsModule", "StartScriptParams"]


# -- how results read in words (Intent.say) -----------------------------------------------------

def _say_started(p: Any, d: dict[str, Any]) -> str:
    sid = d.get("script_id", "?")
    return f"started {p.get('name')} as run {sid}; its output streams on /script/{sid}"
