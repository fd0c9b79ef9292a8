"""The assistant module: every assistant intent, wired from explicit parts.

Intents (all owned here; the planner never proposes any of them as a step):

* ``query_assist {query, session}`` (the existing client's), ``agent_ask {query, session, mode}``
  — one request in plain words: plan, act within policy, answer (a :class:`~cloudisense.assistant.turn.Turn`).
* ``chat_llm {prompt, context, params}`` — one model turn; text deltas stream to the asking
  client as ``llm_delta`` events on ``/llm/<session>``, then the response carries the text and usage.
* ``intent_chain {steps, on_error}`` — ordered steps with ids, references and ``when``
  conditions; risk = the highest risk among its steps. Steps run as the caller; when the
  caller is the assistant (kind ``agent``) each step is policy-gated.
* ``agent_execute {steps, session, on_error}`` — run a plan *as the assistant* (policy per step).
* ``confirm_action {approval_id, approve, reason}`` — risk ``read`` on purpose: who may decide
  is "the requester or an admin" (checked by :class:`ApprovalStore`). Approving runs the
  paused step once, then the rest of the plan, as the requester (their current role).
* ``list_approvals``, ``list_escalations``, ``clear_assist_session``, ``assist_introduction``,
  ``llm_usage`` (read).
* ``list_chatops {limit, query, since, alert_id}`` (read): the agent's ChatOps log (:mod:`chatops`);
  ``autonomy_status`` (read) and ``set_autonomy {mode}`` (admin only, never the assistant): the
  agent that answers alerts (:mod:`autonomy`) and its kill switch.
* ``node_context {budget}`` (read) — the bounded summary of the node's state that model prompts
  get (:mod:`~cloudisense.assistant.context_summary`), in plain words.

* ``get_assist_session {session, limit}`` — the conversation so far (questions, each whole answer
  as it was sent, notes such as an expired approval), so a dashboard can resume it after a reload.

Every entry point uses one session rule (:meth:`Assistant.open_session`). Events go to the
calling client on ``/assist/<session>`` (``/chain/<requestid>`` for chains without a session):
``chain_step``, ``approval_required``, ``plan_finished``, and ``assist_delta`` with the answer's
text before the response; approvals also on ``/approvals`` (``approval_required``,
``approval_decided``, ``approval_expired``) for watchers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from pydantic import Field, field_validator

from cloudisense.assistant.approvals import ApprovalStore
from cloudisense.assistant.assistant import Assistant
from cloudisense.assistant.autonomy import AlertResponder, say_status
from cloudisense.assistant.chat import ModelAccess, chat_turn
from cloudisense.assistant.chatops import ChatOpsLog, say_entries
from cloudisense.assistant.context_summary import ContextSummarizer, StatsHistory
from cloudisense.assistant.diagnose import Diagnoser
from cloudisense.assistant.escalation import Escalator, check_routes, notice_intents, routes
from cloudisense.assistant.executor import Executor
from cloudisense.assistant.gate import PolicyGate
from cloudisense.assistant.memory import SessionMemory
from cloudisense.assistant.plan import PlanStep
from cloudisense.assistant.policy import assistant_policy
from cloudisense.assistant.settings import AgentSettings
from cloudisense.assistant.turn import Turn
from cloudisense.core.clients import AGENT_KIND
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk, highest_risk
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role

log = logging.getLogger(__name__)

APPROVALS_TOPIC = "/approvals"


class ChatOptions(Params):
    """Per-request model options of ``chat_llm``."""

    provider: str | None = Field(None, max_length=300, description='"name" or "name:model"; "local" = shipped model')
    model: str | None = Field(None, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32_000)
    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ChatParams(Params):
    """``chat_llm`` params: the prompt, free-form context, and options."""

    prompt: str = Field(min_length=1, max_length=100_000)
    context: dict[str, Any] = Field(default_factory=dict, description="extra facts for the model (JSON)")
    params: ChatOptions = Field(default_factory=ChatOptions)

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 100_000:
            raise ValueError("context is larger than 100000 characters of JSON")
        return value


class QueryParams(Params):
    """``query_assist`` params."""

    query: str = Field(min_length=1, max_length=4000)
    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class SessionParams(Params):
    """Optional session name."""

    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


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
        return steps


class ExecuteParams(ChainParams):
    """A plan to run as the assistant, in a session."""

    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                description="assistant session id (your default session when absent)")


class AskParams(Params):
    """One request in plain words."""

    query: str = Field(min_length=1, max_length=4000)
    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    mode: Literal["auto", "plan", "react"] = Field(
        "auto", description="auto: planner first, model when unsure; plan: planner only; react: model only")


class ConfirmParams(Params):
    """A decision on a pending approval."""

    approval_id: str = Field(min_length=1, max_length=64)
    approve: bool
    reason: str | None = Field(None, max_length=500)


class SessionHistoryParams(Params):
    """``get_assist_session`` params."""

    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    limit: int = Field(200, ge=1, le=1000, description="at most this many of the newest entries")


#: An answer kept for resuming holds its steps' full results only up to this size (a long process list
#: or log search is still in the audit log and one request away).
MAX_KEPT_ANSWER = 200_000


class ListApprovalsParams(Params):
    """Filters for approvals."""

    status: Literal["pending", "approved", "rejected", "expired", "consumed"] | None = None
    session: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=500)


class ListChatOpsParams(Params):
    """Which ChatOps entries to list (newest first)."""

    limit: int = Field(50, ge=1, le=500)
    query: str | None = Field(None, min_length=1, max_length=200, description="a plain substring of the text")
    since: float | None = Field(None, ge=0, description="only entries from this time on (epoch seconds)")
    alert_id: int | None = Field(None, ge=1, description="only entries about this alert")


class SetAutonomyParams(Params):
    """The agent's mode: off stops it at once (kept across restarts)."""

    mode: Literal["off", "suggest", "autonomous"] = Field(
        description="off: the agent does nothing on alerts; suggest: it proposes fixes; "
                    "autonomous: it runs the fixes the policy allows")
