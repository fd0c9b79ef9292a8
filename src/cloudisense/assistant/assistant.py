"""The assistant's turn logic, built from explicit parts (no lookups of modules by name).

:class:`Assistant` takes the router's registry, the session memory, the approval
store, the executor (which acts through the router), the escalator, the model
access and the settings. :meth:`Assistant.ask` turns one request into a typed
:class:`~cloudisense.assistant.turn.Turn`: plan (offline planner first), then execute,
ask, refuse, answer, escalate, or reason with the model (ReAct).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudisense.assistant.answer import compose_answer
from cloudisense.assistant.approvals import ApprovalStore
from cloudisense.assistant.escalation import MAX_FAILURES, Escalator, assess, steps_evidence
from cloudisense.assistant.executor import ExecutionResult, Executor
from cloudisense.assistant.memory import SessionMemory
from cloudisense.assistant.plan import Plan
from cloudisense.assistant.react import run_react
from cloudisense.assistant.settings import agent_settings
from cloudisense.assistant.turn import Outcome, Turn
from cloudisense.core.errors import BadRequest, CloudisenseError, Unavailable
from cloudisense.core.intents import Risk
from cloudisense.core.roles import Role, may_run

if TYPE_CHECKING:
    from cloudisense.config import Settings
    from cloudisense.core.context import CallOrigin
    from cloudisense.core.intents import IntentRegistry

log = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], None]
Entities = Callable[[], dict[str, list[str]]]

#: Requests about the assistant itself are answered with the introduction, not planned.
HELP_RE = re.compile(r"^\s*(help|hi|hello|hey|what can you do|who are you|how do i use (you|this)|"
                     r"what do you know|what are you)\W*$", re.IGNORECASE)


def default_session(user: str) -> str:
    """The session a user's requests use when they name none (the same for every entry point)."""
    return f"user-{user}"


