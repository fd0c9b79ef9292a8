"""The offline planner: no model at all.

How a request becomes a plan (deterministic, a few milliseconds):

1. **Escalation rules** (:func:`danger`) on the whole request: shell commands (``rm -rf``,
   ``mkfs``, ``dd``, ``sudo``, ``DROP TABLE``...), a destructive verb with a sweeping object
   ("delete *all* the servers", "wipe the disks on *every* host", "drop the *prod database*"),
   or privilege/guard-rail changes ("give the intern root", "disable the policy"). No intent
   does such things in a generic way and policy would never allow them: ``escalate``.
2. **Split** into segments on sequencing words ("then", "and then", ";", "after that") and on
   "and" / "," when what follows starts with an action verb or is only an entity ("restart
   the web service and nginx").
3. Per segment, **retrieval** (BM25 over each tool's name, description, examples and a few
   built-in hint phrases, see :mod:`.catalog`), re-ranked by the entities the segment names
   (a configured target favours intents that take a target) and by kind nouns ("the log"
   wants one log; "the logs" wants a listing).
4. **Parameters** grounded in the configured entities and read from the text
   (:mod:`.extract`); "it"/"its" refers to the last entity of the wanted kind named earlier
   in the request or, failing that, in the conversation history.
5. **Outcome**: ``clarify`` (with a concrete question) when a required param is missing or
   ambiguous; ``escalate`` when nothing the node offers matches (fewer than a third of the
   request's words are known to the catalogue and no configured name is mentioned);
   otherwise ``execute``. Confidence combines the retrieval margin between the best and the
   second-best intent with whether every required param was grounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cloudisense.agent import extract as ex
from cloudisense.agent.catalog import Catalog, canonical, tool_required
from cloudisense.agent.plan import Plan, PlanningContext, PlanStep

#: Intents the planner never proposes itself: the assistant's own entry points and meta-actions.
PLANNER_EXCLUDED = frozenset({"chat_llm", "query_assist", "clear_assist_session", "assist_introduction",
                              "intent_chain", "confirm_action", "agent_ask", "agent_execute"})

#: The planner's own phrases for the built-in intents (added to their examples for retrieval).
HINTS: dict[str, Sequence[str]] = {
    "restart_target": ("restart the service", "restart service again"),
    "start_target": ("start the service", "start service"),
    "stop_target": ("stop the service", "stop service"),
    "target_status": ("service status", "status of service", "is the service status"),
    "list_targets": ("list services", "which services are configured"),
    "get_system_stats": ("cpu memory load of the box", "machine stats"),
    "list_processes": ("top process by memory", "biggest process by cpu"),
    "get_disk_usage": ("disk usage", "check disk"),
    "read_log": ("tail the log", "show log lines", "show the log"),
    "search_logs": ("search the logs for a pattern", "error in log since"),
    "list_logs": ("list logs", "which logs"),
    "start_script_execution": ("run the script", "run script"),
    "list_scripts": ("list scripts",),
    "run_playbook": ("run the playbook", "run playbook dryrun", "apply playbook", "playbook"),
    "list_playbooks": ("list playbooks", "which playbooks"),
    "simple_http_notify": ("notify the team", "notify the channel", "send a notify to the webhook"),
    "get_audit_log": ("audit log of recent actions", "audit"),
    "list_approvals": ("list pending approvals", "pending approval"),
    "list_rules": ("list rules",),
}

#: The intent a bare entity name means ("nginx?" is its status).
KIND_DEFAULT_INTENT = {"target": "target_status", "log": "read_log", "rule": "read_rule"}
#: Listing intents by the entity kind they list.
LIST_KIND = {"list_targets": "target", "list_logs": "log", "list_scripts": "script", "list_playbooks": "playbook",
             "list_rules": "rule"}
#: Words that never name a process or a target by themselves.
GENERIC = {"service", "server", "box", "machine", "database", "db", "app", "thing", "host", "site", "system",
           "process", "it", "one", "them", "everything", "stuff", "daemon"}
#: First words that start a new action in "X and Y" (raw or canonical forms).
ACTION_WORDS = {"restart", "start", "stop", "run", "notify", "show", "check", "search", "list", "tail", "status",
                "reload", "send", "tell", "post", "let", "read", "grep", "find", "apply", "provision", "kill",
                "bounce", "execute", "ping", "alert", "give", "get", "dryrun", "reboot", "kick", "shut", "bring",
                "fire", "message", "rotate", "backup", "clean", "cleanup"}
HIGH_CONFIDENCE = 0.7


_SHELL = re.compile(
    r"(\brm\s+-\w*[rf]|\bmkfs\b|\bdd\s+if=|\bchmod\s+(-r\s+)?[0-7]{3}|:\(\)\s*\{|\bsudo\b|>\s*/dev/[sh]d|\bshred\b"
    r"|\bfdisk\b|\bdrop\s+(table|database|schema)\b|\btruncate\s+table\b|\bcurl\b.*\|\s*(ba)?sh\b)", re.I)
_DESTRUCTIVE = {"delete", "remove", "wipe", "destroy", "drop", "erase", "format", "reformat", "nuke", "purge",
                "terminate", "trash", "shred", "uninstall", "obliterate"}
_SWEEPING = {"all", "every", "everything", "entire", "whole", "fleet", "servers", "hosts", "host", "machines",
             "machine", "database", "databases", "db", "disk", "disks", "cluster", "prod", "production", "box",
             "filesystem", "vms", "instances", "data", "backups", "server", "drive", "drives", "volume"}
_PRIVILEGE = re.compile(
    r"(\broot\b|\badmin(istrator)?\s+(rights|access|role|privileges)|\bpasswords?\b|\bssh\s+keys?\b"
    r"|\b(disable|bypass|ignore|turn\s+off|skip)\s+(the\s+)?(audit|policy|policies|approvals?|firewall|guard)"
    r"|\bprivilege)", re.I)


def danger(text: str) -> str | None:
    """Why ``text`` must go to a human (escalation rules 1-3 of the module docstring), or ``None``."""
    if _SHELL.search(text):
        return "it asks to run a raw shell or database command; I only run the node's defined actions"
    words = set(re.findall(r"[a-z]+", text.lower()))
    if words & _DESTRUCTIVE and words & _SWEEPING:
        return "it asks for a sweeping destructive change that no action here performs and policy never allows"
    if _PRIVILEGE.search(text):
        return "it asks to change privileges or safety controls, which needs a human"
    return None


_HARD_SPLIT = re.compile(
    r"\s*(?:;|\.\s+(?=[a-z])|,?\s+and\s+then\s+|,?\s+then\s+|,?\s+after\s+that,?\s+|,?\s+afterwards,?\s+)\s*", re.I)
_SOFT_SPLIT = re.compile(r"\s*(?:,\s*and\s+|\s+and\s+|,\s+|\s+&\s+)\s*", re.I)
_QUOTE_SPAN = re.compile(r"""'[^']*'|"[^"]*"|“[^”]*”""")


