"""The reaction engine: rules that run an intent when an event arrives or a cron time comes.

Rules live as ``<id>.json`` files in ``[rules] folder`` (format: :mod:`rules_model`; ours and
CloudiSENSE's, each written back in its own format).

``list_rules`` answers the existing client's array of ``{id, description, enabled, subject,
trigger}`` (``head=true``: id, description, enabled only); ``list_rules {"details": true}``
answers every rule in full with its counters, and the files that were refused.

- Data-driven rules listen to a topic; a pub/sub listener checks each published event against
  them and schedules the response as a task (the publisher is never blocked).
- Time-driven rules (``"listen-to": "{time}"``) are run by one scheduler task that sleeps until
  the next cron time of any rule (6-field crons have seconds resolution).
- A response goes through the MessageRouter like any client's request: an
  :class:`InProcessClient` of kind ``reaction`` acting as the system user ``reactions`` with role
  ``operator``, so roles, policy gates and the audit log (``client_kind = "reaction"``) apply.
- Cooldown: after a firing a rule ignores (and counts as ``suppressed``) matching events for
  ``response.cooldown`` seconds, or ``[rules] default_cooldown`` for a data-driven rule that sets
  neither a cooldown nor a behaviour: a lasting condition fires once per cooldown, not per event.
- Loop guard: each rule fires at most ``max_firings_per_minute`` times in any 60 s window; extra
  firings are skipped and counted. Every firing and skip is published on ``/reactions``
  (``rule_fired`` / ``rule_skipped``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from cloudisense.config import ConfigPath, Section
from cloudisense.core import protocol
from cloudisense.core.clients import InProcessClient
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Conflict, NotFound, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role
from cloudisense.modules.rules_model import RULE_ID_PATTERN, Rule, matches, next_fire, render, sample_rule

log = logging.getLogger(__name__)


class RulesSettings(Section):
    """The reaction engine."""

    folder: ConfigPath | None = None
    #: At most this many firings of one rule per minute (loop guard).
    max_firings_per_minute: int = Field(30, ge=1)
    default_cooldown: float = Field(0.0, ge=0, le=7 * 24 * 3600, description=(
        "seconds a data-driven rule with no cooldown or behaviour of its own waits after firing "
        "(0: it fires on every matching event)"))

REACTIONS_TOPIC = "/reactions"
#: The system user rule responses act as (recorded in the audit log).
REACTION_USER = "reactions"
MAX_RULE_BYTES = 256 * 1024


class ListRulesParams(Params):
    """Whether to list only the heads of rules, or everything about them."""

    head: bool = Field(False, description="only id, description and enabled")
    details: bool = Field(False, description="every rule in full, with counters and refused files")


def _say_rules(p: Any, data: Any) -> str:
    """``list_rules`` in words, for either shape."""
    items = data if isinstance(data, list) else data.get("rules", []) if isinstance(data, dict) else []
    rows = [f"{r.get('id')} ({'enabled' if r.get('enabled') else 'disabled'})" for r in items if isinstance(r, dict)]
    return "rules: " + (", ".join(rows) or "none")


class RuleIdParams(Params):
    """One rule by id."""

    rule_id: str = Field(pattern=RULE_ID_PATTERN, max_length=64, description="rule id, e.g. high-cpu")


class WriteRuleParams(Params):
    """A rule to store."""

    rule_data: dict[str, Any] | str = Field(description="the rule as a JSON object (or JSON text)")
    update: bool = Field(False,
                         description="replace an existing rule of the same id (a new rule is created either way)")


@dataclass
class RuleState:
    """A loaded rule and its counters."""

    rule: Rule
    fired: int = 0
    skipped: int = 0
    failed: int = 0
    last_fired: float | None = None
    last_result: dict[str, Any] | None = None
    next_time: float | None = None
    recent: collections.deque[float] = field(default_factory=collections.deque)
    #: A ``sleepy`` rule rests until this monotonic time; a ``once`` rule that fired stays done.
    resting_until: float = 0.0
    done: bool = False
    #: Matching events let pass while the rule cooled down after a firing.
    suppressed: int = 0
    cooling_until: float = 0.0

    def status(self) -> dict[str, Any]:
        """Counters for ``list_rules``/``read_rule``."""
        cooling = max(0.0, self.cooling_until - time.monotonic())
        return {"fired": self.fired, "skipped": self.skipped, "failed": self.failed, "suppressed": self.suppressed,
                "last_fired": self.last_fired, "last_result": self.last_result, "next_time": self.next_time,
                "done": self.done, "cooling_down_seconds": round(cooling, 3)}


class ReactionsModule(Module):
    """Rules CRUD intents, the event listener and the cron scheduler."""

    name = "reactions"
    settings_model = RulesSettings
    settings_section = "rules"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.rules: dict[str, RuleState] = {}
        self.errors: dict[str, str] = {}
        self.client: InProcessClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    # -- module ----------------------------------------------------------

    def intents(self) -> list[Intent]:
        return [
            Intent("list_rules", "List the reaction rules with their state (head=true: only id, description, enabled)",
                   self.list_rules, ListRulesParams, Risk.READ,
                   ("list the reaction rules", "which rules are configured", "show me all automation rules",
                    "what reactions are enabled", "give me just the rule names and descriptions"), say=_say_rules),
            Intent("read_rule", "Show one reaction rule and its firing counters", self.read_rule, RuleIdParams,
                   Risk.READ, ("show the high-cpu rule", "what does rule nightly-backup do",
                               "read rule disk-full", "when does the backup rule fire next"),
                   entities={"rule_id": "rule"}),
            Intent("write_rule", "Create a reaction rule, or replace one with update=true (validated before saving)",
                   self.write_rule, WriteRuleParams, Risk.WRITE,
                   ("create a rule that notifies me when cpu goes above 90",
                    "add a reaction that runs backup.sh every night at 2",
                    "update the high-cpu rule to trigger at 80 percent",
                    "save this rule", "disable the nightly backup rule")),
            Intent("delete_rule", "Delete a reaction rule file", self.delete_rule, RuleIdParams, Risk.DESTRUCTIVE,
                   ("delete the high-cpu rule", "remove rule nightly-backup", "get rid of the disk-full reaction",
                    "drop the sample rule"), entities={"rule_id": "rule"}),
            Intent("reload_rules", "Re-read every rule file from the rules folder", self.reload_rules, NoParams,
                   Risk.WRITE, ("reload the rules", "re-read all reaction rules from disk",
                                "I edited the rule files, pick up the changes", "refresh rules")),
            Intent("reload_rule", "Re-read one rule file from the rules folder", self.reload_rule, RuleIdParams,
                   Risk.WRITE, ("reload the high-cpu rule", "re-read rule nightly-backup from disk",
                                "pick up my changes to the disk-full rule", "refresh rule sample-high-cpu"),
                   entities={"rule_id": "rule"}),
            Intent("generate_sample", "A valid sample reaction rule to start from", self.generate_sample, NoParams,
                   Risk.READ, ("give me a sample rule", "show an example reaction rule",
                               "what does a rule look like", "generate a rule template")),
        ]

    def entities(self) -> dict[str, list[str]]:
        return {"rule": sorted(self.rules)}

    async def start(self) -> None:
        self.node.pubsub.add_static(REACTIONS_TOPIC)
        self._loop = asyncio.get_running_loop()
        self.client = InProcessClient(self.node.router, REACTION_USER, Role.OPERATOR, kind="reaction")
        if self.settings.folder is not None:
            self.settings.folder.mkdir(parents=True, exist_ok=True)
            await self._load_all()
        self.node.pubsub.add_listener(self._on_event)
        self._scheduler = asyncio.create_task(self._schedule(), name="reactions-scheduler")

    async def stop(self) -> None:
        self.node.pubsub.remove_listener(self._on_event)
        tasks = [t for t in [self._scheduler, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- files -----------------------------------------------------------

    def _folder(self) -> Path:
        if self.settings.folder is None:
            raise Unavailable("no rules folder is configured; set [rules] folder in the node's config")
        return self.settings.folder.resolve()

    def _path(self, rule_id: str) -> Path:
        folder = self._folder()
        path = (folder / f"{rule_id}.json")
        if path.is_symlink() or not path.resolve().is_relative_to(folder) or path.resolve().parent != folder:
            raise BadRequest(f"rule {rule_id!r} is not a plain file in the rules folder")
        return path

    def validate(self, data: Any) -> Rule:
        """A checked rule from its JSON form: format, cron, and response intent and parameters."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise BadRequest(f"rule is not valid JSON: {exc}") from None
            except RecursionError:
                raise BadRequest("rule nests too deeply to be read") from None
            if isinstance(data, dict):
                # The same depth and Unicode limits as params sent as an object (rules are rendered recursively).
                protocol.check_params(data)
        if not isinstance(data, dict):
            raise BadRequest("a rule is a JSON object with id, listen-to, trigger and response")
        try:
            rule = Rule.parse(data)
        except ValidationError as exc:
            raise BadRequest("invalid rule: " + protocol.describe_validation_error(exc, "rule")) from None
        intent = self.node.registry.find(rule.response.intent)
        if intent is None:
            hints = self.node.registry.suggest(rule.response.intent)
            hint = f"; did you mean {', '.join(hints)}?" if hints else ""
            raise BadRequest(f"invalid rule: response.intent {rule.response.intent!r} "
                             f"is not an intent of this node{hint}")
        try:
            params = intent.params.model_validate(render(rule.response.parameters, None))
        except ValidationError as exc:
            problems = protocol.describe_validation_error(exc, "response.parameters")
            raise BadRequest("invalid rule: " + problems) from None
        # The intent's module may check the parameters against its configuration too (notify: only
        # configured webhooks), so such a rule is refused when written, not each time it fires.
        check = getattr(self.node.module(intent.module), "check_rule_params", None)
        if check is not None:
            problem = check(intent.name, params)
            if problem:
                raise BadRequest(f"invalid rule: response.parameters: {problem}")
        return rule

    def _read_file(self, path: Path) -> Rule:
        if path.is_symlink():
            raise BadRequest(f"{path.name} is a symbolic link; rules must be plain files")
        if path.stat().st_size > MAX_RULE_BYTES:
            raise BadRequest(f"{path.name} is larger than {MAX_RULE_BYTES} bytes")
        rule = self.validate(path.read_text(encoding="utf-8"))
        if f"{rule.id}.json" != path.name:
            raise BadRequest(f"{path.name} holds rule id {rule.id!r}; name the file {rule.id}.json")
        return rule

    def _install(self, rule: Rule) -> None:
        old = self.rules.get(rule.id)
        state = RuleState(rule)
        if old is not None:  # keep counters (and the loop guard's window) across reloads
            state.fired, state.skipped, state.failed = old.fired, old.skipped, old.failed
            state.suppressed = old.suppressed
            state.last_fired, state.last_result, state.recent = old.last_fired, old.last_result, old.recent
        if rule.timed and rule.enabled and rule.trigger.on_time_object:
            state.next_time = next_fire(rule.trigger.on_time_object.cron, time.time())
        # A rewritten or reloaded rule starts afresh: a "once" rule may fire again, a sleepy one is awake.
        self.rules[rule.id] = state
        self.errors.pop(f"{rule.id}.json", None)
        self._wake.set()

    async def _load_all(self) -> dict[str, Any]:
        folder = self._folder()
        files = await asyncio.to_thread(lambda: sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")))
        loaded: dict[str, Rule] = {}
        errors: dict[str, str] = {}
        for path in files:
            try:
                rule = await asyncio.to_thread(self._read_file, path)
                loaded[rule.id] = rule
            except (BadRequest, OSError, UnicodeDecodeError) as exc:
                errors[path.name] = getattr(exc, "message", str(exc))
                log.warning("rule file %s refused: %s", path.name, errors[path.name])
        for rule_id in set(self.rules) - set(loaded):
            del self.rules[rule_id]
        for rule in loaded.values():
            self._install(rule)
        self.errors = errors
        self._wake.set()
        return {"loaded": sorted(loaded), "errors": errors}

    # -- intents ---------------------------------------------------------

    async def list_rules(self, p: ListRulesParams, ctx: ActionContext) -> list[dict[str, Any]] | dict[str, Any]:
        self._folder()
        states = [self.rules[k] for k in sorted(self.rules)]
        if p.details:
            return {"rules": [{**s.rule.to_json(), "status": s.status()} for s in states], "errors": dict(self.errors)}
        if p.head:
            return [s.rule.head() for s in states]
        return [s.rule.summary() for s in states]

    async def read_rule(self, p: RuleIdParams, ctx: ActionContext) -> dict[str, Any]:
        self._path(p.rule_id)
        state = self.rules.get(p.rule_id)
        if state is None:
            raise NotFound(self._missing(p.rule_id))
        return {"rule": state.rule.to_json(), "status": state.status()}

    async def write_rule(self, p: WriteRuleParams, ctx: ActionContext) -> dict[str, Any]:
        rule = self.validate(p.rule_data)
        async with self._lock:
            path = self._path(rule.id)
            exists = path.exists()
            if exists and not p.update:
                raise Conflict(f"rule {rule.id!r} already exists; pass update=true to replace it")
            text = json.dumps(rule.to_json(), indent=2) + "\n"
            await asyncio.to_thread(_atomic_write, path, text)
            self._install(rule)
        return {"rule_id": rule.id, "created": not exists, "updated": exists, "rule": rule.to_json()}

    async def delete_rule(self, p: RuleIdParams, ctx: ActionContext) -> dict[str, Any]:
        async with self._lock:
            path = self._path(p.rule_id)
            if not path.exists():
                raise NotFound(self._missing(p.rule_id))
            await asyncio.to_thread(path.unlink)
            self.rules.pop(p.rule_id, None)
            self.errors.pop(path.name, None)
            self._wake.set()
        return {"rule_id": p.rule_id, "deleted": True}

    async def reload_rules(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        async with self._lock:
            return await self._load_all()

    async def reload_rule(self, p: RuleIdParams, ctx: ActionContext) -> dict[str, Any]:
        async with self._lock:
            path = self._path(p.rule_id)
            if not path.exists():
                self.rules.pop(p.rule_id, None)
                self._wake.set()
                raise NotFound(f"no file {path.name} in the rules folder (the rule is unloaded)")
            try:
                rule = await asyncio.to_thread(self._read_file, path)
            except BadRequest as exc:  # what runs is what is on disk: an invalid file unloads its rule
                self.errors[path.name] = exc.message
                self.rules.pop(p.rule_id, None)
                self._wake.set()
                raise BadRequest(f"{exc.message} (rule {p.rule_id!r} is unloaded until the file is fixed)") from None
            self._install(rule)
        return {"rule_id": rule.id, "reloaded": True, "rule": rule.to_json()}

    async def generate_sample(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        if "simple_http_notify" in self.node.registry:
            sample = sample_rule("simple_http_notify", {"message": "CPU at {{data.system.cpu.percent}}% on this node"})
        else:
            sample = sample_rule("publish_channel", {"topic": "/notification",
                                                     "message": "CPU at {{data.system.cpu.percent}}% on this node"})
        self.validate(sample)  # the sample always fits this node's intents
        return {"rule": sample, "hint": "change id and description, set enabled to true, save with write_rule"}

    def _missing(self, rule_id: str) -> str:
        known = ", ".join(sorted(self.rules)) or "none"
        return f"no rule {rule_id!r} (rules: {known})"

    # -- firing ----------------------------------------------------------

    def _on_event(self, message: dict[str, Any]) -> None:
        """Pub/sub listener: only matching and scheduling here, never waiting."""
        if self._loop is not None and not _on_loop(self._loop):  # published from a worker thread
            self._loop.call_soon_threadsafe(self._on_event, message)
            return
        topic = message.get("topic")
        for state in list(self.rules.values()):
            rule = state.rule
            trig = rule.trigger.on_payload_object
            if not rule.enabled or trig is None or rule.listen_to != topic:
                continue
            try:
                hit = matches(trig, message, rule.trigger.evaluator_pattern)
            except Exception:  # a weird payload must not break the publisher
                log.debug("rule %s could not evaluate an event", rule.id, exc_info=True)
                continue
            if hit:
                self._spawn(state, message, "event")

    def _spawn(self, state: RuleState, event: dict[str, Any] | None, cause: str) -> None:
        now = time.monotonic()
        rule = state.rule
        # The rule's own behaviour first: a resting or finished rule lets the event pass silently.
        if state.done or now < state.resting_until:
            return
        if now < state.cooling_until:
            state.suppressed += 1
            return
        cooldown = self.cooldown_of(rule)
        if cooldown:
            state.cooling_until = now + cooldown
        if rule.response.behaviour == "once":
            state.done = True
        elif rule.response.behaviour == "sleepy" and rule.response.sleep:
            state.resting_until = now + rule.response.sleep / 1000
        while state.recent and now - state.recent[0] >= 60:
            state.recent.popleft()
        if len(state.recent) >= self.settings.max_firings_per_minute:
            state.skipped += 1
            self.node.pubsub.publish(REACTIONS_TOPIC, "rule_skipped", {
                "rule_id": rule.id, "cause": cause, "skipped": state.skipped,
                "reason": f"more than {self.settings.max_firings_per_minute} firings in a minute"})
            return
        state.recent.append(now)
        task = asyncio.get_running_loop().create_task(self._fire(state, event, cause), name=f"rule-{rule.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cooldown_of(self, rule: Rule) -> float:
        """Seconds the rule waits after firing: its own cooldown, else the default for data-driven rules
        that chose no behaviour (once and sleepy rules already say how often they fire)."""
        if rule.response.cooldown is not None:
            return rule.response.cooldown
        if rule.timed or rule.response.behaviour in ("once", "sleepy"):
            return 0.0
        return float(self.settings.default_cooldown)

    async def _fire(self, state: RuleState, event: dict[str, Any] | None, cause: str) -> None:
        rule = state.rule
        assert self.client is not None
        params = render(rule.response.parameters, event)
        state.fired += 1
        state.last_fired = time.time()
        try:
            response = await self.client.call(rule.response.intent, params)
        except Exception as exc:
            log.exception("rule %s could not run %s", rule.id, rule.response.intent)
            response = {"status": "error", "code": 500, "message": str(exc)}
        ok = response.get("status") == "success"
        if not ok:
            state.failed += 1
        result = {"status": response.get("status"), "code": response.get("code")}
        if not ok:
            result["message"] = response.get("message")
        state.last_result = result
        self.node.pubsub.publish(REACTIONS_TOPIC, "rule_fired", {
            "rule_id": rule.id, "cause": cause, "topic": event.get("topic") if event else None,
            "intent": rule.response.intent, "requestid": response.get("requestid"), **result})

    async def _schedule(self) -> None:
        """Sleep until the earliest next cron time, fire what is due, repeat (woken on rule changes)."""
        while True:
            now = time.time()
            upcoming: list[float] = []
            for state in list(self.rules.values()):
                trig = state.rule.trigger.on_time_object
                if trig is None or not state.rule.enabled or state.next_time is None:
                    continue
                if state.next_time <= now:
                    self._spawn(state, None, "time")
                    # recurring: false fires only at the first matching time.
                    state.next_time = None if trig.recurring is False else next_fire(trig.cron, now)
                    if state.next_time is None:
                        continue
                upcoming.append(state.next_time)
            delay = min(upcoming, default=now + 60) - time.time()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, min(delay, 60.0)))
            except TimeoutError:
                pass


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temp file next to ``path`` and rename it over: never a half-written rule."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
