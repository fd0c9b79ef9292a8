"""The offline planner's safety rules of issue 8, on request texts written for these tests only.

The rules hold for every module, so each is checked on the demo node and on the node with the
test-only plugin module (backups and certificates) the planner has never seen: questions never
plan a write, a typo on a write asks "Did you mean ...?", a vague request or a verb no intent
knows asks what to do, and what no intent can do escalates. The texts here are not in the
evaluation sets.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench.planner import contexts

from cloudisense.assistant.evaluation import significant_params
from cloudisense.assistant.extract import quantities
from cloudisense.assistant.offline import OfflinePlanner
from cloudisense.assistant.plan import Plan, PlanningContext


@pytest.fixture(scope="module")
def node() -> PlanningContext:
    """The operator's planning context on the demo node plus the plugin module."""
    return contexts(plugin=True)[0]


def plan_of(text: str, context: PlanningContext) -> Plan:
    return OfflinePlanner().plan_sync(text, context)


def node_risk(intent: str, context: PlanningContext) -> str:
    return str(next(t.get("risk") for t in context.tools if t["name"] == intent))


def risks(plan: Plan, context: PlanningContext) -> list[str]:
    tools = {t["name"]: t for t in context.tools}
    return [str(tools[s.intent]["risk"]) for s in plan.steps]


def steps(plan: Plan, context: PlanningContext) -> list[tuple[str, dict[str, Any]]]:
    tools = {t["name"]: t for t in context.tools}
    return [(s.intent, significant_params(s.params, tools[s.intent])) for s in plan.steps]


