"""The fleet: questions about another node, and every node's alerts in one answer.

* :func:`named_node` finds "on node-b" (also "at", "of", "for", "in", with or without the word
  "node") in a request when node-b is another node online in the federation; the assistant then
  sends the rest of the request to that node's assistant, whose agent answers for its own node.
* :func:`fleet_alerts` asks every reachable node (this one included) for its firing alerts with
  ``list_alerts``, through the router as the asking user (``serviceId`` per node: each node's
  roles, policy and audit apply there), concurrently, and lists them under each node's name. A
  node that does not answer, or has no alerts module, is named with the reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field

from cloudisense.core.clients import Client, InProcessClient
from cloudisense.core.intents import Params

#: "on node-b", "at node db-1", "for node-b.": a preposition, maybe "node", then an identity.
_NODE_PHRASE = re.compile(r"(?i)\s*\b(?:on|at|of|for|in|from)\s+(?:the\s+)?(?:node|server|host)?\s*"
                          r"(?P<node>[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,63})")


def named_node(text: str, knows: Callable[[str], bool], identity: str) -> tuple[str, str] | None:
    """``(node, request without the phrase)`` when ``text`` names another online node, else ``None``."""
    for match in _NODE_PHRASE.finditer(text):
        node = match.group("node").rstrip(".:")
        if node and node != identity and knows(node):
            rest = (text[:match.start()] + text[match.start() + len(match.group(0).rstrip()):]).strip()
            rest = re.sub(r"\s+([?.!,])", r"\1", rest)
            return node, rest or text
    return None


class FleetAlertsParams(Params):
    """Which alerts to list on every node."""

    state: Literal["firing", "resolved", "all"] = Field("firing", description="firing (default), resolved or all")
    severity: Literal["info", "warning", "critical"] | None = None
    limit: int = Field(20, ge=1, le=200, description="most alerts per node")


async def fleet_alerts(router: Any, identity: str, nodes: Iterable[str], caller: Client,
                       p: FleetAlertsParams, origin: Any = None) -> dict[str, Any]:
    """Each node's alerts (``nodes``: the other online nodes), asked as ``caller``'s user and role.

    ``origin``: the request this is made for (the local call is its sub-call and takes no permit).
    """
    client = InProcessClient(router, caller.user, caller.role, kind=caller.kind, policy_applies=caller.policy_applies)
    params = p.model_dump(exclude_none=True)
    names = [identity, *sorted(n for n in nodes if n != identity)]

    async def ask(node: str) -> dict[str, Any]:
        response = await client.call("list_alerts", params, service_id=None if node == identity else node,
                                     origin=origin)
        if response.get("status") == "success":
            data = response.get("data") or {}
            return {"node": node, "ok": True, "alerts": data.get("alerts", []), "total": data.get("total", 0)}
        message = str(response.get("message") or f"answered {response.get('code')}")[:300]
        return {"node": node, "ok": False, "alerts": [], "total": 0, "code": response.get("code"), "error": message}

    results = await asyncio.gather(*(ask(n) for n in names))
    return {"nodes": list(results), "count": sum(r["total"] for r in results if r["ok"]),
            "reachable": sum(1 for r in results if r["ok"]), "filters": params}


def say_fleet(p: Any, d: dict[str, Any]) -> str:
    """The fleet's alerts in plain words, under each node's name."""
    from cloudisense.modules.alerts import alert_line
    from cloudisense.modules.alerts_monitor import clip

    out = [f"{d.get('count', 0)} alert(s) on {d.get('reachable', 0)} reachable node(s):"]
    for n in d.get("nodes", []):
        if not n.get("ok"):
            out.append(f"{n['node']}: no alerts from it ({n.get('error')})")
            continue
        alerts = n.get("alerts") or []
        more = f" (showing {len(alerts)})" if n.get("total", 0) > len(alerts) else ""
        out.append(f"{n['node']}: {n.get('total', 0)} alert(s){more}" + (":" if alerts else ""))
        # Alert text may quote logs or Alertmanager labels: one line each, as data.
        out.extend(f"  - {clip(alert_line(a), 300)}" for a in alerts if isinstance(a, dict))
    return "\n".join(out)