def split_request(text: str, entities: dict[str, list[str]]) -> list[str]:
    """Segments of a multi-step request (quoted text is never split)."""
    quotes: list[str] = []

    def hide(m: re.Match[str]) -> str:
        quotes.append(m.group(0))
        return f"\x00{len(quotes) - 1}\x00"

    masked = _QUOTE_SPAN.sub(hide, text.strip())
    parts: list[str] = []
    for hard in _HARD_SPLIT.split(masked):
        pieces = _SOFT_SPLIT.split(hard)
        current = pieces[0]
        for piece in pieces[1:]:
            if _starts_action(piece) or _only_entities(piece, entities):
                parts.append(current)
                current = piece
            else:
                current = f"{current} and {piece}"
        parts.append(current)
    restored = [re.sub(r"\x00(\d+)\x00", lambda m: quotes[int(m.group(1))], p).strip(" ,.") for p in parts]
    return [p for p in restored if p]


def _starts_action(piece: str) -> bool:
    words = [w for w in re.findall(r"[a-z'\-]+", piece.lower()) if w not in {"please", "pls", "also", "then", "and"}]
    if not words:
        return False
    first = words[0]
    return first in ACTION_WORDS or canonical(first, ACTION_WORDS) in ACTION_WORDS


def _only_entities(piece: str, entities: dict[str, list[str]]) -> bool:
    seg = ex.Segment.of(piece)
    if not seg.stems:
        return False
    mentions = ex.find_mentions(seg, entities)
    covered = {i for m in mentions for i in range(m.start, m.end)}
    rest = [w for i, w in enumerate(seg.stems) if i not in covered and w not in ex.KIND_WORDS and w != "?"]
    return bool(mentions) and not rest


class OfflinePlanner:
    """Retrieval over the intents' examples plus entity-grounded parameter extraction (no model)."""

    strategy = "offline"

    def __init__(self, hints: dict[str, Sequence[str]] | None = None, k: int = 8) -> None:
        self.hints = dict(HINTS if hints is None else hints)
        self.k = k
        self._cache: tuple[Any, Catalog] | None = None

    def catalog(self, tools: list[dict[str, Any]]) -> Catalog:
        """The (cached) catalogue of ``tools``, without the intents the planner never proposes."""
        key = tuple((t["name"], t.get("description"), len(t.get("examples") or ())) for t in tools)
        if self._cache is None or self._cache[0] != key:
            usable = [t for t in tools if t["name"] not in PLANNER_EXCLUDED]
            self._cache = (key, Catalog(usable, self.hints))
        return self._cache[1]

    async def plan(self, text: str, context: PlanningContext) -> Plan:
        """Plan ``text`` (see the module docstring for the rules)."""
        return self.plan_sync(text, context)

    def plan_sync(self, text: str, context: PlanningContext) -> Plan:
        """The same as :meth:`plan`, without the event loop."""
        text = (text or "").strip()
        if not text:
            return self._clarify("What would you like me to do?", 0.0, "empty request")
        reason = danger(text)
        if reason:
            return Plan(outcome="escalate", confidence=0.9, reason=f"escalated: {reason}", strategy=self.strategy)
        catalog = self.catalog(context.tools)
        if not catalog.tools:
            return Plan(outcome="escalate", confidence=0.9, reason="no actions are available to your role",
                        strategy=self.strategy)
        from cloudisense.agent.offline_segment import SegmentPlanner

        return SegmentPlanner(self, catalog, context).run(text)

    def _clarify(self, question: str, confidence: float, reason: str) -> Plan:
        return Plan(outcome="clarify", question=question, confidence=confidence, reason=reason,
                    strategy=self.strategy)


def required_params(tool: dict[str, Any]) -> list[str]:
    """Required params of ``tool`` (re-exported for the segment planner)."""
    return tool_required(tool)


def as_plan_steps(steps: list[tuple[str, dict[str, Any]]]) -> list[PlanStep]:
    """``PlanStep`` objects, with ids ``s1``, ``s2``... when there is more than one step."""
    many = len(steps) > 1
    return [PlanStep(id=f"s{i}" if many else None, intent=name, params=params)
            for i, (name, params) in enumerate(steps, 1)]