@pytest.mark.parametrize("text", [
    "did the worker restart fine?", "when was nginx last started?", "has the users-db restore finished?",
    "did someone renew www.example.com?", "is the billing-db backup done yet?", "was the cleanup script run today?",
    "did the orders backup get deleted?", "is redis stopped?", "did the prune of orders backups go through?",
])
def test_questions_about_actions_never_plan_a_write(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome in ("execute", "clarify"), plan
    assert all(risk == "read" for risk in risks(plan, node)), plan


@pytest.mark.parametrize("text, expected", [
    # A question about an action asks for the state of the thing it acts on...
    ("did the restore of billing-db work?", [("backup_status", {"database": "billing-db"})]),
    ("did the worker restart fine?", [("target_status", {"name": "worker"})]),
    # ... or, when that kind of thing has no state to read, for the record of the actions run.
    ("was the cleanup script run today?", [("get_audit_log", {})]),
])
def test_a_question_about_an_action_reads_the_state_of_its_thing(node: PlanningContext, text: str,
                                                                   expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


@pytest.mark.parametrize("text, meant", [
    ("resart the web service", "restart target"), ("strat redis", "start target"), ("stpo nginx", "stop target"),
    ("renwe the shop.example.org certificate", "renew cert"), ("delte backup b-43", "delete backup"),
    ("scheudle orders backups every hour", "schedule backups"), ("restroe orders from b-41", "restore backup"),
    ("bakup users-db", "start backup"),
])
def test_a_typo_on_a_write_asks_did_you_mean(node: PlanningContext, text: str, meant: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "clarify" and not plan.steps, plan
    assert plan.confidence < 0.5
    assert f"Did you mean {meant}" in (plan.question or "")


@pytest.mark.parametrize("text, expected", [
    ("staus of redis", [("target_status", {"name": "redis"})]),
    ("lsit the backups", [("list_backups", {})]),
    ("backup stauts for users-db", [("backup_status", {"database": "users-db"})]),
])
def test_a_typo_on_a_read_still_reads(node: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


@pytest.mark.parametrize("text", [
    "deal with the certificates", "sort out the backups", "take care of nginx", "do something about redis",
    "handle the worker", "fix the web service",
])
def test_a_vague_request_asks_what_to_do(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "clarify" and not plan.steps, plan
    # The question offers concrete things to say, taken from the intents' own examples.
    assert "What should I do?" in (plan.question or "") and '"' in (plan.question or "")


@pytest.mark.parametrize("text", [
    "renew www.example.com if it looks dodgy", "restore users-db from b-45 if anything seems weird",
    "restart nginx if it acts up",
])
def test_a_condition_nothing_can_check_is_a_question(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "clarify" and not plan.steps, plan


@pytest.mark.parametrize("text", ["book a table for two", "order new laptops", "buy concert tickets",
                                  "translate the weather report to german"])
def test_what_no_intent_can_do_escalates(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "escalate" and not plan.steps, plan


@pytest.mark.parametrize("text, expected", [
    ("back up billing-db twice a day", [("schedule_backups", {"database": "billing-db", "interval_minutes": 720})]),
    ("back up users-db daily", [("schedule_backups", {"database": "users-db", "interval_minutes": 1440})]),
    ("take a backup of orders every 45 minutes", [("schedule_backups", {"database": "orders",
                                                                        "interval_minutes": 45})]),
    # An age is not a frequency: it never fills an interval, and a frequency never fills an age.
    ("prune orders backups older than a day", [("prune_backups", {"database": "orders", "older_than_days": 1})]),
    ("remove b-7", [("delete_backup", {"backup_id": "b-7"})]),
    # A count in a unit of time is a rate.
    ("back up billing-db 6 times a day", [("schedule_backups", {"database": "billing-db", "interval_minutes": 240})]),
    ("two users-db backups per day", [("schedule_backups", {"database": "users-db", "interval_minutes": 720})]),
    ("billing-db on a 4-hourly backup schedule", [("schedule_backups", {"database": "billing-db",
                                                                        "interval_minutes": 240})]),
    # A modifier joined to the verb ("force-restore") is said; "a trio" is three.
    ("force-restore b-42 into users-db", [("restore_backup", {"database": "users-db", "backup_id": "b-42",
                                                              "force": True})]),
    ("the latest pair of billing-db backups", [("list_backups", {"database": "billing-db", "limit": 2})]),
    # "X vs Y" asks about each.
    ("www.example.com versus shop.example.org cert expiry", [("cert_expiry", {"domain": "www.example.com"}),
                                                             ("cert_expiry", {"domain": "shop.example.org"})]),
])
def test_frequencies_and_ids_fill_the_params_made_for_them(node: PlanningContext, text: str,
                                                          expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


def test_a_frequency_is_told_from_a_duration() -> None:
    assert [q.every for q in quantities("every 6 hours")] == [True]
    assert [(q.every, q.minutes) for q in quantities("twice a day")] == [(True, 720)]
    assert [q.every for q in quantities("from the last 2 hours")] == [False]
    assert [q.every for q in quantities("older than a week")] == [False]


def test_a_condition_is_on_the_field_of_the_read_that_covers_every_word(node: PlanningContext) -> None:
    plan = plan_of("look at disk and memory, then notify the team if disk is over 70%", node)
    assert plan.outcome == "execute", plan
    assert [s.intent for s in plan.steps] == ["get_system_stats", "simple_http_notify"]
    assert plan.steps[1].when == "${s1.data.disk.percent} > 70"


@pytest.mark.parametrize("text, when", [
    ("restart nginx if it's down", '${s1.data.state} != "running"'),
    ("restart nginx if it goes down", '${s1.data.state} != "running"'),
    ("restart nginx if it isn't up", '${s1.data.state} != "running"'),
])
def test_up_and_down_say_a_state_only_after_a_verb_of_being(node: PlanningContext, text: str, when: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == ["target_status", "restart_target"]
    assert plan.steps[1].when == when
    # "if it acts up" is an idiom: no state to check, so a question (see above), never "if it is up".


@pytest.mark.parametrize("text, expected", [
    ("reload the high-cpu rule", [("reload_rule", {"rule_id": "high-cpu"})]),
    ("what does rule nightly-backup do", [("read_rule", {"rule_id": "nightly-backup"})]),
])
def test_a_thing_the_configuration_does_not_list_is_named_by_its_id(node: PlanningContext, text: str,
                                                                   expected: list[tuple[str, Any]]) -> None:
    # The demo node lists no rules (they are files): the id next to the kind word is the rule.
    assert not node.entities.get("rule")
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


def test_a_question_whether_someone_acted_reads_the_record_of_actions(node: PlanningContext) -> None:
    plan = plan_of("did anyone restart redis today?", node)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == ["get_audit_log"], plan


@pytest.mark.parametrize("text", ["check whether the worker is up and restart it if not",
                                  "if the worker is down restart it"])
def test_if_not_and_a_condition_without_a_comma_stay_conditional(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == ["target_status", "restart_target"], plan
    assert plan.steps[1].when == '${s1.data.state} != "running"'


@pytest.mark.parametrize("text, expected", [
    # A number right after a word of an id field is that id ("alert 7", "#12") ...
    ("ack alert 7", [("ack_alert", {"id": 7})]),
    ("acknowledge alert #12", [("ack_alert", {"id": 12})]),
    # ... and "show" reads it, whatever the examples of a write say about the same words.
    ("show alert 4", [("get_alert", {"id": 4})]),
    # A count is never an id: "the last 5" is how many to list, not alert 5 to silence.
    ("show the last 5 alerts", [("list_alerts", {"limit": 5})]),
])
def test_ids_counts_and_show(node: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


@pytest.mark.parametrize("text", ["ack the one that just fired", "silence that one for an hour",
                                  "restore the last one", "restart this one"])
def test_one_after_a_determiner_is_a_pronoun_never_an_id(node: PlanningContext, text: str) -> None:
    assert [q.value for q in quantities(text) if q.minutes is None] == []
    plan = plan_of(text, node)
    assert not any(v == 1 for s in plan.steps for k, v in s.params.items() if k.endswith("id")), plan


@pytest.mark.parametrize("text, expected", [
    # A modifier said as not so is false for a three-state flag ("either way" is its default) ...
    ("which warning alerts has no one acknowledged", [("list_alerts", {"severity": "warning",
                                                                      "acknowledged": False})]),
    ("unacknowledged alerts", [("list_alerts", {"acknowledged": False})]),
    ("acknowledged critical alerts", [("list_alerts", {"severity": "critical", "acknowledged": True})]),
    # ... and "don't actually ..." asks for the run that changes nothing, when the intent has one.
    ("renew api.example.com but don't actually do it", [("renew_cert", {"domain": "api.example.com",
                                                                        "dry_run": True})]),
    ("run nginx.yml but do not really apply it", [("run_playbook", {"name": "nginx.yml", "check": True})]),
    ("preview users.yml", [("run_playbook", {"name": "users.yml", "check": True})]),
])
def test_negated_and_no_change_modifiers(node: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


@pytest.mark.parametrize("text, escalates", [
    ("how full is the root filesystem?", False), ("list the files at the demo root", False),
    ("give me root access", True), ("log in as root and fix it", True), ("what is the root password", True),
])
def test_root_is_a_privilege_only_when_it_is_one(node: PlanningContext, text: str, escalates: bool) -> None:
    plan = plan_of(text, node)
    assert (plan.outcome == "escalate") is escalates, plan
    assert all(r == "read" for r in risks(plan, node)), plan


@pytest.mark.parametrize("text", ["add a scratch folder to demo", "create a swap file of 2 GB", "make a new folder",
                                  # How long or when is no age of backups to remove.
                                  "back up orders for 3 days", "snapshot users-db in 2 days",
                                  "back up billing-db 4 times a day"])
def test_a_verb_that_makes_a_thing_never_plans_removing_one(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert "destructive" not in risks(plan, node), plan


@pytest.mark.parametrize("text", ["give the orders backups a 5-year legal hold", "users-db backups: a 90 day hold",
                                  "tag billing-db backups older than 30 days as archived"])
def test_a_destructive_step_needs_a_verb_of_it_said(node: PlanningContext, text: str) -> None:
    """A figure that fits a destructive intent's param is no reason to plan it: a verb of it must be said."""
    plan = plan_of(text, node)
    assert "destructive" not in risks(plan, node), plan


@pytest.mark.parametrize("text, dry", [("make sure a restore of users-db from b-42 would work", None),
                                       ("check that renewing www.example.com would succeed", True)])
def test_asking_whether_it_would_work_never_does_it(node: PlanningContext, text: str, dry: bool | None) -> None:
    """A try is asked for: a dry run where the intent has one, else a question (never the real change)."""
    plan = plan_of(text, node)
    changes = [s for s in plan.steps if node_risk(s.intent, node) != "read"]
    assert all(s.params.get("dry_run") is True for s in changes) and (dry or not changes), plan


@pytest.mark.parametrize("text, intents", [
    ("worker uptime under 5 min means a crash loop; page the team in that case",
     ["target_status", "simple_http_notify"]),
    ("disk over 95% would mean trouble. in that case, run cleanup.sh", ["get_disk_usage", "start_script_execution"]),
    # What a state "means" to do, and what is to be confirmed first, are conditions too.
    ("disk above 92% means rotate-logs.sh should run", ["get_disk_usage", "start_script_execution"]),
    ("users-db: once you've checked that its latest backup is ok, prune its backups beyond 40 days",
     ["backup_status", "prune_backups"]),
])
def test_an_action_in_that_case_waits_for_the_statement_before_it(node: PlanningContext, text: str,
                                                                 intents: list[str]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == intents, plan
    assert plan.steps[0].when is None and plan.steps[1].when, plan


def test_a_body_of_text_is_never_one_word_guessed(node: PlanningContext) -> None:
    """"overwrite X with an empty object" wrote the word "object" into the file."""
    plan = plan_of("overwrite demo/app-settings.json with an empty object", node)
    assert not any(s.intent == "write_file" for s in plan.steps), plan
    quoted = plan_of("write 'hello there' to demo/a.txt", node)
    assert steps(quoted, node) == [("write_file", {"path": "demo/a.txt", "content": "hello there"})], quoted


def test_no_step_said_is_lost(node: PlanningContext) -> None:
    """"notify the team before you restart nginx" planned only the restart: every action said is a step (or the
    plan asks), the one said first first."""
    plan = plan_of("email the team before you stop the worker", node)
    assert plan.outcome == "clarify" or [s.intent for s in plan.steps] == ["simple_email_notify", "stop_target"], plan
    told = plan_of("let the team know I restarted redis", node)
    assert steps(told, node) == [("simple_http_notify", {"message": "I restarted redis"})], told


def test_removing_the_audit_trail_needs_a_human(node: PlanningContext) -> None:
    assert plan_of("clear the audit log before the review", node).outcome == "escalate"


def test_one_word_never_fills_two_required_params(node: PlanningContext) -> None:
    plan = plan_of("delete folder scratch", node)
    assert plan.outcome == "clarify", plan


@pytest.mark.parametrize("text", ["hwo big is the orders backup", "whta is the state of redis", "whn did nginx start"])
def test_a_typo_of_a_question_word_keeps_it_a_question(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert all(risk == "read" for risk in risks(plan, node)), plan


@pytest.mark.parametrize("text, intent", [
    ("is nginx unhealthy? then restart it", "restart_target"),
    ("5 days or less on api.example.com? if so, renew it", "renew_cert"),
])
def test_a_question_then_an_action_is_a_conditional_action(node: PlanningContext, text: str, intent: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome in ("execute", "clarify"), plan
    acting = [s for s in plan.steps if s.intent == intent]
    assert all(s.when for s in acting), plan


@pytest.mark.parametrize("text", ["simulate users.yml", "simulate a run of nginx.yml"])
def test_a_simulation_is_a_check_mode_run(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert all(s.params.get("check") is True for s in plan.steps if s.intent == "run_playbook"), plan


@pytest.mark.parametrize("text", ["stop nginx if it seems down", "restart redis if it looks unhealthy"])
def test_an_impression_is_no_condition(node: PlanningContext, text: str) -> None:
    assert plan_of(text, node).outcome == "clarify"


def test_a_file_under_a_folder_is_that_file_never_the_folder(node: PlanningContext) -> None:
    plan = plan_of("delete the file a.txt under demo/tmp", node)
    assert all(s.intent != "delete_folder" for s in plan.steps), plan
    assert steps(plan, node) in ([], [("delete_file", {"path": "demo/tmp/a.txt"})]), plan


@pytest.mark.parametrize("text", ["do not stop nginx", "never prune the orders backups",
                                  "the worker is fine, don't restart it", "please don't renew api.example.com"])
def test_a_request_not_to_do_something_runs_nothing(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome != "execute" or all(risk == "read" for risk in risks(plan, node)), plan


@pytest.mark.parametrize("text, when", [
    # A yes/no question that can only be a condition, then an order with no "then": the order waits for it.
    ("/home above 70%? execute rotate-logs.sh", "${s1.data.percent} > 70"),
    ("users-db backup more than 6h old? start a new one", "${s1.data.age_hours} > 6"),
    # What it is about, then a condition said first: the action is about that thing, and it waits too.
    ("www.example.com: if the cert has under 10 days left, renew it", "${s1.data.days_left} < 10"),
])
def test_a_question_said_before_an_order_guards_it(node: PlanningContext, text: str, when: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and len(plan.steps) == 2, plan
    assert risks(plan, node)[0] == "read" and plan.steps[0].when is None
    assert plan.steps[1].when == when, plan


@pytest.mark.parametrize("text", ["what's the disk usage? rotate-logs.sh", "is redis up? restart it"])
def test_a_question_for_a_value_or_a_good_state_is_no_condition(node: PlanningContext, text: str) -> None:
    """What to do with the answer is not said: no order becomes conditional on it by guess."""
    plan = plan_of(text, node)
    assert all(s.when is None for s in plan.steps), plan


@pytest.mark.parametrize("text, expected", [
    # "but first": what is said last runs first.
    ("restart the worker, but first back up orders",
     [("start_backup", {"database": "orders"}), ("restart_target", {"name": "worker"})]),
    # A comma piece that only completes the step before it joins it ...
    ("full backup, users-db", [("start_backup", {"database": "users-db", "full": True})]),
    # ... and a read named, then narrowed, is the narrowed read once.
    ("the app log, last 30 lines", [("read_log", {"name": "app", "lines": 30})]),
    # Urging words at the end are no step.
    ("renew shop.example.org, go ahead", [("renew_cert", {"domain": "shop.example.org"})]),
])
def test_order_completion_and_narrowing(node: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and steps(plan, node) == expected, plan


@pytest.mark.parametrize("text", [
    "once the orders backup checks out as ok, delete b-40",
    "as soon as billing-db's last backup is ok, b-41 can be deleted",
    "once billing-db's newest backup checks out, b-43 may be removed",
    "as soon as nginx is down, tell the team",
])
def test_a_condition_said_with_once_or_as_soon_as_guards_its_action(node: PlanningContext, text: str) -> None:
    """A change waits for the condition, or is asked about; never run at once, never another change."""
    plan = plan_of(text, node)
    changes = [s for s in plan.steps if node_risk(s.intent, node) != "read"]
    assert plan.outcome in ("execute", "clarify", "escalate"), plan
    assert all(s.when for s in changes), plan
    assert "restore_backup" not in [s.intent for s in plan.steps], plan


@pytest.mark.parametrize("text", ["move billing-db onto a new postgres cluster", "move orders to the other host"])
def test_a_verb_no_intent_declares_changes_nothing(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome != "execute" or all(r == "read" for r in risks(plan, node)), plan


@pytest.mark.parametrize("text, expected", [
    ("keep ten weeks of orders backups, prune everything older", [("prune_backups", {"database": "orders",
                                                                                    "older_than_days": 70})]),
    ("hold onto 2 weeks of users-db backups, delete anything older", [("prune_backups", {"database": "users-db",
                                                                                        "older_than_days": 14})]),
])
def test_what_to_keep_said_first_and_the_verb_after_is_one_step(node: PlanningContext, text: str,
                                                                 expected: list[tuple[str, Any]]) -> None:
    assert steps(plan_of(text, node), node) == expected


def test_what_to_keep_without_a_verb_of_removal_is_asked(node: PlanningContext) -> None:
    plan = plan_of("keep ten weeks of orders backups", node)
    assert plan.outcome == "clarify" and not plan.steps, plan


@pytest.mark.parametrize("text, expected", [
    # Why, said after the order, is no step, and its words ("reboot") choose nothing.
    ("start nginx, it's down after the reboot", [("start_target", {"name": "nginx"})]),
    ("stop the worker, it keeps crashing", [("stop_target", {"name": "worker"})]),
    ("bring up redis and the worker, both went down overnight", [("start_target", {"name": "redis"}),
                                                                 ("start_target", {"name": "worker"})]),
    # Who asks a question does not choose the action: the question does.
    ("auditors are asking how stale the users-db backup is", [("backup_status", {"database": "users-db"})]),
])
def test_what_surrounds_an_order_or_a_question_chooses_nothing(node: PlanningContext, text: str,
                                                               expected: list[tuple[str, Any]]) -> None:
    assert steps(plan_of(text, node), node) == expected


@pytest.mark.parametrize("text, when", [
    # "no" before the thing negates its state: these had waited for the opposite (a start when it was running).
    ("if no worker is running, start it", '${s1.data.state} != "running"'),
    ("no cron process running? telegram me", "${s1.data.running} == false"),
    ("if there's no cron process, telegram me", "${s1.data.running} == false"),
])
def test_no_before_a_thing_negates_its_state(node: PlanningContext, text: str, when: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "execute" and len(plan.steps) == 2, plan
    assert plan.steps[1].when == when, plan


@pytest.mark.parametrize("text, expected", [
    # The condition's "it" is what the statement before it is about.
    ("ram keeps creeping up - once it's past 90 percent, restart redis",
     [("get_system_stats", {}, None), ("restart_target", {"name": "redis"}, "${s1.data.memory.percent} > 90")]),
    ("the disk keeps filling up. if it's over 85%, run cleanup.sh",
     [("get_disk_usage", {}, None), ("start_script_execution", {"name": "cleanup.sh"}, "${s1.data.percent} > 85")]),
])
def test_a_statement_names_the_it_of_the_condition_after_it(node: PlanningContext, text: str,
                                                             expected: list[tuple[str, Any, Any]]) -> None:
    plan = plan_of(text, node)
    tools = {t["name"]: t for t in node.tools}
    assert [(s.intent, significant_params(s.params, tools[s.intent]), s.when) for s in plan.steps] == expected, plan


def test_the_it_of_a_condition_after_a_topic_is_the_topic(node: PlanningContext) -> None:
    """"orders: if its last backup ..." had read the system's uptime for "2 days old"."""
    plan = plan_of("users-db: if its newest backup is more than 3 days old, email the team", node)
    assert [s.intent for s in plan.steps] == ["backup_status", "simple_email_notify"], plan
    assert plan.steps[0].params == {"database": "users-db"} and plan.steps[1].when == "${s1.data.age_hours} > 72"


def test_a_condition_is_checked_by_the_read_whose_field_it_names(node: PlanningContext) -> None:
    """"isn't running" names check_process's ``running``, not the backup's ``ok`` flag."""
    plan = plan_of("if postgres isn't running, start a full backup of billing-db", node)
    assert [(s.intent, s.when) for s in plan.steps] == [
        ("check_process", None), ("start_backup", "${s1.data.running} == false")], plan


@pytest.mark.parametrize("text, expected", [
    # A name said first, then a colon and the order: the order is about it ("backup" is no verb there; this
    # had started a backup of users-db for a "show").
    ("users-db: show the latest backup", [("backup_status", {"database": "users-db"})]),
    ("billing-db: list its backups", [("list_backups", {"database": "billing-db"})]),
    # Trying a verb is the verb; "I just want to look" only says so again.
    ("try restarting nginx", [("restart_target", {"name": "nginx"})]),
    ("list the orders backups, I just want to look", [("list_backups", {"database": "orders"})]),
])
def test_a_topic_first_and_words_around_the_order(node: PlanningContext, text: str,
                                                  expected: list[tuple[str, Any]]) -> None:
    assert steps(plan_of(text, node), node) == expected


@pytest.mark.parametrize("text", ["restart whichever one was flapping", "renew whichever cert looks risky",
                                  "delete whichever of those two we don't need"])
def test_a_thing_named_only_by_what_it_did_is_asked_about(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert plan.outcome == "clarify" and not plan.steps, plan


def test_whatever_things_you_have_are_all_of_them(node: PlanningContext) -> None:
    assert steps(plan_of("show whatever logs you have", node), node) == [("list_logs", {})]


@pytest.mark.parametrize("text", ["the restore of orders from b-40 failed yesterday",
                                  "the prune of users-db backups failed", "the restart of nginx went badly",
                                  "last night's cleanup crashed"])
def test_an_action_reported_as_having_happened_is_never_run_again(node: PlanningContext, text: str) -> None:
    """Found probing: "the restore of orders from b-40 failed yesterday" restored orders from b-40 again."""
    plan = plan_of(text, node)
    assert all(risk == "read" for risk in risks(plan, node)), plan


def test_an_action_named_as_a_thing_and_asked_for_still_runs(node: PlanningContext) -> None:
    assert steps(plan_of("the restore of orders from b-40, please", node), node) == [
        ("restore_backup", {"database": "orders", "backup_id": "b-40"})]


@pytest.mark.parametrize("text", ["restarts of nginx keep failing", "nginx restarts keep failing",
                                  "stop redis? are you sure that's wise", "restart the worker - is that a good idea?"])
def test_a_report_or_a_doubted_request_changes_nothing(node: PlanningContext, text: str) -> None:
    """Found probing: "restarts of nginx keep failing" restarted nginx."""
    plan = plan_of(text, node)
    assert plan.outcome != "execute" or all(risk == "read" for risk in risks(plan, node)), plan


@pytest.mark.parametrize("text", ["no renewal for api.example.com this month", "no restarts today please",
                                  "b-40 restore worked fine last week", "users-db restore failed again"])
def test_no_action_wanted_or_an_action_reported_changes_nothing(node: PlanningContext, text: str) -> None:
    """Found probing: "no renewal for api.example.com this month" renewed it."""
    plan = plan_of(text, node)
    assert plan.outcome != "execute" or all(risk == "read" for risk in risks(plan, node)), plan


def test_a_bound_said_alone_after_a_question_guards_the_action(node: PlanningContext) -> None:
    """"...? beyond 3 days, kick off a full one" had started the backup at once."""
    plan = plan_of("how old is orders' newest backup? beyond 2 days, start a full one", node)
    assert [(s.intent, s.when) for s in plan.steps] == [
        ("backup_status", None), ("start_backup", "${s1.data.age_hours} > 48")], plan


@pytest.mark.parametrize("text", ["www.example.com renewal: hold off, not today", "nginx: don't restart it",
                                  "hold off on the restart of redis"])
def test_holding_off_after_a_label_runs_nothing(node: PlanningContext, text: str) -> None:
    plan = plan_of(text, node)
    assert not plan.steps and plan.outcome != "execute", plan


@pytest.mark.parametrize("text, intents", [
    # A quoted text after "telegram" / "email" is what it says: the step before it is no longer dropped.
    ("start nginx and telegram 'hello'", ["start_target", "simple_telegram_notify"]),
    ("restart the worker and email 'worker bounced'", ["restart_target", "simple_email_notify"]),
    ("if redis is stopped, start it and telegram 'redis was down'", ["target_status", "start_target",
                                                                     "simple_telegram_notify"]),
])
def test_no_step_is_dropped_before_a_quoted_message(node: PlanningContext, text: str, intents: list[str]) -> None:
    assert [s.intent for s in plan_of(text, node).steps] == intents


@pytest.mark.parametrize("text", ["restart nginx later", "we could stop the worker", "worker - stop it? or not",
                                  "we might restart redis"])
def test_a_change_said_as_an_option_or_for_later_is_asked_not_run(node: PlanningContext, text: str) -> None:
    """Found probing: "restart nginx later" restarted at once, "we could stop the worker" stopped it."""
    plan = plan_of(text, node)
    assert plan.outcome == "clarify" and not plan.steps, plan


def test_a_polite_request_still_runs(node: PlanningContext) -> None:
    assert steps(plan_of("could you restart nginx", node), node) == [("restart_target", {"name": "nginx"})]
