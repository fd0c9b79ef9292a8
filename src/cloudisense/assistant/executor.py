"""The executor: runs a plan step by step through the router, as the requesting user.

Each step becomes an ordinary RPC message sent to ``MessageRouter.handle_messages``
by an :class:`AgentClient` (an in-process client of kind ``agent`` carrying the
user's name and role), so it gets the same params validation, role checks,
audit and policy gate as a browser request. Observations are the
``rpc_response`` of each step, trimmed to ``max_observation_chars``.

A 202 ``approval_required`` answer pauses the plan: the gate has persisted the
approval with the executor's state (remaining steps, earlier results), the
caller gets an ``approval_required`` event, and :meth:`Executor.resume` picks up
from the approval record — also after a server restart.

Events go to ``notify(name, data)`` (the module sends them to the calling
client on topic ``/assist/<session>``): ``chain_step`` per step,
``approval_required`` on a pause, ``plan_finished`` at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudisense.assistant import chains
from cloudisense.assistant.approvals import Approval, ApprovalStore
from cloudisense.assistant.memory import SessionMemory
from cloudisense.assistant.plan import Plan, PlanStep
from cloudisense.assistant.settings import agent_settings
from cloudisense.core.clients import AGENT_KIND, AUTOMATED_KINDS, InProcessClient
from cloudisense.core.context import CallOrigin
from cloudisense.core.errors import Conflict
from cloudisense.core.roles import Role

if TYPE_CHECKING:
    from cloudisense.node import Node

Notify = Callable[[str, dict[str, Any]], None]
StepStatus = Literal["ok", "error", "denied", "skipped", "pending_approval", "rejected", "expired"]
RunStatus = Literal["completed", "failed", "paused", "rejected", "expired"]


class RunState(BaseModel):
    """Where a run is: what an approval persists so the plan can continue later (also after a restart)."""

    model_config = ConfigDict(extra="ignore")

    #: The plan's steps as ``PlanStep`` dicts; steps already run hold their resolved params.
    steps: list[dict[str, Any]]
    #: The next step to run.
    index: int = 0
    #: Results of earlier steps by step id (what ``${id.data...}`` references see).
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: ``StepResult`` dicts of the steps done so far.
    done: list[dict[str, Any]] = Field(default_factory=list)
    on_error: Literal["stop", "continue"] = "stop"
    user: str
    role: Role
    session: str | None = None
    #: Client kind the steps run as (``agent``: policy-gated; ``chain``: a person's chain; ``mcp``...).
    kind: str = AGENT_KIND


class AgentClient(InProcessClient):
    """An in-process client acting for a user; for automated kinds (``agent``, ``mcp``, ...) the policy gate applies.

    ``run_state`` is what the gate persists with an approval when a step of this run needs one.
    """

    def __init__(self, router: Any, user: str, role: Role | str, *, kind: str = AGENT_KIND,
                 session: str | None = None, run_state: RunState | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(router, user, Role(role), kind=kind, policy_applies=kind in AUTOMATED_KINDS,
                         on_event=on_event)
        self.session = session
        self.run_state = run_state


@dataclass
class StepResult:
    """What one step did (``data`` is the full result; ``observation`` the trimmed text)."""

    index: int
    id: str | None
    intent: str
    params: dict[str, Any]
    status: StepStatus
    code: int = 0
    data: Any = None
    message: str | None = None
    observation: str = ""
    rule: str | None = None

    def ref(self) -> dict[str, Any]:
        """What ``${id...}`` references see."""
        return {"status": self.status, "code": self.code, "data": self.data, "message": self.message}


@dataclass
class ExecutionResult:
    """The outcome of running (part of) a plan."""

    status: RunStatus
    steps: list[StepResult] = field(default_factory=list)
    session: str | None = None
    approval: dict[str, Any] | None = None
    not_run: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON for the wire."""
        out = asdict(self)
        for step in out["steps"]:
            step.pop("observation", None)
        return out


def observe(response: dict[str, Any], limit: int) -> str:
    """The text of a response a model may see, at most ``limit`` characters."""
    if response.get("status") == "success":
        text = json.dumps(response.get("data"), default=str, ensure_ascii=False)
    else:
        text = f"error {response.get('code')}: {response.get('message')}"
    if len(text) > limit:
        text = text[:limit] + f"… [truncated {len(text) - limit} characters]"
    return text


