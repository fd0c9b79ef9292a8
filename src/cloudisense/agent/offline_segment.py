"""Per-request work of the offline planner: segments -> scored intents -> grounded steps."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudisense.agent import extract as ex
from cloudisense.agent.catalog import STOPWORDS, SYNONYMS, Catalog, tool_required
from cloudisense.agent.offline import ACTION_WORDS, GENERIC, KIND_DEFAULT_INTENT, LIST_KIND, as_plan_steps
from cloudisense.agent.plan import Plan, PlanningContext

if TYPE_CHECKING:
    from cloudisense.agent.offline import OfflinePlanner

#: Below this share of known words (and with no configured name mentioned) a request is out of scope.
MIN_COVERAGE = 0.34
#: Words around a process name that are not the name ("is there a python process running").
CUE_EXTRA = {"check", "process", "find", "look", "running", "run", "pid", "pids", "anything", "called", "named"}
_SCRIPT_ID = re.compile(r"\b[0-9a-f]{8,64}\b")
_TOPIC = re.compile(r"(?<![\w/])(/[\w\-/]+)")


@dataclass
class StepDraft:
    """One segment's outcome before it becomes a plan step or a question."""

    intent: str | None
    params: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    question: str | None = None
    unknown: bool = False
    reason: str = ""


class SegmentPlanner:
    """Plans one request, segment by segment, remembering entities for "it"."""

    def __init__(self, owner: "OfflinePlanner", catalog: Catalog, context: PlanningContext) -> None:
        self.owner = owner
        self.catalog = catalog
        self.context = context
        self.entities = {k: list(v) for k, v in context.entities.items()}
        #: Last entity named per kind, in this request (for "restart it").
        self.last: dict[str, str] = {}
        self.cue_words = set(SYNONYMS) | set(SYNONYMS.values()) | GENERIC | ACTION_WORDS | CUE_EXTRA

    def run(self, text: str) -> Plan:
        """The plan for ``text``."""
        from cloudisense.agent.offline import split_request

        segments = split_request(text, self.entities)
        drafts: list[StepDraft] = []
        for index, segment in enumerate(segments):
            drafts.append(self.plan_segment(segment, drafts, index))
        return self._combine(text, drafts)

    # --- combining ---------------------------------------------------------------------------

    def _combine(self, text: str, drafts: list[StepDraft]) -> Plan:
        strategy = self.owner.strategy
        if all(d.unknown for d in drafts):
            return Plan(outcome="escalate", confidence=0.6, strategy=strategy,
                        reason="escalated: nothing this node can do matches the request")
        unknown = [d for d in drafts if d.unknown]
        if unknown:
            return Plan(outcome="clarify", confidence=0.3, strategy=strategy, reason="part of the request matches no action",
                        question="I can only do part of that. Which of the node's actions did you mean for the rest?")
        questions = [d for d in drafts if d.question]
        if questions:
            first = questions[0]
            return Plan(outcome="clarify", question=first.question, confidence=min(0.4, first.confidence),
                        reason=first.reason or "a required detail is missing", strategy=strategy)
        steps: list[tuple[str, dict[str, Any]]] = []
        for d in drafts:
            assert d.intent is not None
            if steps and steps[-1] == (d.intent, d.params):
                continue  # "cpu and memory" twice is one call
            steps.append((d.intent, d.params))
        for i, (name, params) in enumerate(steps):
            if name == "simple_http_notify" and "message" not in params:
                params["message"] = _compose_message(text, steps[:i])
        confidence = min(d.confidence for d in drafts)
        why = "; ".join(d.reason for d in drafts if d.reason)
        return Plan(steps=as_plan_steps(steps), outcome="execute", confidence=round(confidence, 3),
                    reason=why or None, strategy=strategy)

    # --- one segment ---------------------------------------------------------------------------

    def plan_segment(self, text: str, before: list[StepDraft], index: int) -> StepDraft:
        """Choose the intent of one segment and ground its params."""
        seg = ex.Segment.of(text)
        mentions = ex.find_mentions(seg, self.entities)
        for m in mentions:
            if not m.ambiguous:
                self.last[m.kind] = m.names[0]
        query = self._query_tokens(ex.strip_message(text), mentions)
        content = [t for t in query if t != "?"]
        if not content and mentions:
            inherited = self._inherit(before, mentions)
            if inherited:
                return inherited
            kind = mentions[0].kind
            default = KIND_DEFAULT_INTENT.get(kind)
            if default in self.catalog.by_name:
                return self._ground(default, seg, mentions, 0.55, text, bare=True)
        known = [t for t in content if t in self.catalog.vocabulary or t.isdigit()]
        if not mentions and (not content or len(known) / len(content) < MIN_COVERAGE):
            return StepDraft(None, unknown=True, reason="no matching action")
        scores = self._rerank(self.catalog.scores(query), seg, mentions, query)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked or ranked[0][1] <= 0:
            return StepDraft(None, unknown=True, reason="no matching action")
        best, s1 = ranked[0]
        s2 = ranked[1][1] if len(ranked) > 1 else 0.0
        margin = (s1 - s2) / s1 if s1 > 0 else 0.0
        retrieval = 0.35 + 0.35 * min(1.0, margin / 0.4)
        if len(known) < len(content):
            retrieval -= 0.1 * (len(content) - len(known)) / len(content)
        return self._ground(best, seg, mentions, retrieval, text)

    def _query_tokens(self, text: str, mentions: list[ex.Mention]) -> list[str]:
        """Catalogue tokens of ``text`` without the words of the names mentioned (they are grounded apart)."""
        seg = ex.Segment.of(text)
        names = {tok for m in mentions for n in m.names for tok in ex.entity_tokens(n)}
        names |= {n.lower() for m in mentions for n in m.names}
        dropped = {seg.keep[i] for i, stem in enumerate(seg.stems) if stem in names}
        return self.catalog.tokens(" ".join(t for i, t in enumerate(seg.raw) if i not in dropped))

    def _inherit(self, before: list[StepDraft], mentions: list[ex.Mention]) -> StepDraft | None:
        """"restart web and nginx": a bare name after a step repeats that step for the name."""
        prev = next((d for d in reversed(before) if d.intent), None)
        if prev is None or prev.intent is None:
            return None
        tool = self.catalog.by_name[prev.intent]
        kinds = tool.get("entities") or {}
        for param, kind in kinds.items():
            hit = next((m for m in mentions if m.kind == kind and not m.ambiguous), None)
            if hit:
                params = dict(prev.params)
                params[param] = hit.names[0]
                return StepDraft(prev.intent, params, prev.confidence, reason=f"{prev.intent} again for {hit.names[0]}")
        return None

    def _rerank(self, scores: dict[str, float], seg: ex.Segment, mentions: list[ex.Mention],
                query: list[str]) -> dict[str, float]:
        """Favour intents whose entity kinds the request names; kind nouns pick one-vs-many."""
        kinds_named = {m.kind for m in mentions}
        singular, plural = ex.kind_nouns(seg)
        out: dict[str, float] = {}
        for name, score in scores.items():
            if score <= 0:
                continue
            tool = self.catalog.by_name[name]
            kinds = set((tool.get("entities") or {}).values())
            required = tool_required(tool)
            req_kinds = {k for p, k in (tool.get("entities") or {}).items() if p in required}
            if kinds & kinds_named:
                score *= 1.6
            elif req_kinds and kinds_named:
                score *= 0.5
            list_kind = LIST_KIND.get(name)
            if list_kind and list_kind in singular and list_kind not in plural:
                score *= 0.5
            if list_kind and list_kind in plural and not kinds_named & {list_kind}:
                score *= 1.3
            if req_kinds & plural and not req_kinds & kinds_named and not req_kinds & singular:
                score *= 0.6
            if kinds & singular and not kinds & plural:
                score *= 1.4
            if name == "simple_telegram_notify" and "telegram" not in query:
                score *= 0.3
            if any(p not in (tool.get("entities") or {}) and not self._fillable(p, seg, mentions) for p in required):
                score *= 0.7
            out[name] = score
        return out

    def _fillable(self, param: str, seg: ex.Segment, mentions: list[ex.Mention]) -> bool:
        if param == "pattern":
            return ex.extract_pattern(seg, mentions) is not None
        if param in ("message", "name", "prompt", "query"):
            return True
        if param == "script_id":
            return bool(_SCRIPT_ID.search(seg.text))
        if param == "topic":
            return bool(_TOPIC.search(seg.text))
        return False

    # --- params ----------------------------------------------------------------------------

    def _ground(self, intent: str, seg: ex.Segment, mentions: list[ex.Mention], retrieval: float,
                text: str, bare: bool = False) -> StepDraft:
        """Fill ``intent``'s params from the segment; a question when a required one is missing."""
        intent, mentions = self._switch(intent, seg, mentions)
        tool = self.catalog.by_name[intent]
        props = (tool.get("params") or {}).get("properties") or {}
        required = tool_required(tool)
        entity_params = tool.get("entities") or {}
        params: dict[str, Any] = {}
        grounded = 1.0
        reasons = []
        for param in props:
            if param in entity_params:
                kind = entity_params[param]
                value, how, question = self._entity(kind, seg, mentions, intent, param in required)
                if question:
                    return StepDraft(intent, question=question, confidence=retrieval, reason=f"{intent}: {how}")
                if value is not None:
                    params[param] = value
                    if how != "named":
                        grounded = min(grounded, 0.8)
                        reasons.append(f"{param}={value} ({how})")
                continue
            value = self._value(intent, param, seg, mentions, props[param])
            if value is not None:
                params[param] = value
        intent, params = _fix_log_intent(intent, params, self.catalog)
        tool = self.catalog.by_name[intent]
        for param in tool_required(tool):
            if param not in params and param != "message":
                return StepDraft(intent, question=_question(intent, param, self.entities),
                                 confidence=retrieval, reason=f"{intent}: {param} is missing")
        confidence = max(0.0, min(1.0, retrieval + 0.3 * grounded))
        return StepDraft(intent, params, confidence, reason="; ".join(reasons))

    def _switch(self, intent: str, seg: ex.Segment, mentions: list[ex.Mention]) -> tuple[str, list[ex.Mention]]:
        """``check_process`` of a configured target is its ``target_status``, and the other way round."""
        targets = [m for m in mentions if m.kind == "target"]
        if intent == "check_process" and targets and "target_status" in self.catalog.by_name:
            return "target_status", mentions
        if intent == "target_status" and not targets and "check_process" in self.catalog.by_name:
            name = ex.process_name(seg, self.cue_words)
            if name and name not in GENERIC and not ex.has_pronoun(seg) and not mentions:
                return "check_process", mentions
        return intent, mentions

    def _entity(self, kind: str, seg: ex.Segment, mentions: list[ex.Mention], intent: str,
                required: bool) -> tuple[str | None, str, str | None]:
        """(value, how it was found, question) for an entity-kind param."""
        of_kind = [m for m in mentions if m.kind == kind]
        if not of_kind and kind == "playbook":
            of_kind = ex.alias_mentions(seg, self.entities, kind)
        names: list[str] = []
        for m in of_kind:
            for n in m.names:
                if n not in names:
                    names.append(n)
        if len(names) == 1:
            return names[0], "named" if of_kind[0].how != "alias" else "alias", None
        if len(names) > 1:
            return None, "ambiguous", f"Which {_noun(kind)} do you mean: {_either(names)}?"
        if kind in self.last and (ex.has_pronoun(seg) or seg is not None and self._is_followup(seg)):
            return self.last[kind], "from earlier in the request", None
        if ex.has_pronoun(seg):
            earlier = self._from_history(kind)
            if earlier:
                return earlier, "from the conversation", None
        if required:
            return None, "missing", _question(intent, None, self.entities, kind)
        return None, "not given", None

    def _is_followup(self, seg: ex.Segment) -> bool:
        """A continuation such as "tell me when healthy" that names nothing of its own."""
        return not ex.find_mentions(seg, self.entities) and bool(self.last)

    def _from_history(self, kind: str) -> str | None:
        for turn in reversed(self.context.history[-6:]):
            found = ex.find_mentions(ex.Segment.of(turn.get("content", "")), {kind: self.entities.get(kind, [])})
            names = [m.names[0] for m in found if not m.ambiguous]
            if names:
                return names[-1]
        return None

    def _value(self, intent: str, param: str, seg: ex.Segment, mentions: list[ex.Mention],
               spec: dict[str, Any]) -> Any:
        """A plain (non-entity) param read from the text, or ``None``."""
        text = seg.text
        if param == "lines":
            return ex.extract_lines(text)
        if param in ("pattern", "grep"):
            return ex.extract_pattern(seg, mentions)
        if param == "since_minutes":
            return ex.extract_since_minutes(text)
        if param == "limit":
            return ex.extract_limit(text) if intent == "list_processes" else ex.extract_lines(text)
        if param == "sort_by":
            return ex.extract_sort_by(self.catalog.tokens(text))
        if param == "path":
            return ex.extract_path(text)
        if param == "check":
            return True if ex.wants_check_mode(text) else None
        if param == "args":
            return ex.extract_args(text) or None
        if param == "message":
            return ex.extract_message(text)
        if param == "name" and intent == "check_process":
            return ex.process_name(seg, self.cue_words)
        if param == "script_id":
            m = _SCRIPT_ID.search(text)
            return m.group(0) if m else None
        if param == "topic":
            m = _TOPIC.search(text)
            return m.group(1) if m else None
        return None


