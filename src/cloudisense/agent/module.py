"""AgentModule: the assistant's runtime on a node.

Intents:

* ``intent_chain {steps, on_error}`` — ordered steps with ids, references and
  ``when`` conditions; risk = the highest risk among its steps. Steps run as the
  caller; when the caller is the agent itself (kind ``agent``) each step is
  policy-gated and a ``confirm`` step pauses the chain for approval.
* ``agent_execute {steps, session, on_error}`` — run a plan *as the assistant*
  (what ``cloudisense ask`` does after planning): every step is agent-initiated,
  so the policy applies per step. Same risk rule.
* ``agent_ask {query, session}`` — plan (offline planner, or ReAct with a model
  provider) and execute; asks or escalates when unsure.
* ``confirm_action {approval_id, approve, reason}`` — risk ``read`` on purpose:
  the role that may decide is not a risk level but "the requester or an admin"
  (checked by :class:`ApprovalStore`); a viewer can thus reject what was asked in
  their name. Approving runs the paused step once, then the rest of the plan, as
  the *requester* (their role still applies); the agent can never call it.
* ``list_approvals {status, session}``, ``list_escalations {}`` (read).

Events go to the calling client on topic ``/assist/<session>`` (``/chain/<requestid>``
for chains without a session): ``chain_step``, ``approval_required``,
``plan_finished``; approvals are also published on ``/approvals``
(``approval_required``, ``approval_decided``, ``approval_expired``) for watchers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import Field, field_validator

from cloudisense.agent.answer import compose_answer
from cloudisense.agent.approvals import ApprovalStore
from cloudisense.agent.escalation import Escalator, assess
from cloudisense.agent.executor import ExecutionResult, Executor
from cloudisense.agent.gate import AGENT_KIND, PolicyGate
from cloudisense.agent.memory import SessionMemory
from cloudisense.agent.plan import Plan, PlanStep
from cloudisense.agent.policy import load_policy
from cloudisense.agent.react import run_react
from cloudisense.core.context import ActionContext, CallOrigin
from cloudisense.core.errors import BadRequest, Unavailable
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk, highest_risk, normalize_intent_name
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role

log = logging.getLogger(__name__)

APPROVALS_TOPIC = "/approvals"
#: Intents that may not appear inside a chain or plan (no nesting, no self-approval).
#: The assistant's own intents: never a step of a plan or chain (no recursion, no self-approval).
NOT_IN_STEPS = frozenset({"intent_chain", "agent_execute", "agent_ask", "confirm_action", "query_assist",
                          "chat_llm", "clear_assist_session", "assist_introduction"})


class ChainParams(Params):
    """Ordered steps and what to do when one fails."""

    steps: list[PlanStep] = Field(min_length=1, max_length=20,
                                  description="[{id, intent, params, when}]; params may use ${id.data.field}")
    on_error: Literal["stop", "continue"] = "stop"

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, steps: list[PlanStep]) -> list[PlanStep]:
        ids = [s.id for s in steps if s.id]
        if len(ids) != len(set(ids)):
            raise ValueError("step ids must be unique")
        for step in steps:
            if normalize_intent_name(step.intent) in NOT_IN_STEPS:
                raise ValueError(f"{step.intent} cannot be a step of a chain")
        return steps


class ExecuteParams(ChainParams):
    """A plan to run as the assistant, in a session."""

    session: str | None = Field(None, max_length=64, description="assistant session id (new one when absent)")


class AskParams(Params):
    """One request in plain words."""

    query: str = Field(min_length=1, max_length=4000)
    session: str | None = Field(None, max_length=64)
    mode: Literal["auto", "plan", "react"] = Field(
        "auto", description="auto: planner first, model when unsure; plan: planner only; react: model only")


class ConfirmParams(Params):
    """A decision on a pending approval."""

    approval_id: str = Field(min_length=1, max_length=64)
    approve: bool
    reason: str | None = Field(None, max_length=500)


class ListApprovalsParams(Params):
    """Filters for approvals."""

    status: Literal["pending", "approved", "rejected", "expired", "consumed"] | None = None
    session: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=500)


class AgentModule(Module):
    """Chains, plans, approvals, policy gate, memory and escalation (see the module docstring)."""

    name = "agent"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        settings = node.settings.agent
        # Load the policy now: a bad policy file must stop start-up, not the first request.
        self.policy = load_policy(settings.policy_file)
        self.approvals = ApprovalStore(node.db, settings.approval_ttl)
        self.memory = SessionMemory(node.db)
        self.executor = Executor(node, self.approvals, memory=self.memory)
        self.escalator = Escalator(node, self.memory)
        self.gate = PolicyGate(node, self.policy, self.approvals)
        #: llmcore provider for ReAct; ``None`` with ``[llm] provider = "offline"``. Tests may set it.
        self.provider: Any = None
        #: A :class:`~cloudisense.agent.plan.Planner`; tests and the planner module may set it.
        self.planner: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    def intents(self) -> list[Intent]:
        return [
            Intent("intent_chain", "Run several intents in order; later steps may use earlier results "
                   "(${id.data.field}) and conditions (when)", self.intent_chain, ChainParams, Risk.WRITE,
                   ("check nginx and restart it if it is down", "read the app log then notify the team",
                    "get disk usage and clean up if above 80 percent", "run these steps in order"),
                   risk_for=self._chain_risk, timeout=900, agent_use=AgentUse.COMPOSITE),
            Intent("agent_execute", "Run a plan as the assistant: policy applies to every step and steps "
                   "that need approval pause the plan", self.agent_execute, ExecuteParams, Risk.WRITE,
                   ("execute this plan", "run the proposed steps", "go ahead with the plan",
                    "do these steps as the assistant"), risk_for=self._chain_risk, timeout=900,
                   agent_use=AgentUse.COMPOSITE),
            Intent("agent_ask", "Ask the assistant in plain words; it plans, acts within policy and reports",
                   self.agent_ask, AskParams, Risk.READ,
                   ("why is the site slow", "what is wrong with nginx", "ask the assistant to check the web app",
                    "help me find errors in the logs"), timeout=900, agent_use=AgentUse.ASSISTANT),
            Intent("confirm_action", "Approve or reject an action the assistant is waiting on "
                   "(requester or admin only)", self.confirm_action, ConfirmParams, Risk.READ,
                   ("yes, go ahead with the restart", "approve ap_1234", "reject that action",
                    "no, don't stop nginx"), timeout=900, agent_use=AgentUse.HUMAN_ONLY),
            Intent("list_approvals", "Approvals waiting for a decision, and recent ones", self.list_approvals,
                   ListApprovalsParams, Risk.READ,
                   ("what is waiting for my approval", "pending approvals", "show approvals",
                    "did anyone approve the restart")),
            Intent("list_escalations", "Assistant sessions flagged for a person to look at", self.list_escalations,
                   NoParams, Risk.READ,
                   ("which sessions were escalated", "what does the assistant need help with",
                    "show flagged sessions", "escalations")),
        ]

    async def start(self) -> None:
        await self.approvals.start()
        await self.memory.start()
        self.node.pubsub.add_static(APPROVALS_TOPIC)
        self.node.router.add_gate(self.gate)
        self.provider = self.provider or self._make_provider()
        self._sweeper = asyncio.create_task(self._sweep(), name="approval-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        if self.gate in self.node.router.gates:
            self.node.router.gates.remove(self.gate)

    def _make_provider(self) -> Any:
        spec = self.node.settings.llm.provider
        if not spec or spec == "offline":
            return None
        try:
            from cloudisense.llm.registry import get_provider

            return get_provider(spec, self.node.settings.llm)
        except Exception as exc:  # the assistant still works offline; say why the model is not used
            log.warning("assistant: provider %s unavailable (%s); using the offline planner", spec, exc)
            return None

    async def _sweep(self) -> None:
        """Report approvals that expired undecided (event on /approvals and in the session)."""
        interval = max(1.0, min(30.0, self.node.settings.agent.approval_ttl / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.report_expired()
            except Exception:
                log.exception("approval sweep failed")

    async def report_expired(self) -> list[str]:
        """Mark due approvals expired, publish ``approval_expired`` and note it in their sessions."""
        expired = await self.approvals.expire_due()
        for approval_id in expired:
            approval = await self.approvals.get(approval_id)
            self.node.pubsub.publish(APPROVALS_TOPIC, "approval_expired", approval.public())
            if approval.session:
                await self.memory.add(approval.session, "event", "assistant",
                                      f"approval {approval_id} expired; nothing ran: {approval.description}")
        return expired

    # -- risk -------------------------------------------------------------------

    def _chain_risk(self, params: ChainParams) -> Risk:
        """The highest effective risk among the steps (a step's own params may lower it, e.g. check mode)."""
        risks = []
        for step in params.steps:
            intent = self.node.registry.find(step.intent)
            if intent is None:
                continue  # unknown intents are refused before anything runs
            try:
                risks.append(intent.effective_risk(intent.params.model_validate(step.params)))
            except Exception:  # params with references or errors: judge by the intent's declared risk
                risks.append(intent.risk)
        return highest_risk(risks)

    def _check_known(self, steps: list[PlanStep]) -> None:
        unknown = [s.intent for s in steps if s.intent not in self.node.registry]
        if unknown:
            raise BadRequest(f"unknown intent(s) in steps: {', '.join(unknown)}; list_intents shows what exists")

    # -- handlers ---------------------------------------------------------------

    def notifier(self, ctx: ActionContext, topic: str) -> Any:
        """A callback that sends the run's events to the asking client on ``topic`` (approvals also to /approvals)."""

        def notify(name: str, data: dict[str, Any]) -> None:
            ctx.notify_client(name, topic, data)
            if name == "approval_required":
                self.node.pubsub.publish(APPROVALS_TOPIC, name, data)
        return notify

    async def intent_chain(self, p: ChainParams, ctx: ActionContext) -> dict[str, Any]:
        self._check_known(p.steps)
        agent = ctx.client.kind == AGENT_KIND
        session = getattr(ctx.client, "session", None) if agent else None
        topic = f"/assist/{session}" if session else f"/chain/{ctx.requestid}"
        result = await self.executor.run(p.steps, user=ctx.user, role=ctx.client.role, session=session,
                                         on_error=p.on_error, kind=AGENT_KIND if agent else "chain",
                                         notify=self.notifier(ctx, topic), origin=ctx.as_origin(session=session))
        return result.as_dict()

    async def agent_execute(self, p: ExecuteParams, ctx: ActionContext) -> dict[str, Any]:
        self._check_known(p.steps)
        session = await self.memory.open(p.session, ctx.user, admin=ctx.client.role == Role.ADMIN)
        await self.memory.add_plan(session, {"steps": [s.model_dump(exclude_none=True) for s in p.steps]})
        result = await self.executor.run(p.steps, user=ctx.user, role=ctx.client.role, session=session,
                                         on_error=p.on_error, notify=self.notifier(ctx, f"/assist/{session}"),
                                         origin=ctx.as_origin(session=session))
        return result.as_dict()

    async def confirm_action(self, p: ConfirmParams, ctx: ActionContext) -> dict[str, Any]:
        approval = await self.approvals.decide(p.approval_id, approve=p.approve, user=ctx.user,
                                               role=ctx.client.role, reason=p.reason)
        self.node.pubsub.publish(APPROVALS_TOPIC, "approval_decided", approval.public())
        topic = f"/assist/{approval.session}" if approval.session else f"/chain/{ctx.requestid}"
        reported = len((approval.plan or {}).get("done") or [])  # steps the paused answer already reported
        result: ExecutionResult = await self.executor.resume(approval.id, notify=self.notifier(ctx, topic),
                                                             origin=ctx.as_origin(session=approval.session))
        # ``decided``: the approval just decided; ``approval``: a new one if the plan paused again.
        out = result.as_dict()
        return {**out, "answer": compose_answer(out, self.node.registry, since=reported),
                "decided": (await self.approvals.get(approval.id)).public()}

    async def list_approvals(self, p: ListApprovalsParams, ctx: ActionContext) -> dict[str, Any]:
        requester = None if ctx.client.role == Role.ADMIN else ctx.user
        items = await self.approvals.list(status=p.status, requester=requester, session=p.session, limit=p.limit)
        return {"approvals": [a.public() for a in items]}

    async def list_escalations(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        user = None if ctx.client.role == Role.ADMIN else ctx.user
        return {"escalations": await self.memory.flagged(user)}

    async def agent_ask(self, p: AskParams, ctx: ActionContext) -> dict[str, Any]:
        session = await self.memory.open(p.session, ctx.user, admin=ctx.client.role == Role.ADMIN)
        return await self.ask(p.query, user=ctx.user, role=ctx.client.role, session=session,
                              notify=self.notifier(ctx, f"/assist/{session}"), mode=p.mode,
                              origin=ctx.as_origin(session=session))

    async def ask(self, text: str, *, user: str, role: Role, session: str, notify: Any = None,
                  mode: str = "auto", origin: CallOrigin | None = None) -> dict[str, Any]:
        """One request: plan (planner first), then execute, clarify, escalate or reason with the model."""
        await self.memory.add_message(session, "user", text)
        settings = self.node.settings.agent
        if mode == "react" and self.provider is None:
            raise Unavailable("mode react needs a model provider: set [llm] provider (e.g. openai:gpt-4o-mini)")
        plan = None if mode == "react" else await self._plan(text, role, session)
        if plan is not None:
            await self.memory.add_plan(session, plan.model_dump(), text)
            verdict = assess(plan, min_confidence=settings.min_confidence)
            if verdict.action == "proceed":
                result = await self.executor.run(plan, user=user, role=role, session=session, notify=notify,
                                                 origin=origin)
                failures = await self._recent_failures(session)
                out: dict[str, Any] = {"session": session, "mode": "plan", "plan": plan.model_dump(),
                                       **result.as_dict()}
                out["answer"] = compose_answer(out, self.node.registry)
                if failures >= 2:
                    out["escalation"] = await self.escalator.escalate(session, user, f"{failures} steps failed", text)
                return out
            if verdict.action in ("refuse", "answer"):
                await self.memory.add_message(session, "assistant", verdict.message)
                return {"session": session, "mode": verdict.action, "answer": verdict.message}
            if verdict.action == "escalate" or self.provider is None or mode == "plan":
                if verdict.action == "escalate":
                    esc = await self.escalator.escalate(session, user, verdict.message, text)
                    return {"session": session, "mode": "escalate", "answer": verdict.message, "escalation": esc}
                await self.memory.add_message(session, "assistant", verdict.message)
                return {"session": session, "mode": "clarify", "answer": verdict.message, "question": verdict.message}
        if self.provider is None:
            message = "I could not plan that and no model provider is configured; please rephrase."
            await self.memory.add_message(session, "assistant", message)
            return {"session": session, "mode": "clarify", "answer": message, "question": message}
        react = await run_react(self.provider, text, executor=self.executor, user=user, role=role, session=session,
                                token_budget=self.node.settings.llm.session_token_budget,
                                memory=self.memory, notify=notify, origin=origin)
        out = {"session": session, "mode": "react", **react.as_dict(), "answer": react.reply()}
        if react.stopped == "failures":
            out["escalation"] = await self.escalator.escalate(session, user, "several steps failed", text)
        return out

    async def _recent_failures(self, session: str, window: int = 10) -> int:
        """Failed steps among the session's last ``window`` steps: repeated failures mean "ask a person"."""
        steps = await self.memory.turns(session, ("step",), limit=window)
        return sum(1 for t in steps if t.content.endswith("-> error"))

    async def _plan(self, text: str, role: Role, session: str) -> Plan | None:
        """The planner's plan, or ``None`` when there is no planner (then the model reasons)."""
        planner = self.planner or self._default_planner()
        if planner is None:
            return None

        from cloudisense.agent.catalog import planning_context

        # Only plannable tools (never the assistant itself), the ones the role may not run, names, aliases.
        context = planning_context(self.node.registry, role, self.node.entities(),
                                   aliases=self.node.settings.agent.aliases, history=await self.memory.context(session))
        try:
            plan: Plan = await planner.plan(text, context)
        except Unavailable:
            return None
        if plan.outcome == "execute" and plan.steps and any(s.intent in NOT_IN_STEPS for s in plan.steps):
            raise BadRequest("the planner proposed an assistant intent as a step; refusing")
        return plan

    def _default_planner(self) -> Any:
        """The offline planner, or the hybrid (offline fast path, then the model) when a model is set."""
        from cloudisense.agent.planner import choose_planner

        try:
            self.planner = choose_planner(self.node.settings, self.node.registry, provider=self.provider)
        except Exception:  # a model that can't be built must not take the offline planner down with it
            log.exception("model planner could not be built; using the offline planner")
            from cloudisense.agent.offline import OfflinePlanner

            self.planner = OfflinePlanner()
        return self.planner