class Assistant:
    """Plans, acts through the router, and answers; one instance per node."""

    def __init__(self, *, registry: IntentRegistry, entities: Entities, memory: SessionMemory,
                 approvals: ApprovalStore, executor: Executor, escalator: Escalator, settings: Settings) -> None:
        self.registry = registry
        self.entities = entities
        self.memory = memory
        self.approvals = approvals
        self.executor = executor
        self.escalator = escalator
        self.settings = settings
        self.identity = settings.identity
        #: The model for ReAct and the hybrid planner (budgeted); ``None`` offline. Tests may set it.
        self.provider: Any = None
        #: A :class:`~cloudisense.assistant.plan.Planner`; built on first use unless set (tests do).
        self.planner: Any = None
        #: The investigation of open questions (:class:`~cloudisense.assistant.diagnose.Diagnoser`), set by the module.
        self.diagnoser: Any = None
        #: The summary of the node's state for model prompts
        #: (:class:`~cloudisense.assistant.context_summary.ContextSummarizer`), set by the module.
        self.context: Any = None

    async def open_session(self, session: str | None, user: str, role: Role) -> str:
        """The one session rule: the named session if it is the user's (or the caller is admin), else theirs."""
        return await self.memory.open(session or default_session(user), user, admin=role == Role.ADMIN)

    # -- one request --------------------------------------------------------------

    async def ask(self, text: str, *, user: str, role: Role, session: str, notify: Notify | None = None,
                  mode: str = "auto", origin: CallOrigin | None = None) -> Turn:
        """One request: plan (planner first), then execute, ask, refuse, answer, escalate or reason."""
        if HELP_RE.match(text):
            intro = self.introduction(role)
            await self.memory.add_message(session, "user", text)
            await self.memory.add_message(session, "assistant", intro["text"])
            return Turn(Outcome.ANSWERED, session, intro["text"], strategy="introduction")
        await self.memory.add_message(session, "user", text)
        if mode == "auto" and self.diagnoser is not None and self.diagnoser.wants(text):
            return await self.diagnose(text, user=user, role=role, session=session, notify=notify, origin=origin)
        if mode == "react" and self.provider is None:
            raise Unavailable("mode react needs a model provider: set [llm] provider (e.g. openai:gpt-4o-mini)")
        plan = None if mode == "react" else await self._plan(text, role, session, user, origin)
        if plan is not None:
            await self.memory.add_plan(session, plan.model_dump(), text)
            turn = await self._answer_plan(plan, text, user=user, role=role, session=session, notify=notify,
                                           mode=mode, origin=origin)
            if turn is not None:
                return turn
        if self.provider is None:
            message = "I could not plan that and no model is configured; please rephrase."
            await self.memory.add_message(session, "assistant", message)
            return Turn(Outcome.CLARIFY, session, message, strategy="offline", plan=plan, question=message)
        return await self._react(text, user=user, role=role, session=session, notify=notify, origin=origin)

    async def _answer_plan(self, plan: Plan, text: str, *, user: str, role: Role, session: str,
                           notify: Notify | None, mode: str, origin: CallOrigin | None) -> Turn | None:
        """The turn for ``plan``; ``None`` hands the request to the model (when one is configured)."""
        if plan.outcome in ("answer", "refuse"):
            message = plan.message or plan.reason or "I can't do that."
            await self.memory.add_message(session, "assistant", message)
            outcome = Outcome.ANSWERED if plan.outcome == "answer" else Outcome.REFUSED
            return Turn(outcome, session, message, strategy=plan.strategy, plan=plan)
        verdict = assess(plan, min_confidence=agent_settings(self.settings).min_confidence)
        if verdict.action == "proceed":
            run = await self.executor.run(plan, user=user, role=role, session=session, notify=notify, origin=origin)
            turn = self._run_turn(run, session, plan.strategy, plan=plan)
            failures = await self._recent_failures(session)
            if failures >= MAX_FAILURES:
                turn.escalation = await self.escalator.escalate(session, user, f"{failures} steps failed", text,
                                                                origin=origin, evidence=steps_evidence(run.steps))
            return turn
        if verdict.action == "escalate":
            escalation = await self.escalator.escalate(session, user, verdict.message, text, origin=origin)
            return Turn(Outcome.ESCALATED, session, verdict.message, strategy=plan.strategy, plan=plan,
                        escalation=escalation)
        if self.provider is not None and mode != "plan":
            return None
        await self.memory.add_message(session, "assistant", verdict.message)
        return Turn(Outcome.CLARIFY, session, verdict.message, strategy=plan.strategy, plan=plan,
                    question=verdict.message)

    async def _react(self, text: str, *, user: str, role: Role, session: str, notify: Notify | None,
                     origin: CallOrigin | None) -> Turn:
        react = await run_react(self.provider, text, executor=self.executor, user=user, role=role, session=session,
                                token_budget=self.settings.llm.session_token_budget,
                                memory=self.memory, notify=notify, origin=origin,
                                context=await self.node_context(user, role, session, origin))
        if react.approvals:
            outcome = Outcome.AWAITING_APPROVAL
        elif react.steps:
            outcome = Outcome.EXECUTED
        else:
            outcome = Outcome.ANSWERED
        turn = Turn(outcome, session, react.reply(), strategy="react", react=react)
        if react.stopped == "failures":
            turn.escalation = await self.escalator.escalate(session, user, "several steps failed", text, origin=origin,
                                                            evidence=steps_evidence(react.steps))
        return turn

    async def diagnose(self, text: str, *, user: str, role: Role, session: str, notify: Notify | None,
                       origin: CallOrigin | None) -> Turn:
        """An open question: a read-only investigation, then the likely cause and a fix to approve."""
        from cloudisense.assistant.diagnose import render

        diagnosis = await self.diagnoser.investigate(text, user=user, role=role, session=session, notify=notify,
                                                     origin=origin)
        approval = await self.diagnoser.propose(diagnosis, user=user, role=role, session=session)
        answer = render(diagnosis, approval)
        react = None
        if self.provider is not None:
            from cloudisense.assistant.diagnose import model_reading

            try:
                react = await model_reading(self.provider, diagnosis, answer, executor=self.executor, user=user,
                                            role=role, session=session, notify=notify, origin=origin,
                                            token_budget=self.settings.llm.session_token_budget)
            except Exception as exc:  # the built-in answer stands on its own; the model only adds
                log.warning("the model's reading of an investigation failed: %s", exc)
            else:
                diagnosis.checks.extend(react.steps)
                answer += f"\nThe model's reading (check it against the evidence above): {react.answer.strip()}"
        if notify is not None:
            notify("assist_delta", {"session": session, "text": answer, "final": True})
            if approval is not None:
                notify("approval_required", {**approval, "summary": answer})
        await self.memory.add_message(session, "assistant", answer)
        run = ExecutionResult("paused" if approval else "completed", diagnosis.checks, session=session,
                              approval=approval, summary=answer)
        outcome = Outcome.AWAITING_APPROVAL if approval else Outcome.ANSWERED
        turn = Turn(outcome, session, answer, strategy="diagnose", run=run, diagnosis=diagnosis,
                    streamed=notify is not None)
        turn.usage = (react.usage.input_tokens, react.usage.output_tokens) if react is not None else None
        return turn

    async def node_context(self, user: str, role: Role, session: str | None, origin: CallOrigin | None) -> str | None:
        """The summary of the node's state for a model prompt, or ``None`` (no summarizer, or it failed)."""
        if self.context is None:
            return None
        try:
            return str(await self.context.text(user=user, role=role, session=session, origin=origin))
        except Exception as exc:  # the model can still answer without it; say why it had none
            log.warning("the node's context summary could not be made: %s", exc)
            return None

    def _run_turn(self, run: ExecutionResult, session: str, strategy: str, *, plan: Plan | None = None,
                  since: int = 0) -> Turn:
        """The turn for a run; ``since``: steps already reported (a run resumed after an approval)."""
        outcome = Outcome.AWAITING_APPROVAL if run.status == "paused" else Outcome.EXECUTED
        answer = compose_answer(run.as_dict(), self.registry, since=since)
        return Turn(outcome, session, answer, strategy=strategy, plan=plan, run=run)

    async def _recent_failures(self, session: str, window: int = 10) -> int:
        """Failed steps among the session's last ``window`` steps: repeated failures mean "ask a person"."""
        steps = await self.memory.turns(session, ("step",), limit=window)
        return sum(1 for t in steps if isinstance(t.data, dict) and t.data.get("status") == "error")

    # -- planning -----------------------------------------------------------------

    async def _plan(self, text: str, role: Role, session: str, user: str,
                    origin: CallOrigin | None = None) -> Plan | None:
        """The planner's plan, or ``None`` when there is no planner or it is unavailable (then the model reasons)."""
        from cloudisense.assistant.catalog import planning_context

        planner = self.planner or self._default_planner()
        # Only plannable tools (never the assistant itself), the ones the role may not run, names, aliases.
        context = planning_context(self.registry, role, self.entities(), aliases=agent_settings(self.settings).aliases,
                                   history=await self.memory.context(session))
        if self.context is not None:
            # Gathered only if a model is asked (the offline planner never reads it).
            context.summary = lambda: self.node_context(user, role, session, origin)
        try:
            plan: Plan = await planner.plan(text, context)
        except Unavailable:
            return None
        if plan.outcome == "execute":
            for step in plan.steps:
                intent = self.registry.find(step.intent)
                if intent is not None and not intent.may_be_step:
                    raise BadRequest(f"the planner proposed {step.intent} as a step; the assistant never plans itself")
                if intent is not None and intent.assistant_params:
                    step.params = {**intent.assistant_params, **step.params}
        return plan

    async def warm_up(self) -> None:
        """Have the model planner prepare its prompt openings while the model is idle (see
        :meth:`~cloudisense.assistant.planner.CallPlanner.warm`), for an operator's tools."""
        import time

        from cloudisense.assistant.catalog import planning_context

        planner = self.planner or self._default_planner()
        warm = getattr(planner, "warm", None)
        if warm is None:
            return
        context = planning_context(self.registry, Role.OPERATOR, self.entities(),
                                   aliases=agent_settings(self.settings).aliases)
        started = time.perf_counter()
        log.info("assistant: preparing the model planner's prompts while the model is idle")
        try:
            prepared = await warm(context)
        except CloudisenseError as exc:  # a model not pulled, a file that fails verification: say what to do
            log.warning("assistant: could not prepare the model planner's prompts: %s", exc)
            return
        except Exception:  # a bug; the model's first request reports its own failure too
            log.warning("assistant: preparing the model planner's prompts failed", exc_info=True)
            return
        if prepared:
            log.info("assistant: prepared the model planner's prompts for %d modules in %.0f s",
                     prepared, time.perf_counter() - started)

    def _default_planner(self) -> Any:
        """The offline planner, or the hybrid (offline fast path, then the model) when a model is set."""
        from cloudisense.assistant.offline import OfflinePlanner
        from cloudisense.assistant.planner import choose_planner

        try:
            self.planner = choose_planner(self.settings, self.registry, provider=self.provider)
        except Exception:  # a model that can't be built must not take the offline planner down with it
            log.exception("model planner could not be built; using the offline planner")
            self.planner = OfflinePlanner()
        return self.planner

    # -- approvals and chains -----------------------------------------------------

    async def confirm(self, approval_id: str, *, approve: bool, user: str, role: Role, reason: str | None,
                      notify: Notify | None, origin: CallOrigin | None) -> tuple[Turn, dict[str, Any]]:
        """Decide an approval and continue (or end) its run; returns the turn and the decided approval."""
        approval = await self.approvals.decide(approval_id, approve=approve, user=user, role=role, reason=reason)
        reported = len((approval.plan or {}).get("done") or [])  # steps the paused answer already reported
        run = await self.executor.resume(approval.id, notify=notify, origin=origin)
        decided = (await self.approvals.get(approval.id)).public()
        return self._run_turn(run, approval.session or "", "approval", since=reported), decided

    async def run_steps(self, steps: list[Any], *, user: str, role: Role, session: str | None, on_error: str,
                        kind: str, notify: Notify | None, origin: CallOrigin | None) -> Turn:
        """Run given steps (``intent_chain``, ``agent_execute``) and say what happened."""
        run = await self.executor.run(steps, user=user, role=role, session=session, on_error=on_error, kind=kind,
                                      notify=notify, origin=origin)
        return self._run_turn(run, session or "", "chain")

    # -- what it can do -----------------------------------------------------------

    def introduction(self, role: Role) -> dict[str, Any]:
        """What the assistant can do here for ``role``, with example requests (only intents the role may run)."""
        intents = [i for i in self.registry.all() if i.plannable and i.examples and may_run(role, i)]
        # One example per module (not eight of whichever module registered first); those about the
        # node's configured things (services, logs, scripts) and reads first: what people try first.
        def rank(n: int) -> tuple[bool, bool, int]:
            return not intents[n].entities, intents[n].risk != Risk.READ, n

        best: dict[str, int] = {}
        for n, intent in enumerate(intents):
            if intent.module not in best or rank(n) < rank(best[intent.module]):
                best[intent.module] = n
        picks = [intents[n] for n in sorted(best.values(), key=rank)]
        examples = list(dict.fromkeys([i.examples[0] for i in picks] + [i.examples[0] for i in intents]))[:8]
        entities = self.entities()
        offline = self.provider is None
        model = "the built-in offline planner (no model)" if offline else f"the model {self.settings.llm.provider}"
        known = "; ".join(f"{kind}s: {', '.join(names)}" for kind, names in sorted(entities.items()) if names)
        text = (f"Hi, I am the CloudiSENSE assistant on node {self.identity}, using {model}. "
                f"I turn requests into this node's intents and run them with your rights ({role.value}); "
                "risky steps wait for your approval, and policy may refuse some.\n"
                + (f"I know these {known}.\n" if known else "")
                + "Try: " + " · ".join(f'"{e}"' for e in examples))
        return {"text": text, "answer": text, "examples": examples, "entities": entities,
                "intents": len(intents), "planner": "offline" if offline else "model"}
