"""Unit tests of the policy engine and of the condition / reference language of chains."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudisense.assistant import chains
from cloudisense.assistant.policy import load_policy, parse_policy
from cloudisense.assistant.policy_cli import parse_kv, policy_check_command
from cloudisense.core.errors import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"

POLICY = """
[[rule]]
name = "restart-web"
intent = "restart_*"
params = { name = "web*" }
role = "operator"
decision = "allow"

[[rule]]
name = "restart-any"
intent = "restart_*"
decision = "confirm"
reason = "restarts need a yes"

[[rule]]
name = "playbook-check"
intent = "run_playbook"
params = { check = true }
decision = "allow"

[[rule]]
name = "other-node"
node = "prod-*"
decision = "deny"
reason = "never on prod"
"""


def test_glob_params_role_and_first_match() -> None:
    engine = parse_policy(POLICY)
    d = engine.decide("restart_target", {"name": "web-2"}, "write", "operator", "demo")
    assert (d.decision, d.rule) == ("allow", "restart-web")
    # Same call as admin: the role glob fails, the next rule decides.
    d = engine.decide("restart_target", {"name": "web-2"}, "write", "admin", "demo")
    assert (d.decision, d.rule, d.reason) == ("confirm", "restart-any", "restarts need a yes")
    d = engine.decide("intent_restart_target", {"name": "redis"}, "write", "operator", "demo")
    assert d.rule == "restart-any"  # the intent_ prefix is normalized


def test_param_types_are_strict() -> None:
    engine = parse_policy(POLICY)
    assert engine.decide("run_playbook", {"name": "x", "check": True}, "read", "operator", "demo").rule == "playbook-check"
    # check = 1 is not check = true; a missing param never matches.
    assert engine.decide("run_playbook", {"name": "x", "check": 1}, "destructive", "operator", "demo").rule == "default:destructive"
    assert engine.decide("run_playbook", {"name": "x"}, "destructive", "operator", "demo").decision == "deny"


def test_defaults_and_node_glob() -> None:
    engine = parse_policy(POLICY)
    assert engine.decide("read_log", {}, "read", "viewer", "demo").decision == "allow"
    assert engine.decide("write_rule", {}, "write", "admin", "demo").decision == "confirm"
    assert engine.decide("delete_rule", {}, "destructive", "admin", "demo").decision == "deny"
    assert engine.decide("read_log", {}, "read", "viewer", "prod-1").rule == "other-node"
    custom = parse_policy('[defaults]\nwrite = "allow"\n')
    assert custom.decide("write_rule", {}, "write", "admin", "demo").decision == "allow"


@pytest.mark.parametrize(("text", "needle"), [
    ('[[rule]]\nname = "a"\ndecision = "maybe"\n', "rule[0].decision"),
    ('[[rule]]\nname = "a"\ndecision = "allow"\n[[rule]]\nname = "b"\ndecision = "allow"\nrisk = "huge"\n', "rule[1].risk"),
    ('[[rule]]\nname = "a"\ndecision = "allow"\ncolour = "red"\n', "rule[0].colour"),
    ('[[rule]]\ndecision = "allow"\n', "rule[0].name"),
    ('[[rule]]\nname = "a"\ndecision = "allow"\n[[rule]]\nname = "a"\ndecision = "deny"\n', "unique"),
    ("[[rule]\n", "not valid TOML"),
])
def test_bad_files_name_the_rule_and_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "p.toml")
    assert needle in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.toml")
    assert load_policy(None).decide("x", {}, "write", "operator", "n").rule == "default:write"


def test_demo_policy_and_check_command() -> None:
    engine = load_policy(DEMO / "policy.toml")
    assert engine.decide("stop_target", {"name": "nginx"}, "destructive", "operator", "demo").decision == "deny"
    assert engine.decide("stop_target", {"name": "nginx"}, "destructive", "admin", "demo").decision == "confirm"
    assert engine.decide("run_playbook", {"name": "nginx.yml", "check": True}, "read", "operator", "demo").decision == "allow"
    assert engine.decide("simple_http_notify", {"message": "x", "webhook": "http://evil.example/x"}, "write",
                         "operator", "demo").decision == "deny"
    lines: list[str] = []
    decision = policy_check_command(DEMO / "cloudisense.toml", "restart_target", ["name=web"], "operator", echo=lines.append)
    assert decision.decision == "confirm" and decision.rule == "restart-demo-targets-confirm"
    assert any("rule[0]" in line and "does not match" in line for line in lines)
    assert parse_kv(["check=true", "limit=5", "name=web"]) == {"check": True, "limit": 5, "name": "web"}


RESULTS = {"check": {"status": "ok", "code": 200, "data": {"percent": 85, "name": "web", "running": False,
                                                             "items": [{"n": "a"}, {"n": "b"}]}, "message": None}}


@pytest.mark.parametrize(("cond", "expected"), [
    ("${check.data.percent} > 80", True),
    ("${check.data.percent} >= 85 and ${check.data.percent} < 86", True),
    ("${check.data.running} == false", True),
    ("${check.data.running} == 0", False),
    ("not ${check.data.running} or false", True),
    ("${check.data.name} == 'web' and (${check.data.percent} != 85 or true)", True),
    ('${check.data.items.1.n} == "b"', True),
    ("${check.data.missing} == null", True),
    ("${check.status} == 'ok'", True),
    ("1.5e1 > 10", True),
])
def test_conditions(cond: str, expected: bool) -> None:
    assert chains.evaluate(cond, RESULTS) is expected


@pytest.mark.parametrize("cond", [
    "${nope.data.x} > 1", "${check.data.name} > 3", "__import__('os')", "${check.data.percent} >", "(true",
    "true true", "", "${check.data.percent} > 80 ; rm",
])
def test_bad_conditions(cond: str) -> None:
    with pytest.raises(chains.ChainError):
        chains.evaluate(cond, RESULTS)


def test_references_keep_types_or_stringify() -> None:
    params = {"limit": "${check.data.percent}", "msg": "at ${check.data.percent}% on ${check.data.name}",
              "nested": ["${check.data.items}"], "plain": 3}
    out = chains.resolve(params, RESULTS)
    assert out == {"limit": 85, "msg": "at 85% on web", "nested": [[{"n": "a"}, {"n": "b"}]], "plain": 3}
    assert chains.references(params) == {"check"}
    with pytest.raises(chains.ChainError):
        chains.resolve({"x": "${later.data.y}"}, RESULTS)


def test_cli_policy_check() -> None:
    from typer.testing import CliRunner

    from cloudisense.cli import app

    runner = CliRunner()
    config = str(DEMO / "cloudisense.toml")
    result = runner.invoke(app, ["policy", "check", "stop_target", "name=nginx", "--role", "operator", "--config", config])
    assert result.exit_code == 0, result.output
    assert "decision: deny" in result.output and "rule: stop-target-deny" in result.output
    bad = runner.invoke(app, ["policy", "check", "stop_target", "name=nginx", "--role", "boss", "--config", config])
    assert bad.exit_code == 1 and "unknown role" in bad.output
