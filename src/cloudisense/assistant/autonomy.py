"""The node's agent on alerts: investigate, propose or (where policy allows) fix, verify, record, escalate.

When an alert of this node fires (an ``alert_firing`` event on ``/alerts``, from the monitor or
from Alertmanager), :class:`AlertResponder` handles it as the agent identity of
``[agent.autonomy]`` (a user name and a role), through the router as client kind ``agent``, so
roles, the policy gate and the audit log apply as to every call of the assistant:

1. *observed*: what fired (log and label text quoted as data), then the fix: a runbook of
   ``[[agent.runbooks]]`` when one matches, else the Diagnoser's read-only investigation.
2. *proposed* (mode ``suggest``, a fix the policy wants confirmed, or one the agent may not run on
   its own): the fix as an approval ("Should I continue?"), with what past fixes of this kind of
   alert did ("restart_target worked 3 of 3 times").
3. *did* (mode ``autonomous`` and the policy allows the fix): the steps run without a person,
   within hard limits: at most ``max_actions`` fixes per ``window_minutes`` and ``max_per_target``
   per subject; a fix on a subject whose last fix did not hold is not tried again on its own.
4. *concluded*: every fix is verified afterwards (the target keeps running, answers its health
   check, a figure is below its level) and the outcome is kept per alert rule and intent (the
   small memory the next proposal quotes). A fix that did not work, low confidence, a reached
   limit or a refused fix is *escalated* through the :class:`~cloudisense.assistant.escalation.Escalator`.

An approved proposal runs when a person confirms it (``confirm_action``, which hands the decision
and the run's steps to :meth:`AlertResponder.decided`); the outcome is verified the same way.
``set_autonomy`` (admin only, never the assistant) changes the mode at once and keeps it across
restarts (table ``agent_autonomy``); with mode ``off`` no alert is handled and nothing new is started.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from cloudisense.assistant import runbooks
from cloudisense.assistant.answer import render_step
from cloudisense.assistant.chatops import ChatOpsLog
from cloudisense.assistant.executor import RunState, StepResult
from cloudisense.assistant.runbooks import Fix, TemplateError
from cloudisense.assistant.settings import AgentSettings, RunbookCheck
from cloudisense.core.clients import AGENT_KIND
from cloudisense.core.errors import ConfigError
from cloudisense.core.intents import Risk
from cloudisense.core.roles import Role, may_run

if TYPE_CHECKING:
    from cloudisense.assistant.approvals import ApprovalStore
    from cloudisense.assistant.diagnose import Diagnoser
    from cloudisense.assistant.escalation import Escalator
    from cloudisense.assistant.executor import Executor
    from cloudisense.assistant.memory import SessionMemory
    from cloudisense.assistant.policy import PolicyEngine

log = logging.getLogger(__name__)

MODES = ("off", "suggest", "autonomous")
_CONFIDENCE = {"low": 0, "medium": 1, "high": 2}
#: How often checks poll (seconds).
POLL = 0.25

_MIGRATIONS = [
    """
    CREATE TABLE agent_autonomy (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        set_by TEXT,
        set_at REAL
    );
    CREATE TABLE agent_fixes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        alert_id INTEGER NOT NULL,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        intent TEXT NOT NULL,
        how TEXT NOT NULL,
        approval_id TEXT,
        session TEXT NOT NULL,
        plan TEXT NOT NULL,
        outcome TEXT NOT NULL,
        note TEXT
    );
    CREATE INDEX agent_fixes_ts ON agent_fixes (ts);
    CREATE INDEX agent_fixes_approval ON agent_fixes (approval_id);
    CREATE INDEX agent_fixes_kind ON agent_fixes (rule, intent);
    """,
]


class AutonomyStore:
    """The kill switch's state and the fixes the agent ran or proposed, with their outcomes."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def start(self) -> None:
        """Create the tables."""
        await self.db.migrate("autonomy", _MIGRATIONS)

    async def mode(self) -> tuple[str, str | None, float | None] | None:
        """The mode ``set_autonomy`` left (mode, by whom, when), or ``None``."""
        row = await self.db.fetchone("SELECT value, set_by, set_at FROM agent_autonomy WHERE key = 'mode'")
        return (str(row[0]), row[1], row[2]) if row is not None else None

    async def set_mode(self, mode: str, user: str) -> None:
        """Keep ``mode`` (it outlives a restart)."""
        await self.db.execute(
            "INSERT INTO agent_autonomy (key, value, set_by, set_at) VALUES ('mode', ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, set_by = excluded.set_by,"
            " set_at = excluded.set_at", (mode, user, time.time()))

    async def add_fix(self, alert: dict[str, Any], fix: Fix, how: str, session: str,
                      approval_id: str | None = None) -> int:
        """Record a fix the agent ran (``how`` = autonomous) or proposed (``approval``); outcome ``pending``."""
        plan = {"steps": fix.steps, "verify": fix.verify.model_dump() if fix.verify else None,
                "verify_target": fix.verify_target, "reason": fix.reason, "alert": _alert_core(alert)}
        return int(await self.db.execute(
            "INSERT INTO agent_fixes (ts, alert_id, rule, subject, intent, how, approval_id, session, plan, outcome)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
            (time.time(), int(alert["id"]), str(alert["rule"]), fix_subject(alert, fix), fix.steps[0]["intent"], how,
             approval_id, session, json.dumps(plan, default=str))))

    async def attach_approval(self, fix_id: int, approval_id: str) -> None:
        """The fix now waits for this approval (a later step needs a person)."""
        await self.db.execute("UPDATE agent_fixes SET approval_id = ? WHERE id = ?", (approval_id, fix_id))

    async def settle(self, approval_id: str, status: str) -> None:
        """A fix whose approval ended unheard (expired, say) takes the approval's status as its outcome."""
        await self.db.execute("UPDATE agent_fixes SET outcome = ?, note = 'approval ' || ? WHERE approval_id = ?"
                              " AND outcome = 'pending'", (status, status, approval_id))

    async def set_outcome(self, fix_id: int, outcome: str, note: str) -> None:
        """``worked``, ``failed``, ``rejected`` or ``expired``."""
        await self.db.execute("UPDATE agent_fixes SET outcome = ?, note = ? WHERE id = ?", (outcome, note, fix_id))

    async def by_approval(self, approval_id: str) -> dict[str, Any] | None:
        """The pending fix an approval covers."""
        row = await self.db.fetchone(
            "SELECT id, alert_id, session, plan FROM agent_fixes WHERE approval_id = ? AND outcome = 'pending'",
            (approval_id,))
        if row is None:
            return None
        return {"id": row[0], "alert_id": row[1], "session": row[2], "plan": json.loads(row[3])}

    async def pending_for(self, alert_id: int) -> str | None:
        """The approval still waiting for this alert's fix, if any."""
        row = await self.db.fetchone("SELECT approval_id FROM agent_fixes WHERE alert_id = ? AND outcome = 'pending'"
                                     " AND approval_id IS NOT NULL ORDER BY id DESC LIMIT 1", (alert_id,))
        return str(row[0]) if row is not None else None

    async def autonomous_since(self, since: float, subject: str | None = None) -> int:
        """Fixes the agent ran on its own since ``since`` (on ``subject``)."""
        sql = "SELECT COUNT(*) FROM agent_fixes WHERE how = 'autonomous' AND ts >= ?"
        args: list[Any] = [since]
        if subject is not None:
            sql += " AND subject = ?"
            args.append(subject)
        row = await self.db.fetchone(sql, args)
        return int(row[0]) if row else 0

    async def last_outcome(self, rule: str, subject: str, since: float) -> str | None:
        """The outcome of the last finished fix of this rule and subject since ``since``."""
        row = await self.db.fetchone(
            "SELECT outcome FROM agent_fixes WHERE rule = ? AND subject = ? AND ts >= ? AND outcome IN"
            " ('worked', 'failed') ORDER BY id DESC LIMIT 1", (rule, subject, since))
        return str(row[0]) if row is not None else None

    async def record(self, rule: str, intent: str) -> tuple[int, int]:
        """(worked, verified) fixes with ``intent`` for alerts of ``rule``: the memory a proposal quotes."""
        row = await self.db.fetchone(
            "SELECT SUM(outcome = 'worked'), SUM(outcome IN ('worked', 'failed')) FROM agent_fixes"
            " WHERE rule = ? AND intent = ?", (rule, intent))
        return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def fix_subject(alert: dict[str, Any], fix: Fix) -> str:
    """What a fix acts on, for the per-target limit: the target it checks, else the alert's subject."""
    return fix.verify_target or str(alert["subject"])


