"""Settings of the federation module, section ``[federation]``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from cloudisense.config import Section


class FederationSettings(Section):
    """MQTT federation between nodes."""

    #: Join the federation: connect to the broker and answer requests of other nodes.
    enabled: bool = False
    #: The MQTT broker every node of the federation connects to.
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(1883, ge=1, le=65535)
    #: Broker credentials: the broker's authentication and ACLs are the federation's trust boundary.
    username: str | None = None
    #: Never logged or answered.
    password: SecretStr | None = None
    #: First MQTT topic levels of every federation topic (no wildcards, no empty levels).
    topic_prefix: str = Field("cloudisense", pattern=r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$", max_length=200)
    #: Seconds to wait for another node's answer before a 504.
    request_timeout: float = Field(15.0, gt=0)
    #: The highest role a request from another node runs with here (lower origin roles stay lower).
    max_remote_role: Literal["viewer", "operator", "admin"] = "operator"
    #: Local topics whose events other nodes may receive (an entry ending in ``/`` covers the topics under it).
    forward_topics: list[str] = Field(default_factory=lambda: ["/stats", "/notification", "/targets", "/alerts"])
    #: Larger messages from the broker are dropped, and larger answers are refused.
    max_payload_bytes: int = Field(1_048_576, ge=1024)
    #: MQTT keepalive in seconds: how soon the broker notices a dead node and publishes its last will.
    keepalive: int = Field(15, ge=5, le=3600)
