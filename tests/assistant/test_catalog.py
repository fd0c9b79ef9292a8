"""The tool catalogue: role filtering, retrieval with synonyms and typos, schema exports."""

from __future__ import annotations

from typing import Any

import pytest
from bench.planner import demo_context

from cloudisense.assistant.catalog import (
    Catalog,
    canonical,
    normalize,
    to_anthropic_tools,
    to_mcp_tools,
    to_openai_tools,
    tools_for_role,
)


@pytest.fixture(scope="module")
def demo() -> tuple[Any, Any]:
    context, registry = demo_context()
    return context, registry


def test_viewer_sees_only_read_intents(demo: tuple[Any, Any]) -> None:
    _, registry = demo
    viewer = tools_for_role(registry, "viewer")
    operator = tools_for_role(registry, "operator")
    assert viewer and all(t["risk"] == "read" for t in viewer)
    names = {t["name"] for t in viewer}
    assert "read_log" in names and "restart_target" not in names and "stop_target" not in names
    assert {"restart_target", "stop_target"} <= {t["name"] for t in operator}


def test_normalisation_synonyms_and_typos() -> None:
    vocab = {"restart", "status", "memory", "disk", "check", "show"}
    assert normalize("Bounce the web service", vocab)[0] == "restart"
    assert canonical("restrat", vocab) == "restart"
    assert canonical("memroy", vocab) == "memory"
    assert "status" in normalize("is redis alive?", vocab)
    assert normalize("fire up nginx", vocab)[0] == "start"
    # A real word that only looks like a vocabulary word is not "corrected" into it.
    assert canonical("paris", vocab) == "paris"


@pytest.mark.parametrize("text, intent", [
    ("bounce the web service", "restart_target"),
    ("restrat nginx", "restart_target"),
    ("how much disk is left", "get_disk_usage"),
    ("what is eating memory", "list_processes"),
    ("which logs do you have", "list_logs"),
])
def test_search_ranks_the_right_tool_first(demo: tuple[Any, Any], text: str, intent: str) -> None:
    context, _ = demo
    catalog = Catalog(context.tools)
    hits = catalog.search(text, k=3)
    assert hits and hits[0][0]["name"] == intent


def test_prompt_is_bounded(demo: tuple[Any, Any]) -> None:
    context, _ = demo
    catalog = Catalog(context.tools)
    assert len(catalog.tools) > 20
    assert 0 < len(catalog.relevant("restart nginx", k=5)) <= 5
    assert "list_approvals" in {t["name"] for t in catalog.relevant("restart nginx", k=2, always=["list_approvals"])}


def test_schema_exports_share_one_description(demo: tuple[Any, Any]) -> None:
    context, _ = demo
    tools = [t for t in context.tools if t["name"] in ("read_log", "stop_target")]
    openai = {t["function"]["name"]: t["function"] for t in to_openai_tools(tools)}
    anthropic = {t["name"]: t for t in to_anthropic_tools(tools)}
    mcp = {t["name"]: t for t in to_mcp_tools(tools)}
    assert openai["read_log"]["parameters"]["required"] == ["name"]
    assert openai["read_log"]["parameters"] == anthropic["read_log"]["input_schema"] == mcp["read_log"]["inputSchema"]
    assert "Examples:" in anthropic["read_log"]["description"]
    assert "risk: destructive" in openai["stop_target"]["description"]
    assert mcp["stop_target"]["annotations"]["destructiveHint"] is True
    assert mcp["read_log"]["annotations"]["readOnlyHint"] is True
