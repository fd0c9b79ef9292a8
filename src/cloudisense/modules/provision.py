"""Provisioning with Ansible: list the playbooks of ``[provision] folder`` and run them.

``run_playbook`` starts ``ansible-playbook`` from the node's own virtual environment (next to
``sys.executable``), as an argument list in a new process group, with the inventory of
``[provision] inventory``. Output streams while it runs: a bundled stdout callback
(``ansible_callback/cloudisense_jsonl.py``) writes one JSON line per event (task start, per-host
result, diff, final recap), so both the stream and the per-host summary are exact, with no
screen-text parsing. Each line goes out as a ``provision_output`` event on
``/provision/<run_id>`` (and to the calling client directly, so it sees the stream without
subscribing); ``provision_done`` ends it. ``/provision`` announces ``provision_started`` and
``provision_done`` of every run (with the ``run_id`` to subscribe to).

The RPC result summarises per host ok/changed/failed/unreachable/skipped and, in check mode
(``--check --diff``), lists the diff of what would change. Host failures are reported in the
result (``ok: false``, ``failures``); an ansible-playbook that could not run at all (bad playbook
syntax, missing inventory) is an ``ActionFailed`` error with its messages.

Safety: playbook names are plain ``*.yml``/``*.yaml`` files of the folder (no paths, no symlinks
out); ``extra_vars`` keys are identifiers, ``ansible_*`` connection variables are reserved for
the inventory, and values may not hold Jinja templates (they would run on the controller); they
are passed in a private file (``-e @file``), not on the command line. ``limit`` is a host pattern
without spaces or shell characters. A run is killed after ``[provision] time_limit`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from cloudisense.config import ConfigPath, Section
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import ActionFailed, BadRequest, Conflict, Forbidden, NotFound, RequestTimeout, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import TopicProvider

log = logging.getLogger(__name__)


class ProvisionSettings(Section):
    """Ansible provisioning."""

    folder: ConfigPath | None = None
    inventory: ConfigPath | None = None
    time_limit: float = Field(900.0, gt=0)

PROVISION_TOPIC = "/provision"
CALLBACK_DIR = Path(__file__).with_name("ansible_callback")
PLAYBOOK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,120}\.ya?ml$"
#: Host patterns: names, groups, wildcards, ranges, ``:`` ``,`` ``!`` ``&`` (no shell is used, but
#: nothing else is needed); no leading ``-`` (an option) or ``@`` (a limit file).
LIMIT_PATTERN = r"^[A-Za-z0-9_.*\[\]!&][A-Za-z0-9_.*\[\]!&:,\-]{0,255}$"
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TEMPLATE_MARKS = ("{{", "{%", "{#")
_SECRET_ENV = ("SECRET", "PASSWORD", "TOKEN", "API_KEY", "APIKEY")
MAX_EXTRA_VARS_BYTES = 64 * 1024
MAX_PLAYBOOK_BYTES = 1024 * 1024
KILL_GRACE = 5.0


class RunPlaybookParams(Params):
    """Which playbook to run, how, and where."""

    name: str = Field(pattern=PLAYBOOK_PATTERN, description="playbook file name, e.g. nginx.yml")
    extra_vars: dict[str, Any] = Field(default_factory=dict,
                                       description="variables for the playbook, e.g. {\"listen_port\": 8088}")
    check: bool = Field(False, description="dry run: report what would change (with a diff), change nothing")
    limit: str | None = Field(None, pattern=LIMIT_PATTERN, description="host pattern, e.g. web1 or webservers:!db")

    @field_validator("extra_vars")
    @classmethod
    def _vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not _VAR_RE.match(key):
                raise ValueError(f"variable name {key!r} must be an identifier (letters, digits, _)")
            if key.lower().startswith("ansible_"):
                raise ValueError(f"{key!r} is reserved: connection variables belong in the inventory")
        _no_templates(value, "extra_vars")
        if len(json.dumps(value)) > MAX_EXTRA_VARS_BYTES:
            raise ValueError(f"extra_vars is larger than {MAX_EXTRA_VARS_BYTES} bytes")
        return value


def _no_templates(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _no_templates(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_templates(v, f"{where}.{i}")
    elif isinstance(value, str) and any(mark in value for mark in _TEMPLATE_MARKS):
        raise ValueError(f"{where}: Jinja templates ({{{{ }}}}, {{% %}}) are not allowed in values")


def _play_info(path: Path) -> list[dict[str, Any]]:
    """Names and hosts of a playbook's plays (empty when it can't be read cheaply)."""
    try:
        import yaml

        if path.stat().st_size > MAX_PLAYBOOK_BYTES:
            return []
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # a broken playbook is still listed; ansible reports its error when run
        return []
    if not isinstance(doc, list):
        return []
    plays = []
    for play in doc:
        if isinstance(play, dict) and ("hosts" in play or "name" in play):
            plays.append({"name": play.get("name"), "hosts": play.get("hosts")})
        elif isinstance(play, dict) and "import_playbook" in play:
            plays.append({"import_playbook": play["import_playbook"]})
    return plays


def _forces_real_run(path: Path) -> bool:
    """Whether the playbook sets ``check_mode`` to anything but true somewhere.

    A task with ``check_mode: false`` runs for real even under ``--check``, and check mode is
    ``read`` risk (viewers may run it, the assistant's policy may allow it): such a playbook
    can't be offered as a dry run. Only this file is read, not the roles or files it includes.
    A file too large to check counts as forcing; one that is not YAML can't run at all.
    """
    try:
        import yaml

        if path.stat().st_size > MAX_PLAYBOOK_BYTES:
            return True
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # ansible-playbook refuses it too, with a better message
        return False
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "check_mode" in value and value["check_mode"] is not True:
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


class Run:
    """What one ansible-playbook run has reported so far."""

    def __init__(self, run_id: str, playbook: str, check: bool) -> None:
        self.run_id = run_id
        self.playbook = playbook
        self.check = check
        self.stats: dict[str, dict[str, int]] | None = None
        self.diffs: list[dict[str, str]] = []
        self.failures: list[dict[str, Any]] = []
        self.text: deque[str] = deque(maxlen=40)  # raw lines (errors and warnings) for messages

    def take(self, stream: str, raw: str) -> dict[str, Any]:
        """Digest one output line; returns the ``provision_output`` event data."""
        event: dict[str, Any] | None = None
        if stream == "stdout" and raw.startswith("{"):
            try:
                parsed = json.loads(raw)
                event = parsed if isinstance(parsed, dict) and "event" in parsed else None
            except ValueError:
                event = None
        if event is None:
            self.text.append(raw)
            return {"run_id": self.run_id, "stream": stream, "line": raw}
        kind = event["event"]
        if kind == "stats":
            self.stats = event.get("hosts", {})
        elif kind == "diff":
            self.diffs.append({"host": event.get("host", ""), "task": event.get("task", ""),
                               "diff": event.get("diff", "")})
        elif kind in ("failed", "unreachable") and not event.get("ignored"):
            self.failures.append({k: event.get(k) for k in ("host", "task", "msg")} | {"kind": kind})
        return {"run_id": self.run_id, "stream": stream, "line": _line(event), "event": event}


def _line(event: dict[str, Any]) -> str:
    """The screen line of a callback event."""
    kind = event["event"]
    if kind == "play_start":
        return f"PLAY [{event.get('play', '')}]"
    if kind == "task_start":
        return f"TASK [{event.get('task', '')}]"
    if kind == "stats":
        return "PLAY RECAP " + "  ".join(
            f"{h}: " + " ".join(f"{k}={v}" for k, v in s.items()) for h, s in event.get("hosts", {}).items())
    if kind == "no_hosts_matched":
        return "skipping: no hosts matched"
    text = f"{kind}: [{event.get('host', '')}] {event.get('task', '')}"
    if event.get("msg"):
        text += f" => {event['msg']}"
    if kind == "diff":
        text += "\n" + event.get("diff", "")
    return text


class ProvisionModule(Module):
    """``list_playbooks`` and ``run_playbook``, streaming on ``/provision/<run_id>``."""

    name = "provision"
    settings_model = ProvisionSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self._active: dict[str, str] = {}  # playbook name -> run id
        self._known: deque[str] = deque(maxlen=200)  # recent run ids (subscribable topics)

    def intents(self) -> list[Intent]:
        return [
            Intent("list_playbooks", "List the Ansible playbooks this node can run, with their plays and hosts",
                   self.list_playbooks, NoParams, Risk.READ,
                   ("which playbooks are there", "list the ansible playbooks", "what can I provision",
                    "show available playbooks", "which hosts does the nginx playbook target")),
            Intent("run_playbook", "Run an Ansible playbook against the inventory (check=true: dry run with a diff)",
                   self.run_playbook, RunPlaybookParams, Risk.DESTRUCTIVE,
                   ("run the nginx playbook", "dry run users.yml and show me what would change",
                    "apply nginx.yml with listen_port 8088", "provision the users on the demo hosts",
                    "check mode for the nginx playbook limited to localhost",
                    "deploy the nginx config again"),
                   read_when={"check": True}, timeout=self.settings.time_limit + KILL_GRACE + 10,
                   entities={"name": "playbook"}, say=_say_playbook),
        ]

    def entities(self) -> dict[str, list[str]]:
        try:
            return {"playbook": [p.name for p in self._playbooks()]}
        except (Unavailable, OSError):
            return {"playbook": []}

    async def start(self) -> None:
        self.node.pubsub.add_static(PROVISION_TOPIC)
        self.node.pubsub.add_provider(TopicProvider(PROVISION_TOPIC + "/", self._accepts))

    def _accepts(self, topic: str) -> bool:
        return topic[len(PROVISION_TOPIC) + 1:] in self._known

    # -- files -----------------------------------------------------------

    def _folder(self) -> Path:
        if self.settings.folder is None:
            raise Unavailable("no playbook folder is configured; set [provision] folder in the node's config")
        folder = self.settings.folder.resolve()
        if not folder.is_dir():
            raise Unavailable(f"the playbook folder {folder} does not exist")
        return folder

    def _playbooks(self) -> list[Path]:
        folder = self._folder()
        found = []
        for path in sorted(folder.iterdir()):
            if re.match(PLAYBOOK_PATTERN, path.name) and self._inside(path, folder):
                found.append(path)
        return found

    @staticmethod
    def _inside(path: Path, folder: Path) -> bool:
        """A regular file that is (or, through symlinks, resolves to) a file of ``folder``."""
        real = path.resolve()
        return real.is_relative_to(folder) and real.is_file()

    def _playbook(self, name: str) -> Path:
        if not re.match(PLAYBOOK_PATTERN, name) or ".." in name:
            raise BadRequest(f"playbook {name!r}: give a file name of the playbook folder ending in .yml or .yaml")
        folder = self._folder()
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(folder):
            raise BadRequest(f"playbook {name!r} links outside the playbook folder; it can't be run")
        if not self._inside(path, folder):
            names = ", ".join(p.name for p in self._playbooks()) or "none"
            raise NotFound(f"no playbook {name!r} (playbooks: {names})")
        return path

    def _inventory(self) -> Path:
        if self.settings.inventory is None:
            raise Unavailable("no inventory is configured; set [provision] inventory in the node's config")
        if not self.settings.inventory.exists():
            raise Unavailable(f"the inventory {self.settings.inventory} does not exist")
        return self.settings.inventory

    @staticmethod
    def _ansible_playbook() -> Path:
        exe = Path(sys.executable).parent / "ansible-playbook"
        if not exe.exists():
            raise Unavailable(f"ansible-playbook is not installed next to {sys.executable}; "
                              "install the provision extra: pip install 'cloudisense[provision]'")
        return exe

    def _env(self, home: Path) -> dict[str, str]:
        """The node's environment without its secrets, plus Ansible settings for unattended runs."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CLOUDISENSE_") and not any(w in k.upper() for w in _SECRET_ENV)}
        plugins = env.get("ANSIBLE_CALLBACK_PLUGINS")
        env.update({
            "ANSIBLE_STDOUT_CALLBACK": "cloudisense_jsonl",
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR) + (os.pathsep + plugins if plugins else ""),
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            # Never wait for a prompt: SSH fails an unknown host key instead of asking.
            "ANSIBLE_SSH_EXTRA_ARGS": "-o BatchMode=yes",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("ANSIBLE_FORCE_COLOR", None)
        return env

    # -- intents ---------------------------------------------------------

    async def list_playbooks(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        def collect() -> list[dict[str, Any]]:
            return [{"name": path.name, "plays": _play_info(path)} for path in self._playbooks()]

        return {"playbooks": await asyncio.to_thread(collect)}

    async def run_playbook(self, p: RunPlaybookParams, ctx: ActionContext) -> dict[str, Any]:
        path = self._playbook(p.name)
        if p.check and await asyncio.to_thread(_forces_real_run, path):
            raise Forbidden(f"{p.name} can't run in check mode: it has tasks with check_mode other than true, "
                            "which would change hosts during a dry run (ask an operator to run it for real)")
        inventory = self._inventory()
        exe = self._ansible_playbook()
        if p.name in self._active:
            raise Conflict(f"{p.name} is already running (run {self._active[p.name]}); wait for it to finish")
        run = Run(uuid.uuid4().hex[:12], p.name, p.check)
        self._active[p.name] = run.run_id
        self._known.append(run.run_id)
        home = self.node.settings.data_dir / "ansible"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        vars_file: Path | None = None
        try:
            argv = [sys.executable, str(exe), "-i", str(inventory), str(path)]
            if p.check:
                argv += ["--check", "--diff"]
            if p.limit:
                argv += ["--limit", p.limit]
            if p.extra_vars:
                vars_file = _private_json(home / "tmp", p.extra_vars)
                argv += ["-e", f"@{vars_file}"]
            return await self._execute(run, argv, self._env(home), path.parent, p, ctx)
        finally:
            self._active.pop(p.name, None)
            if vars_file is not None:
                vars_file.unlink(missing_ok=True)

    async def _execute(self, run: Run, argv: list[str], env: dict[str, str], cwd: Path,
                       p: RunPlaybookParams, ctx: ActionContext) -> dict[str, Any]:
        topic = f"{PROVISION_TOPIC}/{run.run_id}"
        started = time.time()
        head = {"run_id": run.run_id, "topic": topic, "playbook": p.name, "check": p.check, "limit": p.limit,
                "extra_vars": sorted(p.extra_vars), "user": ctx.user}
        self.node.pubsub.publish(PROVISION_TOPIC, "provision_started", head)
        ctx.notify_client("provision_started", topic, head)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=8 * 1024 * 1024)
        status = "error"
        try:
            async with asyncio.timeout(self.settings.time_limit):
                await asyncio.gather(self._pump(proc.stdout, "stdout", run, topic, ctx),
                                     self._pump(proc.stderr, "stderr", run, topic, ctx))
                rc = await proc.wait()
            status = "ok" if rc == 0 else "failed"
        except TimeoutError:
            status = "timeout"
            raise RequestTimeout(f"{p.name} did not finish within {self.settings.time_limit:g} s and was killed "
                                 f"(see {topic} for its output); "
                                 "raise [provision] time_limit if it needs longer") from None
        finally:
            if proc.returncode is None:
                await _kill(proc)
                if status == "error":
                    status = "cancelled"
            done = {"run_id": run.run_id, "playbook": p.name, "status": status, "rc": proc.returncode,
                    "hosts": run.stats, "seconds": round(time.time() - started, 3)}
            self.node.pubsub.publish(topic, "provision_done", done)
            self.node.pubsub.publish(PROVISION_TOPIC, "provision_done", done)
            if topic not in self.node.pubsub.subscriptions(ctx.client):
                ctx.notify_client("provision_done", topic, done)
        if run.stats is None:
            tail = "\n".join(run.text) or "no output"
            raise ActionFailed(f"ansible-playbook could not run {p.name} (exit {rc}): {tail[-2000:]}")
        totals = {k: sum(h[k] for h in run.stats.values()) for k in ("ok", "changed", "failed", "unreachable")}
        result: dict[str, Any] = {
            "run_id": run.run_id, "topic": topic, "playbook": p.name, "check": p.check, "limit": p.limit,
            "ok": rc == 0, "rc": rc, "hosts": run.stats, "changed": totals["changed"], "totals": totals,
            "failures": run.failures, "seconds": done["seconds"],
        }
        if p.check:
            result["diff"] = run.diffs
        return result

    async def _pump(self, stream: asyncio.StreamReader | None, name: str, run: Run, topic: str,
                    ctx: ActionContext) -> None:
        """Publish each line of ``stream`` as it comes."""
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line above the reader's limit: skip it rather than stall
                raw = b"(output line too long; skipped)\n"
            if not raw:
                return
            data = run.take(name, raw.decode("utf-8", "replace").rstrip("\n"))
            self.node.pubsub.publish(topic, "provision_output", data)
            if topic not in self.node.pubsub.subscriptions(ctx.client):
                ctx.notify_client("provision_output", topic, data)


def _private_json(folder: Path, value: dict[str, Any]) -> Path:
    """Write ``value`` to a file only this user can read (extra vars may hold secrets)."""
    fd, name = tempfile.mkstemp(prefix="extra-vars-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(value, fh)
    return Path(name)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Stop the whole process group: TERM, then KILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue


# -- how results read in words (Intent.say) -----------------------------------------------------

def _say_playbook(p: Any, d: dict[str, Any]) -> str:
    mode = "dry run (check mode) of" if p.get("check") else "ran"
    hosts = d.get("hosts") or d.get("summary") or {}
    per_host = "; ".join(f"{h}: " + ", ".join(f"{k} {v}" for k, v in s.items() if isinstance(v, int))
                         for h, s in hosts.items() if isinstance(s, dict))
    return f"{mode} {p.get('name')}: {per_host or 'no host summary'}"
