"""``get_audit_log`` filters (user, intent, outcome, time range, excluded intents) on the real server."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import error_of, make_settings, start_server


async def test_filters_combine_and_non_admins_see_only_their_own(tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "system"],
                                               server={"port": 0, "dashboard": False}))
    admin = await running.connect("admin")
    oper = await running.connect("oper")
    viewer = await running.connect("viewer")
    try:
        await oper.call("list_channels")
        before_error = time.time()
        await error_of(oper, "get_disk_usage", {"path": "/no/such/place"})  # an error row of oper
        after_error = time.time()
        await viewer.call("list_channels")
        await viewer.call("get_system_stats")
        await error_of(viewer, "restart_self", {})  # refused by role: an error row of the viewer

        def shape(records: list[dict]) -> list[tuple[str, str, str]]:
            return [(r["user"], r["intent"], r["outcome"]) for r in records]

        # An admin filters by user and by outcome, and both combine.
        by_viewer = (await admin.call("get_audit_log", {"user": "viewer"}))["records"]
        assert {r["user"] for r in by_viewer} == {"viewer"} and len(by_viewer) == 3
        errors = (await admin.call("get_audit_log", {"outcome": "error"}))["records"]
        assert shape(errors) == [("viewer", "restart_self", "error"), ("oper", "get_disk_usage", "error")]
        both = await admin.call("get_audit_log", {"user": "oper", "outcome": "error"})
        assert shape(both["records"]) == [("oper", "get_disk_usage", "error")] and both["count"] == 1
        # The intent name may carry the existing client's prefix.
        assert shape((await admin.call("get_audit_log", {"intent": "intent_get_system_stats"}))["records"]) == [
            ("viewer", "get_system_stats", "success")]

        # A time range: only the row written inside it.
        ranged = (await admin.call("get_audit_log", {"since": before_error, "until": after_error}))["records"]
        assert shape(ranged) == [("oper", "get_disk_usage", "error")]
        assert (await admin.call("get_audit_log", {"until": before_error - 3600}))["records"] == []

        # Excluded intents are left out (a dashboard hides its own reads this way).
        rest = (await admin.call("get_audit_log", {"user": "viewer", "exclude_intents": ["list_channels",
                                                                                         "get_system_stats"]}))
        assert shape(rest["records"]) == [("viewer", "restart_self", "error")]

        # A non-admin sees only their own records, whatever the filters, and asking for another's is refused.
        own = (await oper.call("get_audit_log", {"limit": 100}))["records"]
        assert own and {r["user"] for r in own} == {"oper"}
        refused = await error_of(oper, "get_audit_log", {"user": "viewer"})
        assert refused.code == 403 and "only admins" in refused.message
        assert {r["user"] for r in (await oper.call("get_audit_log", {"user": "oper"}))["records"]} == {"oper"}

        # Bad filters are refused naming the field; nothing is answered from them.
        bad = await error_of(admin, "get_audit_log", {"outcome": "maybe"})
        assert bad.code == 400 and "outcome" in bad.message
        bad = await error_of(admin, "get_audit_log", {"since": 200.0, "until": 100.0})
        assert bad.code == 400 and "since must not be after until" in bad.message
        bad = await error_of(admin, "get_audit_log", {"exclude_intents": [""]})
        assert bad.code == 400 and "exclude_intents" in bad.message
    finally:
        for conn in (admin, oper, viewer):
            conn.close()
        await running.server.stop()