def summarize(result: ExecutionResult) -> str:
    """What was done and found, built only from the steps' actual outcomes."""
    lines: list[str] = []
    for step in result.steps:
        label = f"{step.intent}" + (f" ({step.id})" if step.id else "")
        if step.status == "ok":
            lines.append(f"ran {label}: {step.observation[:300]}")
        elif step.status == "skipped":
            lines.append(f"skipped {label}: {step.message}")
        elif step.status == "pending_approval":
            lines.append(f"did NOT run {label} yet: waiting for approval {(result.approval or {}).get('approval_id')}"
                         f" — {(result.approval or {}).get('description')}")
        elif step.status == "denied":
            lines.append(f"did NOT run {label}: refused ({step.message})")
        elif step.status in ("rejected", "expired"):
            lines.append(f"did NOT run {label}: the approval was {step.status}")
        else:
            lines.append(f"{label} failed: {step.message}")
    if result.not_run:
        lines.append("not run: " + ", ".join(s.get("intent", "?") for s in result.not_run))
    return "\n".join(lines) or "nothing was run"


class Executor:
    """Runs plans and chains through the router (see the module docstring)."""

    def __init__(self, node: Node, approvals: ApprovalStore, *, memory: SessionMemory | None = None,
                 max_observation_chars: int | None = None) -> None:
        self.node = node
        self.approvals = approvals
        self.memory = memory
        self.max_observation_chars = max_observation_chars or agent_settings(node.settings).max_observation_chars

    async def call(self, intent: str, params: dict[str, Any], *, user: str, role: Role | str,
                   session: str | None = None, kind: str = AGENT_KIND, run_state: RunState | None = None,
                   approval_id: str | None = None, origin: CallOrigin | None = None) -> dict[str, Any]:
        """Send one RPC through the router as ``user``; returns its ``rpc_response``.

        ``origin`` is the request this call is made for (a sub-call takes no node-wide permit);
        ``approval_id`` names the approved approval this one call may consume.
        """
        client = AgentClient(self.node.router, user, role, kind=kind, session=session, run_state=run_state)
        if origin is not None or approval_id is not None or session is not None:
            base = origin or CallOrigin(requestid="", user=user, role=Role(role), client_kind=kind)
            origin = replace(base, session=session, approval_id=approval_id)
        return await client.call(intent, params, requestid=f"agent-{uuid.uuid4().hex[:16]}", origin=origin)

    async def run(self, plan: Plan | list[PlanStep] | list[dict[str, Any]], *, user: str, role: Role | str,
                  session: str | None = None, on_error: str = "stop", kind: str = AGENT_KIND,
                  notify: Notify | None = None, origin: CallOrigin | None = None) -> ExecutionResult:
        """Run every step in order; pauses at the first step that needs approval."""
        steps = plan.steps if isinstance(plan, Plan) else [PlanStep.model_validate(s) for s in plan]
        state = RunState(steps=[s.model_dump(exclude_none=True) for s in steps], on_error=on_error,
                         user=user, role=Role(role), session=session, kind=kind)
        return await self._run_from(state, notify, origin)

    async def resume(self, approval_id: str, *, notify: Notify | None = None,
                     origin: CallOrigin | None = None) -> ExecutionResult:
        """Continue the plan an approval paused: run the approved step once, then the rest.

        Rejected or expired approvals run nothing and are reported as such.
        """
        approval = await self.approvals.get(approval_id)
        # The requester's role now, not when they asked: a user demoted since then must not get the
        # old role back by approving their own request. System users (``reactions``) have no record.
        current = await self.node.users.get(approval.requester)
        role = current.role if current is not None else Role(approval.requester_role)
        state = approval_run_state(approval)
        state.user, state.role, state.session = approval.requester, role, approval.session
        done = [StepResult(**d) for d in state.done]
        index = state.index
        step_def = state.steps[index] if index < len(state.steps) else {"intent": approval.intent}
        if approval.status in ("rejected", "expired"):
            status: Any = approval.status
            step = StepResult(index, step_def.get("id"), approval.intent, approval.params, status,
                              message=f"approval {approval.id} was {approval.status}"
                              + (f" by {approval.decided_by}" if approval.decided_by else "")
                              + (f": {approval.reason}" if approval.reason else ""))
            return await self._finish(status, [*done, step], state, index + 1, notify, approval)
        if approval.status != "approved":
            raise Conflict(f"approval {approval.id} is {approval.status}; only an approved approval can be resumed"
                           + (" (it already ran once)" if approval.status == "consumed" else ""))
        response = await self.call(approval.intent, approval.params, user=state.user, role=state.role,
                                   session=state.session, kind=state.kind, approval_id=approval.id,
                                   origin=origin)
        step = self._record(index, step_def.get("id"), approval.intent, approval.params, response)
        if step_def.get("id"):
            state.results[step_def["id"]] = step.ref()
        await self._after_step(step, state, notify)
        state.done = [asdict(s) for s in done] + [asdict(step)]
        if step.status != "ok" and state.on_error == "stop":
            return await self._finish("failed", [*done, step], state, index + 1, notify)
        state.index = index + 1
        return await self._run_from(state, notify, origin)

    async def _run_from(self, state: RunState, notify: Notify | None,
                        origin: CallOrigin | None) -> ExecutionResult:
        done = [StepResult(**d) for d in state.done]
        results = state.results
        failed = any(s.status in ("error", "denied") for s in done)
        index = state.index
        while index < len(state.steps):
            raw = state.steps[index]
            sid, intent = raw.get("id"), raw["intent"]
            try:
                if raw.get("when") and not chains.evaluate(raw["when"], results):
                    step = StepResult(index, sid, intent, raw.get("params", {}), "skipped",
                                      message=f"condition {raw['when']!r} is false")
                    done.append(step)
                    await self._after_step(step, state, notify)
                    index += 1
                    continue
                params = chains.resolve(raw.get("params", {}), results)
            except chains.ChainError as exc:
                step = StepResult(index, sid, intent, raw.get("params", {}), "error", exc.code, message=exc.message)
            else:
                # What the gate stores if this step needs approval: enough to continue after a restart.
                snapshot = state.model_copy(update={
                    "index": index, "done": [asdict(s) for s in done], "results": dict(results),
                    "steps": [*state.steps[:index], {**raw, "params": params}, *state.steps[index + 1:]]})
                response = await self.call(intent, params, user=state.user, role=state.role,
                                           session=state.session, kind=state.kind, run_state=snapshot,
                                           origin=origin)
                step = self._record(index, sid, intent, params, response)
            done.append(step)
            if sid:
                results[sid] = step.ref()
            await self._after_step(step, state, notify)
            if step.status == "pending_approval":
                approval = await self.approvals.get(step.data["approval_id"])
                return await self._finish("paused", done, state, index + 1, notify, approval)
            if step.status != "ok":
                failed = True
                if state.on_error == "stop":
                    return await self._finish("failed", done, state, index + 1, notify)
            index += 1
        return await self._finish("failed" if failed else "completed", done, state, index, notify)

    def _record(self, index: int, sid: str | None, intent: str, params: dict[str, Any],
                response: dict[str, Any]) -> StepResult:
        code = int(response.get("code", 500))
        text = observe(response, self.max_observation_chars)
        if response.get("status") == "success" and code == 202 and isinstance(response.get("data"), dict) \
                and response["data"].get("approval_required"):
            return StepResult(index, sid, intent, params, "pending_approval", code, response["data"],
                              "waiting for approval", text, response["data"].get("rule"))
        if response.get("status") == "success":
            return StepResult(index, sid, intent, params, "ok", code, response.get("data"), None, text)
        status: StepStatus = "denied" if code == 403 else "error"
        return StepResult(index, sid, intent, params, status, code, None, response.get("message"), text)

    async def _after_step(self, step: StepResult, state: RunState, notify: Notify | None) -> None:
        if notify is not None:
            notify("chain_step", {"session": state.session, "index": step.index, "id": step.id,
                                  "intent": step.intent, "status": step.status, "code": step.code,
                                  "message": step.message, "total": len(state.steps)})
        if self.memory is not None and state.session:
            await self.memory.add_step(state.session, {k: v for k, v in asdict(step).items() if k != "data"})

    async def _finish(self, status: RunStatus, done: list[StepResult], state: RunState, next_index: int,
                      notify: Notify | None, approval: Approval | None = None) -> ExecutionResult:
        result = ExecutionResult(status, done, state.session)
        result.not_run = [{"intent": s["intent"], "id": s.get("id")} for s in state.steps[next_index:]]
        if approval is not None:
            result.approval = approval.public()
        result.summary = summarize(result)
        if notify is not None:
            if status == "paused" and result.approval:
                notify("approval_required", {**result.approval, "summary": result.summary})
            notify("plan_finished", {"session": state.session, "status": status, "summary": result.summary})
        if self.memory is not None and state.session:
            await self.memory.add_message(state.session, "assistant", result.summary)
        return result


def approval_run_state(approval: Approval) -> RunState:
    """The run an approval paused; a single-step run when it was asked outside a plan (MCP, a model tool call)."""
    if approval.plan:
        return RunState.model_validate(approval.plan)
    return RunState(steps=[{"intent": approval.intent, "params": approval.params}], user=approval.requester,
                    role=Role(approval.requester_role), session=approval.session)