def _fix_log_intent(intent: str, params: dict[str, Any], catalog: Catalog) -> tuple[str, dict[str, Any]]:
    """A filter word without a line count is a search; a line count with a filter is a filtered read."""
    if intent == "read_log" and params.get("grep") and "lines" not in params and "search_logs" in catalog.by_name:
        new = {"pattern": params["grep"]}
        if "name" in params:
            new["name"] = params["name"]
        return "search_logs", new
    if intent == "search_logs" and "lines" in params and "read_log" in catalog.by_name:
        return intent, params
    return intent, params


_NOUNS = {"target": "service", "log": "log", "script": "script", "playbook": "playbook", "rule": "rule"}


def _noun(kind: str) -> str:
    return _NOUNS.get(kind, kind)


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _question(intent: str, param: str | None, entities: dict[str, list[str]], kind: str | None = None) -> str:
    """A concrete question for a missing param, listing the configured choices when there are some."""
    verb = intent.split("_")[0].replace("get", "check")
    if kind:
        names = entities.get(kind) or []
        choices = f": {_either(names)}" if names else ""
        return f"Which {_noun(kind)} should I {verb}{choices}?"
    if param == "script_id":
        return "Which script run? Give its id (list_scripts shows the running ones)."
    if param == "pattern":
        return "What text should I search the logs for?"
    if param == "name" and intent == "check_process":
        return "Which process should I look for?"
    if param == "topic":
        return "Which channel (topic, e.g. /team)?"
    return f"What {param} should I use for {intent}?"


def _compose_message(text: str, earlier: list[tuple[str, dict[str, Any]]]) -> str:
    """A notification text when the user gave none: what was asked, and what ran before it."""
    if earlier:
        done = ", ".join(f"{name}" + (f" {p.get('name')}" if p.get("name") else "") for name, p in earlier)
        return f"CloudiSENSE: {done} done (requested: {text.strip()[:200]})"
    return f"CloudiSENSE: {text.strip()[:300]}"


__all__ = ["SegmentPlanner", "StepDraft", "STOPWORDS"]
