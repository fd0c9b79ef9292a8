"""The federation's topic layout and envelope checks, without a broker."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cloudisense.core.errors import BadRequest
from cloudisense.core.roles import Role
from cloudisense.federation.envelope import (
    Parsed,
    RequestEnvelope,
    Topics,
    cap_role,
    decode,
    read_presence,
    topic_forwarded,
    valid_identity,
)


def test_topic_layout_round_trips() -> None:
    t = Topics("site1/cs")
    assert t.presence("node-b") == "site1/cs/presence/node-b"
    assert t.rpc("node-b") == "site1/cs/node-b/rpc"
    assert t.response("node-a") == "site1/cs/node-a/response"
    assert t.events("node-b", "/logging/app") == "site1/cs/node-b/events/logging/app"
    assert t.parse(t.presence("node-b")) == Parsed("presence", "node-b")
    assert t.parse(t.rpc("node-b")) == Parsed("rpc", "node-b")
    assert t.parse(t.response("node-a")) == Parsed("response", "node-a")
    assert t.parse(t.events("node-b", "/logging/app")) == Parsed("events", "node-b", "/logging/app")


@pytest.mark.parametrize("topic", ["other/node-b/rpc", "site1/cs/node-b/other", "site1/cs/bad id/rpc",
                                   "site1/cs/node-b/events/..", "site1/cs/node-b/events", "site1/cs/presence/a/b",
                                   "site1/cs/node-b/events/a//b"])
def test_topics_outside_the_layout_are_ignored(topic: str) -> None:
    assert Topics("site1/cs").parse(topic) is None


def test_identities_are_single_topic_levels() -> None:
    assert valid_identity("node-b") and valid_identity("web01.example.com")
    for bad in ("", "a/b", "+", "#", "*", "x" * 65, 3, None):
        assert not valid_identity(bad)


def test_roles_are_capped() -> None:
    assert cap_role(Role.ADMIN, Role.OPERATOR) == Role.OPERATOR
    assert cap_role(Role.VIEWER, Role.OPERATOR) == Role.VIEWER
    assert cap_role(Role.OPERATOR, Role.VIEWER) == Role.VIEWER


def test_forward_topics_match_exactly_or_under_a_slash_entry() -> None:
    patterns = ["/stats", "/logging/"]
    assert topic_forwarded("/stats", patterns) and topic_forwarded("/logging/app", patterns)
    assert not topic_forwarded("/stats2", patterns) and not topic_forwarded("/logging/", patterns)
    assert not topic_forwarded("/notification", patterns)


@pytest.mark.parametrize("payload, why", [
    (b"x" * 2000, "over"), (b"\xff", "UTF-8"), (b"[]", "object"), (b'{"a": NaN}', "JSON"),
    (b'{"a": "\\udc00"}', "Unicode"), (json.dumps({"a": [[[[]]]] * 1}).encode().replace(b"[]", b"[" * 70 + b"]" * 70),
                                       "nest"),
])
def test_decode_refuses_bad_payloads(payload: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        decode(payload, 1024)


def test_request_envelope_is_strict() -> None:
    good = {"v": 1, "fid": "abc", "origin": "node-a", "user": "oper", "role": "operator", "kind": "websocket",
            "reply": True, "rpc": {"type": "rpc"}}
    assert RequestEnvelope.model_validate(good).role == Role.OPERATOR
    for change in ({"v": 2}, {"role": "root"}, {"origin": "a/b"}, {"fid": "x" * 65}, {"extra": 1}, {"user": ""}):
        with pytest.raises(ValidationError):
            RequestEnvelope.model_validate({**good, **change})


def test_presence_forms() -> None:
    assert read_presence(b"online", 1024).status == "online"  # type: ignore[union-attr]
    assert read_presence(b"", 1024) is None
    p = read_presence(b'{"status": "online", "topics": ["/stats"], "ts": 5}', 1024)
    assert p is not None and p.topics == ["/stats"]
    with pytest.raises(BadRequest):
        read_presence(b'{"status": "online", "topics": ["../etc"]}', 1024)