class NodeContextParams(Params):
    """How long the summary may be."""

    budget: int | None = Field(None, ge=100, le=20_000,
                               description="tokens (about 4 characters each); default [agent.context] token_budget")


class AssistantModule(Module):
    """The assistant on a node (see the module docstring)."""

    name = "assistant"
    settings_model = AgentSettings
    settings_section = "agent"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        settings = self.settings
        # Load the policy now: a bad policy file must stop start-up, not the first request.
        self.policy = assistant_policy(settings.policy_file, notice_intents(settings))
        self.approvals = ApprovalStore(node.db, settings.approval_ttl)
        self.memory = SessionMemory(node.db)
        self.model = ModelAccess(node.settings.llm, node.db, node.metrics.registry)
        self.executor = Executor(node, self.approvals, memory=self.memory)
        self.escalator = Escalator(node.router, node.pubsub, self.memory, identity=node.identity,
                                   routes=routes(settings), repeat_after=settings.escalation.repeat_after)
        self.gate = PolicyGate(node, self.policy, self.approvals)
        self.assistant = Assistant(registry=node.registry, entities=node.entities, memory=self.memory,
                                   approvals=self.approvals, executor=self.executor, escalator=self.escalator,
                                   settings=node.settings)
        self.assistant.diagnoser = Diagnoser(self.executor, self.approvals, self.policy)
        self.chatops = ChatOpsLog(node.db, node.pubsub, node.identity)
        self.responder = AlertResponder(node, settings, executor=self.executor, approvals=self.approvals,
                                        policy=self.policy, diagnoser=self.assistant.diagnoser,
                                        escalator=self.escalator, memory=self.memory, chatops=self.chatops,
                                        approvals_topic=APPROVALS_TOPIC)
        self.stats_history = StatsHistory(settings.context.history_seconds)
        self.context = ContextSummarizer(self.executor, self.stats_history, settings.context)
        self.context.room = self._context_room
        self.assistant.context = self.context
        self._sweeper: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None

    def intents(self) -> list[Intent]:
        ask_examples = ("is nginx up?", "show errors in the app log from the last hour")
        return [
            Intent("query_assist", "Ask the assistant in plain words: it plans intents, acts within policy "
                   "and reports what it did and found", self.query_assist, QueryParams, Risk.READ,
                   ask_examples, timeout=900, agent_use=AgentUse.ASSISTANT),
            Intent("agent_ask", "Ask the assistant in plain words, choosing how it plans (auto, plan, react)",
                   self.agent_ask, AskParams, Risk.READ,
                   ("why is the site slow", "what is wrong with nginx"), timeout=900, agent_use=AgentUse.ASSISTANT),
            Intent("chat_llm", "Talk to the configured language model; the answer streams as it is generated",
                   self.chat_llm, ChatParams, Risk.READ,
                   ("ask the model to explain a load average of 4", "chat with the llm",
                    "what does OOM killer mean"), timeout=600, agent_use=AgentUse.ASSISTANT),
            Intent("clear_assist_session", "Forget the assistant conversation of this session",
                   self.clear_assist_session, SessionParams, Risk.READ,
                   ("clear the chat", "forget our conversation", "start over"), agent_use=AgentUse.ASSISTANT),
            Intent("get_assist_session", "The assistant conversation of a session so far (to resume it)",
                   self.get_assist_session, SessionHistoryParams, Risk.READ,
                   ("show our conversation", "what did I ask before"), agent_use=AgentUse.ASSISTANT),
            Intent("assist_introduction", "What the assistant can do here, with example requests",
                   self.assist_introduction, NoParams, Risk.READ,
                   ("what can you do", "help", "introduce yourself"), agent_use=AgentUse.ASSISTANT),
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
            Intent("llm_usage", "Language model tokens used, per session, user and provider", self.llm_usage,
                   SessionParams, Risk.READ, ("how many tokens did I use", "llm usage", "token budget left")),
            Intent("list_chatops", "The agent's ChatOps log: what it observed, proposed, did and concluded about "
                   "alerts, newest first, searchable", self.list_chatops, ListChatOpsParams, Risk.READ,
                   ("show the chatops log", "what did the agent do", "what did the agent do about alert 3",
                    "search the chatops log for restart"), say=say_entries),
            Intent("autonomy_status",
                   "Autonomy mode (off, suggest, autonomous), identity and hard limits of the alert agent",
                   self.autonomy_status, NoParams, Risk.READ,
                   ("is autonomy on", "autonomy status", "what is the autonomy mode", "is the kill switch on"),
                   say=say_status),
            Intent("set_autonomy", "Switch the agent off (kill switch), to suggestions only, or autonomous; "
                   "takes effect at once and is kept across restarts", self.set_autonomy, SetAutonomyParams,
                   Risk.WRITE, ("stop autonomy", "turn the agent off", "set autonomy to suggest",
                                "let the agent act on its own"),
                   admin_only=True, agent_use=AgentUse.HUMAN_ONLY, say=say_status),
            Intent("node_context", "A short summary of this node's state: figures with trends, targets, firing "
                   "alerts, recent problem log lines, recent actions and top processes", self.node_context,
                   NodeContextParams, Risk.READ,
                   ("summarize the state of this node", "give me an overview of the server",
                    "what is the current state of the node", "node summary"), timeout=60, say=_say_context),
        ]

    async def start(self) -> None:
        # Every module's intents are registered by now: a routed channel that is missing stops start-up.
        check_routes(self.settings, self.node.registry)
        await self.approvals.start()
        await self.memory.start()
        await self.model.start()
        self.node.pubsub.add_static(APPROVALS_TOPIC)
        self.node.pubsub.add_listener(self.stats_history.on_event)
        self.node.router.add_gate(self.gate)
        if self.assistant.provider is None:
            self.assistant.provider = self.model.default_service()
        await self.chatops.start()
        await self.responder.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="approval-sweeper")
        llm = self.node.settings.llm
        if llm.provider.split(":", 1)[0] == "local" and llm.providers.local_warm_up:
            self._warming = asyncio.create_task(self.assistant.warm_up(), name="assistant-warm-up")

    async def stop(self) -> None:
        await self.responder.stop()
        await self.chatops.stop()
        self.node.pubsub.remove_listener(self.stats_history.on_event)
        for task in (self._sweeper, self._warming):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self.gate in self.node.router.gates:
            self.node.router.gates.remove(self.gate)

    async def _sweep(self) -> None:
        """Report approvals that expired undecided (event on /approvals and in the session)."""
        interval = max(1.0, min(30.0, self.settings.approval_ttl / 4))
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
            self.responder.decided(approval.public(), [])
            if approval.session:
                await self.memory.add(approval.session, "event", "assistant",
                                      f"approval {approval_id} expired; nothing ran: {approval.description}")
        return expired

    # -- risk and checks ----------------------------------------------------------

    def _context_room(self, session: str | None, user: str) -> int | None:
        """Tokens the session's and the user's model budgets still allow (``None``: no budget is set)."""
        llm = self.node.settings.llm
        ledger = self.model.ledger
        left = [b - used for b, used in ((llm.session_token_budget, ledger.session_used(session) if session else 0),
                                         (llm.user_token_budget, ledger.user_used(user))) if b]
        return max(0, min(left)) if left else None

    def _chain_risk(self, params: ChainParams) -> Risk:
        """The highest effective risk among the steps (a step's own params may lower it, e.g. check mode).

        The router asks for the risk before the role check, so a step that may never be one (the
        assistant's own intents) is refused here, as bad input, whoever sends it.
        """
        risks = []
        for step in params.steps:
            intent = self.node.registry.find(step.intent)
            if intent is None:
                continue  # unknown intents are refused before anything runs
            if not intent.may_be_step:
                raise BadRequest(f"{intent.name} cannot be a step of a chain (the assistant's own intents)")
            try:
                risks.append(intent.effective_risk(intent.params.model_validate(step.params)))
            except Exception:  # params with references or errors: judge by the intent's declared risk
                risks.append(intent.risk)
        return highest_risk(risks)

    def _check_steps(self, steps: list[PlanStep]) -> None:
        unknown = [s.intent for s in steps if s.intent not in self.node.registry]
        if unknown:
            raise BadRequest(f"unknown intent(s) in steps: {', '.join(unknown)}; `cloudisense intents` lists them")
        nested = [s.intent for s in steps if not self.node.registry.get(s.intent).may_be_step]
        if nested:
            raise BadRequest(f"{', '.join(nested)} cannot be a step of a chain (the assistant's own intents)")

    def notifier(self, ctx: ActionContext, topic: str) -> Any:
        """A callback that sends the run's events to the asking client on ``topic`` (approvals also to /approvals)."""

        def notify(name: str, data: dict[str, Any]) -> None:
            ctx.notify_client(name, topic, data)
            if name == "approval_required":
                self.node.pubsub.publish(APPROVALS_TOPIC, name, data)
        return notify

    # -- handlers -----------------------------------------------------------------

    async def _on_other_node(self, query: str, ctx: ActionContext, intent: str,
                             extra: dict[str, Any]) -> dict[str, Any] | None:
        """The answer of another node's assistant when ``query`` names that node ("what's wrong on node-b?").

        Each node's agent answers for its own node: the rest of the request goes to that node's
        ``intent`` through the router (``serviceId``) as the asking user, so that node's roles (capped
        by its ``max_remote_role``), policy and audit apply there. ``None``: the request is for this node.
        """
        from cloudisense.core.clients import InProcessClient
        from cloudisense.core.errors import CloudisenseError
        from cloudisense.federation.fleet import named_node

        remote = self.node.router.remote
        found = named_node(query, remote.knows, self.node.identity) if remote is not None else None
        if found is None:
            return None
        node, rest = found
        client = InProcessClient(self.node.router, ctx.user, ctx.client.role, kind=ctx.client.kind,
                                 policy_applies=ctx.client.policy_applies)
        response = await client.call(intent, {"query": rest, **extra}, service_id=node, origin=ctx.as_origin())
        if response.get("status") != "success":
            raise CloudisenseError(f"node {node}: {response.get('message') or 'no answer'}",
                                   code=int(response.get("code") or 502))
        data = dict(response.get("data") or {})
        note = f"Node {node} answered (its assistant checked it):"
        if data.get("outcome") == "awaiting_approval":
            note += f" its approval is on node {node}: decide it there (confirm_action with serviceId {node})."
        data["answer"] = f"{note}\n{data.get('answer') or ''}".rstrip()
        data["node"] = node
        return data

    async def query_assist(self, p: QueryParams, ctx: ActionContext) -> dict[str, Any]:
        elsewhere = await self._on_other_node(p.query, ctx, "query_assist", {})
        if elsewhere is not None:
            return elsewhere
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        topic = f"/assist/{session}"
        turn = await self.assistant.ask(p.query, user=ctx.user, role=ctx.client.role, session=session,
                                        notify=self.notifier(ctx, topic), origin=ctx.as_origin(session=session))
        return await self.answered(ctx, topic, turn)

    async def agent_ask(self, p: AskParams, ctx: ActionContext) -> dict[str, Any]:
        elsewhere = await self._on_other_node(p.query, ctx, "agent_ask", {"mode": p.mode})
        if elsewhere is not None:
            return elsewhere
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        topic = f"/assist/{session}"
        turn = await self.assistant.ask(p.query, user=ctx.user, role=ctx.client.role, session=session,
                                        notify=self.notifier(ctx, topic), mode=p.mode,
                                        origin=ctx.as_origin(session=session))
        return await self.answered(ctx, topic, turn)

    async def intent_chain(self, p: ChainParams, ctx: ActionContext) -> dict[str, Any]:
        self._check_steps(p.steps)
        agent = ctx.client.kind == AGENT_KIND
        session = ctx.origin.session if agent and ctx.origin is not None else None
        topic = f"/assist/{session}" if session else f"/chain/{ctx.requestid}"
        turn = await self.assistant.run_steps(p.steps, user=ctx.user, role=ctx.client.role, session=session,
                                              on_error=p.on_error, kind=AGENT_KIND if agent else "chain",
                                              notify=self.notifier(ctx, topic), origin=ctx.as_origin(session=session))
        return turn.to_wire()

    async def agent_execute(self, p: ExecuteParams, ctx: ActionContext) -> dict[str, Any]:
        self._check_steps(p.steps)
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        await self.memory.add_plan(session, {"steps": [s.model_dump(exclude_none=True) for s in p.steps]})
        turn = await self.assistant.run_steps(p.steps, user=ctx.user, role=ctx.client.role, session=session,
                                              on_error=p.on_error, kind=AGENT_KIND,
                                              notify=self.notifier(ctx, f"/assist/{session}"),
                                              origin=ctx.as_origin(session=session))
        return turn.to_wire()

    async def confirm_action(self, p: ConfirmParams, ctx: ActionContext) -> dict[str, Any]:
        approval = await self.approvals.get(p.approval_id)
        topic = f"/assist/{approval.session}" if approval.session else f"/chain/{ctx.requestid}"
        turn, decided = await self.assistant.confirm(
            p.approval_id, approve=p.approve, user=ctx.user, role=ctx.client.role, reason=p.reason,
            notify=self.notifier(ctx, topic), origin=ctx.as_origin(session=approval.session))
        self.node.pubsub.publish(APPROVALS_TOPIC, "approval_decided", decided)
        run = turn.run
        self.responder.decided(decided, run.steps if run is not None else [],
                               run.approval if run is not None and run.status == "paused" else None)
        # ``decided``: the approval just decided; ``approval``: a new one if the plan paused again.
        return await self.answered(ctx, topic, turn, decided=decided)

    async def answered(self, ctx: ActionContext, topic: str, turn: Turn, **extra: Any) -> dict[str, Any]:
        """The response of a turn (its wire form and ``extra``), after its text went out as an
        ``assist_delta`` event (unless already sent); kept in the session so it can be resumed."""
        wire = {**turn.to_wire(), **extra}
        if not turn.streamed:
            ctx.notify_client("assist_delta", topic,
                              {"session": turn.session or None, "text": turn.answer, "final": True})
        if not turn.session:  # an approval asked outside a session: nothing to resume
            return wire
        kept = wire
        if len(json.dumps(wire, default=str)) > MAX_KEPT_ANSWER:
            kept = {**wire, "steps": [{k: v for k, v in step.items() if k != "data"} for step in wire.get("steps", [])],
                    "trimmed": True}
        await self.memory.add(turn.session, "answer", "assistant", turn.answer, kept)
        return wire

    async def list_approvals(self, p: ListApprovalsParams, ctx: ActionContext) -> dict[str, Any]:
        requester = None if ctx.client.role == Role.ADMIN else ctx.user
        items = await self.approvals.list(status=p.status, requester=requester, session=p.session, limit=p.limit)
        return {"approvals": [a.public() for a in items]}

    async def list_escalations(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        user = None if ctx.client.role == Role.ADMIN else ctx.user
        return {"escalations": await self.memory.flagged(user)}

    async def list_chatops(self, p: ListChatOpsParams, ctx: ActionContext) -> dict[str, Any]:
        entries, total = await self.chatops.search(limit=p.limit, query=p.query, since=p.since, alert_id=p.alert_id)
        return {"entries": entries, "count": len(entries), "total": total,
                "filters": p.model_dump(exclude_none=True, exclude={"limit"})}

    async def autonomy_status(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        return await self.responder.status()

    async def set_autonomy(self, p: SetAutonomyParams, ctx: ActionContext) -> dict[str, Any]:
        await self.responder.set_mode(p.mode, ctx.user)
        return await self.responder.status()

    async def chat_llm(self, p: ChatParams, ctx: ActionContext) -> dict[str, Any]:
        session = await self.assistant.open_session(p.params.session, ctx.user, ctx.client.role)
        service = self.model.service(p.params.provider)
        topic = f"/llm/{session}"

        def on_delta(text: str) -> None:
            ctx.notify_client("llm_delta", topic, {"text": text, "session": session, "requestid": ctx.requestid})

        summary = await self.context.text(user=ctx.user, role=ctx.client.role, session=session,
                                          origin=ctx.as_origin(session=session))
        return await chat_turn(service, self.memory, session, ctx.user, p.prompt, context=p.context,
                               model=p.params.model, temperature=p.params.temperature,
                               max_tokens=p.params.max_tokens, on_delta=on_delta, node_context=summary)

    async def clear_assist_session(self, p: SessionParams, ctx: ActionContext) -> dict[str, Any]:
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        await self.memory.clear(session)
        self.model.ledger.reset_session(session)
        return {"session": session, "cleared": True}

    async def get_assist_session(self, p: SessionHistoryParams, ctx: ActionContext) -> dict[str, Any]:
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        turns = await self.memory.turns(session, ("message", "event", "answer"), limit=p.limit)
        return {"session": session, "entries": history_entries(turns)}

    async def assist_introduction(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        return self.assistant.introduction(ctx.client.role)

    async def llm_usage(self, p: SessionParams, ctx: ActionContext) -> dict[str, Any]:
        session = await self.assistant.open_session(p.session, ctx.user, ctx.client.role)
        settings = self.node.settings.llm
        ledger = self.model.ledger
        providers = {name: {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
                     for name, u in ledger.provider_usage().items()} if ctx.client.role == Role.ADMIN else {}
        return {
            "session": {"id": session, "used": ledger.session_used(session),
                        "budget": settings.session_token_budget or None},
            "user": {"id": ctx.user, "used": ledger.user_used(ctx.user), "budget": settings.user_token_budget or None},
            "providers": providers,
        }

    async def node_context(self, p: NodeContextParams, ctx: ActionContext) -> dict[str, Any]:
        summary = await self.context.summary(user=ctx.user, role=ctx.client.role, origin=ctx.as_origin(),
                                             budget=p.budget)
        return summary.to_wire()


def _say_context(p: Any, d: dict[str, Any]) -> str:
    return str(d.get("text") or "no summary")


def history_entries(turns: list[Any]) -> list[dict[str, Any]]:
    """A session's conversation for a person: questions, answers, notes, oldest first.

    A request's whole answer (kind ``answer``) replaces the plain-text message its parts wrote
    just before it (the executor's summary, an investigation's text), so each answer shows once.
    """
    entries: list[dict[str, Any]] = []
    since_question: list[int] = []  # positions of assistant messages since the last question
    for t in turns:
        if t.kind == "message" and t.role == "user":
            entries.append({"ts": t.ts, "role": "user", "text": t.content})
            since_question = []
        elif t.kind == "answer":
            for index in reversed(since_question):
                del entries[index]
            since_question = []
            entries.append({"ts": t.ts, "role": "assistant", "text": t.content, "turn": t.data})
        elif t.kind == "message":
            since_question.append(len(entries))
            entries.append({"ts": t.ts, "role": "assistant", "text": t.content})
        else:
            entries.append({"ts": t.ts, "role": "note", "text": t.content})
    return entries
