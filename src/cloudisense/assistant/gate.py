"""The policy gate: complete mediation of every agent-initiated RPC.

Installed on the router (``node.router.add_gate``), it sees every call after
params validation and role checks. Calls from automated clients
(``Client.policy_applies``: kinds ``agent``, ``mcp``, ``langchain``) get a policy
decision, whatever the model wrote; other clients (people, reaction rules) pass
untouched. The router writes the verdict's decision and rule into
the audit record.

A ``confirm`` decision persists an approval and answers 202 with
``{"approval_required": true, "approval_id", "description", "expires", ...}``.
A resumed call carries the approval id in its :class:`CallOrigin`; the gate
consumes the approval atomically (exactly that intent and params, once) and lets
it run with rule ``approval:<id>``. The run state persisted with an approval is
the asking :class:`AgentClient`'s typed ``run_state``, or a one-step run for
other automated clients (MCP, LangChain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudisense.assistant.approvals import ApprovalStore
from cloudisense.assistant.executor import AgentClient, RunState
from cloudisense.assistant.policy import PolicyEngine
from cloudisense.core.intents import AgentUse
from cloudisense.core.router import Call, Verdict

if TYPE_CHECKING:
    from cloudisense.node import Node



def describe_call(intent: Any, params: Any, node: str, risk: str) -> str:
    """``restart_target web on node demo (risk write) — Restart a target``: exactly what will run."""
    given = params.model_dump(mode="json", exclude_defaults=True) if hasattr(params, "model_dump") else dict(params)
    if set(given) == {"name"}:
        args = str(given["name"])
    else:
        args = ", ".join(f"{k}={_short(v)}" for k, v in sorted(given.items()))
    head = f"{intent.name} {args}".rstrip()
    return f"{head} on node {node} (risk {risk}) — {intent.description}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class PolicyGate:
    """Applies a :class:`PolicyEngine` to agent calls and turns ``confirm`` into approvals."""

    def __init__(self, node: Node, engine: PolicyEngine, approvals: ApprovalStore) -> None:
        self.node = node
        self.engine = engine
        self.approvals = approvals

    async def __call__(self, call: Call) -> Verdict | None:
        client = call.client
        if not client.policy_applies:
            return None
        name = call.intent.name
        use = call.intent.agent_use
        params = call.params.model_dump(mode="json")
        if use is AgentUse.HUMAN_ONLY:
            # Approvals are for people: an automated caller deciding one would approve its own actions.
            return Verdict.deny(f"{name} must be done by a person, not by the assistant", rule="builtin:human-only")
        if use is AgentUse.ASSISTANT:
            # Another assistant run inside this one: unbounded recursion and model spend from one
            # prompt-injected tool call.
            return Verdict.deny(f"the assistant may not call {name} (it would start another assistant run)",
                                rule="builtin:no-recursion")
        origin = call.origin
        approval_id = origin.approval_id if origin is not None else None
        if approval_id:
            # The origin is made for this one call, so an approval covers one call only.
            if await self.approvals.consume(approval_id, name, params):
                return Verdict.allow(f"approval:{approval_id}")
            return Verdict.deny(f"approval {approval_id} does not cover this call now (already used, not approved, "
                                "or for another step); nothing ran", rule=f"approval:{approval_id}")
        decision = self.engine.decide(name, params, call.risk, client.role.value, self.node.identity, client.kind)
        if use is AgentUse.COMPOSITE and decision.is_default:
            return Verdict.allow("builtin:composite-steps-gated")
        if decision.decision == "allow":
            return Verdict.allow(decision.rule)
        if decision.decision == "deny":
            return Verdict.deny(f"{decision.reason} (rule {decision.rule})", rule=decision.rule)
        description = describe_call(call.intent, call.params, self.node.identity, call.risk.value)
        session = origin.session if origin is not None else None
        run_state = client.run_state if isinstance(client, AgentClient) else None
        if run_state is None:  # a single call (MCP, LangChain): resumed as one step, as the same kind of client
            run_state = RunState(steps=[{"intent": name, "params": params}], user=client.user, role=client.role,
                                 session=session, kind=client.kind)
        approval = await self.approvals.create(
            requester=client.user, requester_role=client.role.value, intent=name, params=params,
            risk=call.risk.value, description=description, rule=decision.rule,
            session=session, plan=run_state.model_dump(mode="json"),
        )
        data = {"approval_required": True, "approval_id": approval.id, "description": description,
                "expires": int(approval.expires * 1000), "intent": name, "params": params,
                "risk": call.risk.value, "rule": decision.rule, "reason": decision.reason}
        return Verdict("confirm", decision.rule, decision.reason, data)
