"""The federation module: joins the node to the MQTT federation, lists the other nodes and their alerts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, NoParams, Risk
from cloudisense.core.modules import Module
from cloudisense.federation.fleet import FleetAlertsParams, fleet_alerts, say_fleet
from cloudisense.federation.settings import FederationSettings

if TYPE_CHECKING:
    from cloudisense.federation.bridge import MqttBridge

log = logging.getLogger(__name__)


class FederationModule(Module):
    """Starts the :class:`~cloudisense.federation.bridge.MqttBridge` when ``[federation] enabled``.

    The bridge becomes the router's ``remote``: requests with another node's ``serviceId`` go
    through it, and topics ``/<identity>/<topic>`` of other nodes become subscribable here.
    """

    name = "federation"
    settings_model = FederationSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.bridge: MqttBridge | None = None

    def intents(self) -> list[Intent]:
        return [
            Intent("list_nodes", "The other CloudiSENSE nodes of the federation: online or not, last seen, "
                   "and which of their topics can be followed from here", self.list_nodes, NoParams, Risk.READ,
                   ("which nodes are online", "list the other servers in the federation",
                    "is node-b connected", "show all cloudisense nodes",
                    "when was the backup server last seen", "what machines can I manage from here")),
            Intent("fleet_alerts", "Alerts of every reachable node of the federation (this one included), listed "
                   "under each node's name", self.fleet_alerts, FleetAlertsParams, Risk.READ,
                   ("what alerts are firing across the fleet", "alerts on all nodes", "fleet summary of alerts",
                    "is anything firing on the other servers", "show alerts of every node"),
                   timeout=self.settings.request_timeout + 10, say=say_fleet),
        ]

    async def start(self) -> None:
        settings = self.settings
        if not settings.enabled:
            return
        # Imported here: aiomqtt is an optional extra, needed only when federation is on.
        from cloudisense.federation.bridge import MqttBridge

        self.bridge = MqttBridge(self.node, settings)
        await self.bridge.start()
        self.node.router.remote = self.bridge

    async def stop(self) -> None:
        if self.bridge is None:
            return
        if self.node.router.remote is self.bridge:
            self.node.router.remote = None
        await self.bridge.stop()
        self.bridge = None

    async def list_nodes(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        if self.bridge is None:
            return {"enabled": False, "identity": self.node.identity, "connected": False, "nodes": [],
                    "hint": "federation is off on this node; set [federation] enabled = true and a broker to join"}
        return {"enabled": True, **self.bridge.describe()}

    async def fleet_alerts(self, p: FleetAlertsParams, ctx: ActionContext) -> dict[str, Any]:
        bridge = self.bridge
        others = [n for n in bridge.nodes if bridge.knows(n)] if bridge is not None else []
        found = await fleet_alerts(self.node.router, self.node.identity, others, ctx.client, p, ctx.as_origin())
        if bridge is None:
            found["hint"] = "federation is off on this node: only its own alerts are listed"
        return found