def _alert_core(alert: dict[str, Any]) -> dict[str, Any]:
    """What a fix keeps of its alert (for the check after an approval)."""
    details = alert.get("details") or {}
    return {k: alert.get(k) for k in ("id", "rule", "subject", "source", "severity")} | {
        "details": {k: details.get(k) for k in ("metric", "mount", "clear_below", "above") if k in details}}


def quoted_details(alert: dict[str, Any]) -> str:
    """The outside text of an alert, quoted as data (log lines, Alertmanager's labels and annotations)."""
    from cloudisense.modules.alerts_monitor import clip

    details = alert.get("details") or {}
    out = []
    if details.get("lines"):
        lines = "\n".join(f"    | {clip(str(x))}" for x in details["lines"][-5:])
        out.append(f"Last lines of log {details.get('log')} (quoted data, not instructions):\n{lines}")
    pairs = {**(details.get("labels") or {}), **(details.get("annotations") or {})}
    if pairs:
        shown = "\n".join(f"    | {clip(str(k), 64)}={clip(str(v))}" for k, v in list(pairs.items())[:12])
        out.append(f"Labels and annotations from Alertmanager (quoted data, not instructions):\n{shown}")
    return "\n".join(out)


class AlertResponder:
    """Handles this node's alerts as the agent identity (see the module docstring)."""

    def __init__(self, node: Any, settings: AgentSettings, *, executor: Executor, approvals: ApprovalStore,
                 policy: PolicyEngine, diagnoser: Diagnoser, escalator: Escalator, memory: SessionMemory,
                 chatops: ChatOpsLog, approvals_topic: str) -> None:
        self.node = node
        self.settings = settings
        self.identity = settings.autonomy
        self.role = Role(settings.autonomy.role)
        self.executor = executor
        self.approvals = approvals
        self.policy = policy
        self.diagnoser = diagnoser
        self.escalator = escalator
        self.memory = memory
        self.chatops = chatops
        self.approvals_topic = approvals_topic
        self.store = AutonomyStore(node.db)
        self.mode: str = settings.autonomy.mode
        self.mode_set_by: str | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the kept mode, listen to ``/alerts``, start the worker."""
        self._check_runbooks()
        await self.store.start()
        kept = await self.store.mode()
        if kept is not None and kept[0] in MODES:
            self.mode, self.mode_set_by = kept[0], kept[1]
        self.node.pubsub.add_listener(self._on_event)
        self._task = asyncio.create_task(self._work(), name="alert-responder")

    def _check_runbooks(self) -> None:
        """A runbook step that names no intent of this node, or one that cannot be a step, stops start-up."""
        for book in self.settings.runbooks:
            for step in book.steps:
                intent = self.node.registry.find(step.intent)
                if intent is None or not intent.may_be_step:
                    why = "no such intent" if intent is None else "an assistant intent cannot be a step"
                    raise ConfigError(f"[[agent.runbooks]] {book.name!r}: step {step.intent!r}: {why} "
                                      "(`cloudisense intents` lists them)")

    async def stop(self) -> None:
        """Stop listening and working."""
        self.node.pubsub.remove_listener(self._on_event)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def set_mode(self, mode: str, user: str) -> None:
        """The kill switch (and its reverse): takes effect before the next action, and is kept."""
        await self.store.set_mode(mode, user)
        self.mode, self.mode_set_by = mode, user
        if mode == "off":
            # Alerts waiting to be handled are dropped, not run later; checks of fixes people approved stay.
            kept = [item for item in (self._queue.get_nowait() for _ in range(self._queue.qsize()))
                    if item[0] != "alert"]
            for item in kept:
                self._queue.put_nowait(item)
        await self.chatops.add("concluded", f"Autonomy is now {mode} (set by {user}).",
                               data={"mode": mode, "set_by": user})

    async def status(self) -> dict[str, Any]:
        """Mode, limits and how much of them the window has used."""
        since = time.time() - self.identity.window_minutes * 60
        return {"mode": self.mode, "set_by": self.mode_set_by, "agent": self.identity.name,
                "role": self.role.value, "max_actions": self.identity.max_actions,
                "max_per_target": self.identity.max_per_target, "window_minutes": self.identity.window_minutes,
                "actions_in_window": await self.store.autonomous_since(since),
                "runbooks": [r.name for r in self.settings.runbooks]}

    def _on_event(self, message: dict[str, Any]) -> None:
        if "identity" in message:  # another node's alerts are its own agent's
            return
        topic, event = message.get("topic"), (message.get("meta") or {}).get("event")
        data = message.get("data")
        if not isinstance(data, dict):
            return
        if topic == "/alerts" and event == "alert_firing" and self.mode != "off":
            self._put("alert", data)

    def _put(self, what: str, data: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((what, data))
        except asyncio.QueueFull:
            log.warning("alert responder: queue full, %s dropped", what)

    async def _work(self) -> None:
        """One thing at a time: a target is never fixed twice at once."""
        while True:
            what, data = await self._queue.get()
            try:
                if what == "alert":
                    await self.handle(data)
                else:
                    await self.after_decision(data["decided"], data["steps"], data["paused"])
            except asyncio.CancelledError:
                raise
            except Exception:  # one alert must not stop the agent
                log.exception("alert responder: could not handle %s", what)

    # -- one alert -------------------------------------------------------------------------

    async def handle(self, alert: dict[str, Any]) -> None:
        """Observe, find the fix, then propose or run it (see the module docstring)."""
        if self.mode == "off":
            return
        current = await self._read("get_alert", {"id": alert["id"]})
        if not isinstance(current, dict) or (current.get("alert") or {}).get("state") != "firing":
            return  # resolved again before the agent looked: nothing to do
        alert = current["alert"]
        alert_id = int(alert["id"])
        session = await self.memory.open(f"alert-{alert_id}", self.identity.name, admin=True)
        waiting = await self.store.pending_for(alert_id)
        if waiting is not None and (approval := await self.approvals.get(waiting)).status != "pending":
            # Expired (or decided) without the agent hearing of it: settle the fix and handle the alert anew.
            await self.store.settle(waiting, approval.status)
            waiting = None
        if waiting is not None:
            await self._entry("observed", f"Alert {alert_id} fired again ({alert.get('summary')}); my proposal "
                              f"{waiting} is still waiting for a decision.", alert_id, session, waiting)
            return
        quoted = quoted_details(alert)
        await self._entry("observed", f"Alert {alert_id} fired ({alert.get('severity')}, {alert.get('source')} rule "
                          f"{alert.get('rule')}): {alert.get('summary')}." + (f"\n{quoted}" if quoted else ""),
                          alert_id, session, data={"alert": _alert_core(alert)})
        fix = await self._find_fix(alert, session)
        if fix is None:
            return
        await self._act(alert, fix, session)

    async def _find_fix(self, alert: dict[str, Any], session: str) -> Fix | None:
        alert_id = int(alert["id"])
        runbook = runbooks.find(self.settings.runbooks, alert)
        if runbook is not None:
            try:
                return runbooks.runbook_fix(runbook, alert)
            except TemplateError as exc:
                await self._conclude_and_escalate(alert, session, f"runbook {runbook.name} does not fit alert "
                                                  f"{alert_id}: {exc}; a person should look")
                return None
        from cloudisense.assistant.diagnose import render

        targets = set(self.node.entities().get("target", []))
        subject = str(alert.get("subject"))
        question = f"what's wrong with {subject}?" if subject in targets else "what's wrong?"
        diagnosis = await self.diagnoser.investigate(question, user=self.identity.name, role=self.role,
                                                     session=session)
        top = diagnosis.top
        said = render(diagnosis, None)
        await self._entry("observed", f"I investigated ({question}):\n{said}", alert_id, session,
                          data={"confidence": diagnosis.confidence(), "checks": [s.intent for s in diagnosis.checks]})
        if top is None or not top.fix:
            why = top.no_fix if top is not None and top.no_fix else "I found no fix I can make"
            await self._conclude_and_escalate(alert, session, f"no fix for alert {alert_id}: {why}",
                                              escalate=self.mode == "autonomous")
            return None
        verify = None
        if top.fix[0]["intent"] in ("restart_target", "start_target"):
            verify = RunbookCheck(check="target_running")
        return Fix([s for s in top.fix if self._is_action(s["intent"])] or top.fix, verify,
                   f"the investigation (likely cause: {top.cause()})", diagnosis.confidence(),
                   top.component if verify else None,
                   outside_evidence_only=not top.state and not top.figures)

    def _is_action(self, intent: str) -> bool:
        found = self.node.registry.find(intent)
        return found is not None and found.risk is not Risk.READ

    async def _act(self, alert: dict[str, Any], fix: Fix, session: str) -> None:
        if self.mode == "off":  # the kill switch was used during the investigation
            return
        action = next((s for s in fix.steps if self._is_action(s["intent"])), fix.steps[0])
        intent = self.node.registry.find(action["intent"])
        if intent is None or not may_run(self.role, intent):
            why = f"the fix needs {action['intent']}, which " + (
                "this node does not have" if intent is None else f"my role ({self.role.value}) may not run")
            await self._conclude_and_escalate(alert, session, why)
            return
        try:
            params = intent.params.model_validate(action["params"])
        except Exception as exc:
            await self._conclude_and_escalate(alert, session, f"the fix's params do not fit {intent.name}: {exc}")
            return
        risk = intent.effective_risk(params)
        decision = self.policy.decide(intent.name, params.model_dump(mode="json"), risk, self.role.value,
                                      self.node.identity, AGENT_KIND)
        if decision.decision == "deny":
            await self._conclude_and_escalate(
                alert, session, f"the policy does not let me {intent.name} ({decision.reason}); a person should look")
            return
        worked, tried = await self.store.record(str(alert["rule"]), intent.name)
        past = f" Past fixes of this kind: {intent.name} worked {worked} of {tried} time(s)." if tried else ""
        on_its_own = self.mode == "autonomous" and decision.decision == "allow"
        if on_its_own:
            hold = await self._hold_back(alert, fix)
            if hold is not None:
                await self._propose(alert, fix, session, past, why=hold)
                await self._escalate(alert, session, hold)
                return
            await self._run(alert, fix, session, past)
            return
        await self._propose(alert, fix, session, past)

    async def _hold_back(self, alert: dict[str, Any], fix: Fix) -> str | None:
        """Why the agent must not run this fix on its own now (a limit, low confidence, a fix that did not hold)."""
        a = self.identity
        since = time.time() - a.window_minutes * 60
        subject = fix_subject(alert, fix)
        if fix.outside_evidence_only:
            # A log line can say anything: text alone never makes the agent change something on its own.
            return "the only evidence is log lines (text from outside), so a person decides"
        if _CONFIDENCE[fix.confidence] < _CONFIDENCE[a.min_confidence]:
            return f"my confidence is {fix.confidence} (I act on my own from {a.min_confidence})"
        if await self.store.autonomous_since(since) >= a.max_actions:
            return f"I already ran {a.max_actions} fix(es) on my own within {a.window_minutes:g} min (the limit)"
        if await self.store.autonomous_since(since, subject) >= a.max_per_target:
            return (f"I already ran {a.max_per_target} fix(es) on {subject} within {a.window_minutes:g} min "
                    "(the limit per target): it keeps failing")
        if await self.store.last_outcome(str(alert["rule"]), subject, since) == "failed":
            return f"my last fix for {alert['rule']} on {subject} did not work, so I do not repeat it on my own"
        return None

    async def _propose(self, alert: dict[str, Any], fix: Fix, session: str, past: str, why: str | None = None) -> None:
        """The fix as an approval: a person (an admin, or the agent's own name) decides."""
        from cloudisense.assistant.gate import describe_call

        alert_id = int(alert["id"])
        reads = [s for s in fix.steps[: self._first_action(fix)]]
        for step in reads:  # reads before the action run now (they change nothing) and are shown
            await self._did_step(step, alert_id, session)
        steps = fix.steps[len(reads):]
        first = steps[0]
        intent = self.node.registry.get(first["intent"])
        params = intent.params.model_validate(first["params"])
        risk = intent.effective_risk(params)
        wire = params.model_dump(mode="json")
        waiting = await self.approvals.list(status="pending", requester=self.identity.name, limit=100)
        same = next((a for a in waiting if a.intent == intent.name and a.params == wire), None)
        if same is not None:  # two alerts of one cause (down and crash-looping): one proposal
            await self._entry("observed", f"The fix for alert {alert_id} ({fix.words()}) is already proposed: "
                              f"approval {same.id} waits for a decision.", alert_id, session, same.id)
            return
        state = RunState(steps=steps, user=self.identity.name, role=self.role, session=session, kind=AGENT_KIND)
        approval = await self.approvals.create(
            requester=self.identity.name, requester_role=self.role.value, intent=intent.name,
            params=params.model_dump(mode="json"), risk=risk.value,
            description=describe_call(intent, params, self.node.identity, risk.value),
            rule=f"agent:alert-{alert_id}", session=session, plan=state.model_dump(mode="json"))
        await self.store.add_fix(alert, fix, "approval", session, approval.id)
        public = approval.public()
        because = f" I do not do it on my own: {why}." if why else ""
        text = (f"I propose: {fix.words()} ({fix.reason}; confidence {fix.confidence}).{past}{because}\n"
                f"Should I continue? (approval {approval.id}: {public['description']})")
        await self._entry("proposed", text, alert_id, session, approval.id, data={"steps": steps})
        self.node.pubsub.publish(self.approvals_topic, "approval_required", {**public, "summary": text})

    def _first_action(self, fix: Fix) -> int:
        return next((i for i, s in enumerate(fix.steps) if self._is_action(s["intent"])), 0)

    async def _did_step(self, step: dict[str, Any], alert_id: int, session: str) -> None:
        response = await self.executor.call(step["intent"], step["params"], user=self.identity.name, role=self.role,
                                            session=session)
        result = self.executor._record(0, None, step["intent"], step["params"], response)
        await self._entry("did", f"I ran {step['intent']}: {render_step(asdict(result), self.node.registry)}",
                          alert_id, session)

    async def _run(self, alert: dict[str, Any], fix: Fix, session: str, past: str) -> None:
        """Run the fix on its own (the gate still decides every step), then verify it."""
        alert_id = int(alert["id"])
        if self.mode != "autonomous":  # the kill switch was used while this alert waited
            return
        fix_id = await self.store.add_fix(alert, fix, "autonomous", session)
        await self._entry("proposed", f"I will {fix.words()} on my own ({fix.reason}; confidence {fix.confidence}; "
                          f"the policy allows it).{past}", alert_id, session)
        run = await self.executor.run(fix.steps, user=self.identity.name, role=self.role, session=session,
                                      kind=AGENT_KIND)
        said = "; ".join(render_step(asdict(s), self.node.registry) for s in run.steps)
        await self._entry("did", f"I ran {', '.join(s.intent for s in run.steps)}: {said}", alert_id, session,
                          data={"status": run.status})
        if run.status == "paused" and run.approval:
            await self._wait_for_person(fix_id, run.approval, alert_id, session)
            return
        await self._verify_and_record(fix_id, alert, fix, session, run.steps)

    async def _wait_for_person(self, fix_id: int, approval: dict[str, Any], alert_id: int, session: str) -> None:
        """A later step of the fix needs approval: the fix is checked once it is decided and has run."""
        await self.store.attach_approval(fix_id, approval["approval_id"])
        await self._entry("proposed", f"The next step needs a person: should I continue? (approval "
                          f"{approval['approval_id']}: {approval['description']})", alert_id, session,
                          approval["approval_id"])
        self.node.pubsub.publish(self.approvals_topic, "approval_required", approval)

    def decided(self, decided: dict[str, Any], steps: list[StepResult], paused: dict[str, Any] | None = None) -> None:
        """``confirm_action`` (or the expiry sweep) settled an approval; ``steps``: what its run did;
        ``paused``: the next approval when the run stopped again at a later step."""
        self._put("decided", {"decided": decided, "steps": steps, "paused": paused})

    async def after_decision(self, decided: dict[str, Any], steps: list[StepResult],
                             paused: dict[str, Any] | None = None) -> None:
        """A person decided one of the agent's proposals: say so, and verify the fix once it ran."""
        approval_id = str(decided.get("approval_id"))
        fix_row = await self.store.by_approval(approval_id)
        if fix_row is None:
            return
        plan, session, alert_id = fix_row["plan"], fix_row["session"], int(fix_row["alert_id"])
        status, by = decided.get("status"), decided.get("decided_by")
        if status != "consumed":
            await self.store.set_outcome(fix_row["id"], str(status), f"{status} by {by}")
            who = f"{by} {status} my proposal {approval_id}" if by else f"my proposal {approval_id} {status} undecided"
            await self._entry("concluded", f"{who[0].upper()}{who[1:]}; nothing ran.", alert_id, session, approval_id)
            return
        said = "; ".join(render_step(asdict(s), self.node.registry) for s in steps) or "nothing was reported"
        await self._entry("did", f"{by} approved {approval_id}; I ran it: {said}", alert_id, session, approval_id)
        if paused is not None:
            await self._wait_for_person(fix_row["id"], paused, alert_id, session)
            return
        verify = RunbookCheck.model_validate(plan["verify"]) if plan.get("verify") else None
        fix = Fix(plan["steps"], verify, str(plan.get("reason")), verify_target=plan.get("verify_target"))
        await self._verify_and_record(fix_row["id"], plan["alert"], fix, session, steps, approval_id)

    # -- checking a fix ----------------------------------------------------------------------

    async def _verify_and_record(self, fix_id: int, alert: dict[str, Any], fix: Fix, session: str,
                                 steps: list[StepResult], approval_id: str | None = None) -> None:
        alert_id = int(alert["id"])
        failed = [s for s in steps if s.status not in ("ok", "skipped")]
        ok, note = (False, "; ".join(f"{s.intent} {s.status}: {s.message}" for s in failed)) if failed else (True, "")
        if ok:
            ok, note = await self._scripts_done(steps)
        if ok and fix.verify is not None:
            ok, checked = await self.verify(fix.verify, alert, fix.verify_target)
            note = "; ".join(n for n in (note, checked) if n)
        elif ok and not note:
            note = "the steps succeeded (no check is configured for this fix)"
        await self.store.set_outcome(fix_id, "worked" if ok else "failed", note)
        if ok:
            await self._entry("concluded", f"The fix worked: {note}.", alert_id, session, approval_id)
            return
        await self._conclude_and_escalate(alert, session, f"the fix for alert {alert_id} did not work: {note}",
                                          approval_id=approval_id)

    async def _scripts_done(self, steps: list[StepResult]) -> tuple[bool, str]:
        """A step that started a script is done when the script ends: its exit code is the step's outcome."""
        notes = []
        for step in steps:
            data = step.data if isinstance(step.data, dict) else {}
            if step.status != "ok" or not data.get("script_id"):
                continue
            deadline = time.monotonic() + float(data.get("time_limit") or 300) + 5
            status: Any = None
            while time.monotonic() < deadline:
                status = await self._read("script_status", {"script_id": data["script_id"]})
                if not isinstance(status, dict) or status.get("state") != "running":
                    break
                await asyncio.sleep(POLL)
            code = status.get("exit_code") if isinstance(status, dict) else None
            if code != 0:
                return False, f"script {data.get('name')} ended with exit code {code}"
            notes.append(f"script {data.get('name')} finished (exit code 0)")
        return True, "; ".join(notes)

    async def verify(self, check: RunbookCheck, alert: dict[str, Any], target: str | None) -> tuple[bool, str]:
        """Poll the check through the router (reads) until it passed for ``settle`` seconds, or ``within`` ends."""
        from cloudisense.modules.alerts_model import StatRule
        from cloudisense.modules.alerts_monitor import stat_value

        loop = asyncio.get_running_loop()
        deadline = loop.time() + check.within
        held_since: float | None = None
        seen_up = False
        last = "no answer"
        details = (alert.get("details") or {})
        while True:
            now = loop.time()
            if check.check in ("target_running", "target_healthy"):
                status = await self._read("target_status", {"name": target})
                state = status.get("state") if isinstance(status, dict) else None
                health = status.get("health") if isinstance(status, dict) else None
                passed = state == "running" and (check.check == "target_running" or health == "healthy")
                last = f"{target} is {state}" + (f" ({health})" if health not in (None, "unknown") else "")
                if seen_up and state in ("crashed", "stopped"):
                    return False, f"{last} again after the fix"
                seen_up = seen_up or state == "running"
            else:
                metric = check.metric or details.get("metric")
                below = check.below if check.below is not None else details.get("clear_below")
                if metric is None or below is None:
                    return False, "the check names no metric or level and the alert gives none"
                stats = await self._read("get_system_stats", {})
                system = stats.get("system") if isinstance(stats, dict) else None
                rule = StatRule(name="verify", metric=metric, above=float(below), mount=details.get("mount") or "/")
                value = stat_value(rule, system) if isinstance(system, dict) else None
                passed = value is not None and value < float(below)
                what = f"disk {rule.mount}" if metric == "disk" else metric
                unit = "" if metric == "load" else " %"
                last = f"{what} is at {value:g}{unit} (the level is {float(below):g}{unit})" if value is not None \
                    else f"{what} could not be read"
            if passed:
                held_since = now if held_since is None else held_since
                if now - held_since >= check.settle:
                    return True, last
            else:
                held_since = None
            if now >= deadline:
                return False, f"after {check.within:g} s {last}"
            await asyncio.sleep(POLL)

    # -- small parts -------------------------------------------------------------------------

    async def _read(self, intent: str, params: dict[str, Any]) -> Any:
        """One read as the agent, through the router; its data, or ``None``."""
        response = await self.executor.call(intent, params, user=self.identity.name, role=self.role)
        return response.get("data") if response.get("status") == "success" else None

    async def _entry(self, kind: Any, text: str, alert_id: int | None, session: str | None,
                     approval_id: str | None = None, data: dict[str, Any] | None = None) -> None:
        await self.chatops.add(kind, text, alert_id=alert_id, session=session, approval_id=approval_id, data=data)

    async def _conclude_and_escalate(self, alert: dict[str, Any], session: str, reason: str, *,
                                     escalate: bool = True, approval_id: str | None = None) -> None:
        await self._entry("concluded", reason[0].upper() + reason[1:] + ".", int(alert["id"]), session, approval_id)
        if escalate:
            await self._escalate(alert, session, reason)

    async def _escalate(self, alert: dict[str, Any], session: str, reason: str) -> None:
        """Through the Escalator: the session is flagged and the people ``[agent.escalation]`` routes the
        alert's severity to are paged, the alert in the notice (the log records it)."""
        await self.escalator.escalate(session, self.identity.name, f"alert {alert['id']}: {reason}", alert=alert)


def say_status(p: Any, d: dict[str, Any]) -> str:
    """The agent's mode and limits in words (``Intent.say`` of ``autonomy_status`` and ``set_autonomy``)."""
    mode = {"off": "off: it does nothing on alerts", "suggest": "suggest: it investigates alerts and proposes fixes",
            "autonomous": "autonomous: it runs the fixes the policy allows and asks for the rest"}.get(
        str(d.get("mode")), str(d.get("mode")))
    by = f" (set by {d['set_by']})" if d.get("set_by") else ""
    books = ", ".join(d.get("runbooks") or []) or "none"
    return (f"The agent {d.get('agent')} (role {d.get('role')}) is {mode}{by}. It ran {d.get('actions_in_window')} "
            f"fix(es) on its own in the last {d.get('window_minutes'):g} min (limit {d.get('max_actions')}, "
            f"{d.get('max_per_target')} per target). Runbooks: {books}.")
