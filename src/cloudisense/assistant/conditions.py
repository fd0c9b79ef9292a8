"""Conditions of conditional requests ("... if disk is above 90 %", "... if it's down").

A condition becomes a chain ``when`` (see :mod:`.chains`) over a field that an earlier step's
result really has: the fields come from the intent's declared result shape (``Intent.result``,
``"result"`` in ``describe()``). When no field fits, there is no condition: the planner asks
instead of acting unconditionally.

Conventions read from the result schema: a number field whose name or description names a time
unit ("age_hours", "days until ...") is compared in that unit ("older than 2 days" is
``> 48`` for hours); the first value of an enum is its good state ("running" for a service
state), so "down" is ``!= "running"``; a boolean is good when true ("ok", "running").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from cloudisense.assistant.catalog import STOPWORDS, canonical, stem
from cloudisense.assistant.extract import Quantity, field_unit, quantities

_GREATER = r"(?:above|over|more\s+than|greater\s+than|higher\s+than|bigger\s+than|larger\s+than|exceeds?|" \
           r"older\s+than|longer\s+than|past|passes|crosses|beyond|at\s+least|no\s+less\s+than|tops|hits|reaches" \
           r"|goes\s+(?:over|above|past)|climbs\s+(?:over|above|past)|breaches|north\s+of|>=?)"
_LESS = r"(?:below|under|less\s+than|lower\s+than|fewer\s+than|smaller\s+than|within|inside|younger\s+than|" \
        r"newer\s+than|sooner\s+than|at\s+most|no\s+more\s+than|down\s+to|drops\s+(?:below|under|to)" \
        r"|falls\s+(?:below|under|to)|south\s+of|<=?)"
#: The words of the comparisons above: they say how a value compares, never what is compared ("fewer than 2
#: gunicorn processes" names the process gunicorn, not "fewer").
COMPARISON_WORDS = (frozenset(re.findall(r"[a-z]+", _GREATER + _LESS)) | {"exceed"}) - {"s", "at", "no"}
#: "ten days or less", "20 or more": the bound said after the amount.
_BOUND_AFTER = re.compile(r"\b((?:\d+(?:\.\d+)?|[a-z]+)(?:\s*%|\s+[a-z]+)?)\s+or\s+"
                          r"(less|fewer|under|more|over|longer)\b")
#: Words that say a definite bad / good state (vague ones such as "wrong" or "off" are not a condition).
_NEGATIVE = {"down", "failed", "fail", "fails", "failing", "broken", "dead", "crashed", "crashes", "stopped",
             "unhealthy",
             "errored", "unsuccessful", "unsuccessfully", "offline"}
_POSITIVE = {"up", "running", "ok", "okay", "succeed", "succeeds", "succeeded", "successful", "successfully", "healthy",
             "online", "fine"}
_NOT = re.compile(r"\b(not|isn't|isnt|wasn't|aren't|didn't|doesn't|never|no longer)\b"
                  # "anything other than running", "anything but healthy": every state except the one named.
                  r"|\b(?:anything|something|any\s+state|whatever)\s+(?:other\s+than|else\s+than|but|except)\b"
                  r"|\bother\s+than\b")
#: "there is (no) X": a condition on whether something exists.
_THERE = re.compile(r"\bthere(?:'s|\s+is|\s+are|\s+isn't|\s+aren't)\s+(no|a|an|any|some)?\b")
#: Words that say a percentage.
_PERCENT = re.compile(r"%|\bpercent\b|\bper\s+cent\b")


@dataclass(frozen=True)
class Field:
    """One leaf of a result schema: its dotted path, JSON type, enum values and words."""

    path: str
    type: str
    enum: tuple[Any, ...]
    words: frozenset[str]
    name: str
    description: str


def result_fields(schema: dict[str, Any] | None) -> list[Field]:
    """The leaves of a result JSON-schema (``$ref`` to ``$defs`` followed), in declaration order."""
    if not schema:
        return []
    defs = schema.get("$defs") or {}
    out: list[Field] = []

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        if depth > 4:
            return
        if "$ref" in node:
            node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
        for name, spec in (node.get("properties") or {}).items():
            if not isinstance(spec, dict):
                continue
            if "$ref" in spec:
                spec = defs.get(spec["$ref"].rsplit("/", 1)[-1], {})
            path = f"{prefix}{name}"
            if spec.get("properties"):
                walk(spec, path + ".", depth + 1)
                continue
            typ = spec.get("type")
            enum = tuple(spec.get("enum") or ())
            for alt in spec.get("anyOf") or []:
                if isinstance(alt, dict) and alt.get("type") not in (None, "null"):
                    typ = typ or alt.get("type")
                    enum = enum or tuple(alt.get("enum") or ())
            if enum and not typ:
                typ = "string"
            desc = str(spec.get("description", ""))
            spoken = f"{path.replace('.', ' ').replace('_', ' ')} {desc}".lower()
            words = {stem(w) for w in re.findall(r"[a-z]+", spoken) if w not in STOPWORDS}
            out.append(Field(path, str(typ or "any"), enum, frozenset(words), name, desc))

    walk(schema, "", 0)
    return out


@dataclass(frozen=True)
class Condition:
    """A compiled condition on one field."""

    field: Field
    op: str
    value: Any
    #: How well the condition's words fit the field (higher is better).
    score: float

    def when(self, step_id: str) -> str:
        """The chain condition over step ``step_id``'s result."""
        return f"${{{step_id}.data.{self.field.path}}} {self.op} {json.dumps(self.value)}"


def _words(text: str) -> set[str]:
    """The stems of ``text``'s words, and the catalogue spelling of each ("ram" is also "memory")."""
    raw = re.findall(r"[a-z]+", text.lower())
    return {stem(w) for w in raw} | {canonical(w) for w in raw}


#: Shares said in words ("more than three quarters full"), as percentages.
_NOT_OF_TIME = r"(?!\s+(?:an?\s+)?(?:hours?|days?|minutes?|mins?|weeks?|months?|years?|seconds?)\b)"
_SHARES = tuple((re.compile(rf"\b(?:{said})\b{_NOT_OF_TIME}"), share) for said, share in (
    (r"three\s+quarters|three-quarters|3/4", "75%"), (r"two\s+thirds|two-thirds|2/3", "67%"),
    (r"a\s+third|one\s+third|1/3", "33%"), (r"a\s+quarter|one\s+quarter|1/4", "25%"),
    (r"half|a\s+half|1/2", "50%")))
#: "88%+", "90+ %": the amount or more.
_OR_MORE = re.compile(r"\b(\d+(?:\.\d+)?)\s*(%?)\s*\+(?!\d)")


def or_more_as_at_least(text: str) -> str:
    """``text`` with "N%+" said as "at least N%"."""
    return _OR_MORE.sub(lambda m: f"at least {m.group(1)}{m.group(2)}", text)


def _plain_amounts(low: str) -> str:
    """``low`` with shares in words as percentages and "N%+" as "at least N%"."""
    for pattern, share in _SHARES:
        low = pattern.sub(share, low)
    return or_more_as_at_least(low)


def compile_condition(text: str, fields: list[Field]) -> Condition | None:
    """The condition ``text`` says over one of ``fields``, or ``None`` when none fits."""
    low = _plain_amounts(text.lower())
    low = _BOUND_AFTER.sub(lambda m: ("at most " if m.group(2) in ("less", "fewer", "under") else "at least ")
                           + m.group(1), low)
    words = _words(low)
    if _PERCENT.search(low):
        words.add("percent")
    numeric = _numeric(low, words, fields)
    if numeric is not None:
        return numeric
    if re.search(rf"{_GREATER}|{_LESS}", low) and re.search(r"\d", low):
        return None  # "if there are more than 10": a count no field holds is no state of some other field
    return _state(low, words, fields)


#: "hasn't been rotated in 2 days", "not renewed for 3 weeks": nothing within a time, so the age is above it.
_NOT_WITHIN = re.compile(r"(?:\b(?:not|never|no)\b|n't)\b.*?\b[a-z]+ed(?:\s+up)?\s+"
                         r"(?P<op>(?:in|for)(?:\s+(?:the\s+)?(?:last|past))?)\s+"
                         r"(?=(?:\d|an?\b|one\b|two\b|three\b|a\s+few))")
#: Words that say the share left rather than the share used.
_FREE = {"free", "left", "available", "remaining", "unused"}
#: Words of a field that counts the time since something happened (an age), not until it will.
_SINCE = {"since", "ago", "age", "old"}


#: The comparison that holds exactly when the other does not.
_NEGATED_OP = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}


def _numeric(low: str, words: set[str], fields: list[Field]) -> Condition | None:
    m = re.search(rf"(?:is\s+|are\s+|gets?\s+|goes\s+|has\s+|have\s+|with\s+)?(?P<op>{_GREATER}|{_LESS})\s*", low)
    if not m:
        gap = _NOT_WITHIN.search(low)
        if gap is None:
            return None
        return _over_time(low[gap.end():], words, fields)
    op = ">" if re.fullmatch(_GREATER, m.group("op").strip()) else "<"
    if re.match(r"(at\s+(least|most)|no\s+(less|more)\s+than)\b", m.group("op").strip()):
        op += "="  # "at most 21 days" includes 21
    if _NOT.search(low[:m.start()]):
        op = _NEGATED_OP[op]  # "not above 90" / "unless it is up for at least an hour"
    rest = low[m.end():]
    nums = [q for q in quantities(rest)]
    pct = re.match(r"\s*(\d+(?:\.\d+)?)\s*(?:%|percent)", rest)
    if pct:
        nums.insert(0, Quantity(float(pct.group(1)), None, 0, pct.end()))
    if not nums:
        return None
    q = nums[0]
    # "smaller than 1000 bytes": what the number counts, when it is no time.
    counts = _words(q.noun) if q.noun and q.minutes is None else set()
    best: tuple[float, Field] | None = None
    for f in fields:
        if f.type not in ("number", "integer"):
            continue
        score = len(f.words & words) + (0.5 if f.path.count(".") == 0 else 0.0)
        if q.minutes is not None and field_unit(f.name, {"description": f.description}) is not None:
            score += 1
        if counts & f.words:
            score += 2  # the field that counts bytes, whatever else is said
        if score >= 1 and (best is None or score > best[0]):
            best = (score, f)
    if best is None:
        return None
    field = best[1]
    value: float = q.value
    unit = field_unit(field.name, {"description": field.description})
    if q.minutes is not None and unit is not None:
        value = q.minutes / unit
    if "percent" in words and words & _FREE and "used" in field.words and not field.words & _FREE and 0 <= value <= 100:
        # "less than 20 % free" over a field of the share used: more than 80 % used.
        value = 100 - value
        op = {">": "<", "<": ">", ">=": "<=", "<=": ">="}[op]
    return Condition(field, op, _as_number(value), best[0])


def _over_time(rest: str, words: set[str], fields: list[Field]) -> Condition | None:
    """The field that counts a time (its name or description names a unit) above the time said first in ``rest``."""
    times = [q for q in quantities(rest) if q.minutes is not None]
    timed = [f for f in fields if f.type in ("number", "integer") and f.words & _SINCE
             and field_unit(f.name, {"description": f.description}) is not None]
    if not times or not timed:
        return None
    field = max(timed, key=lambda f: len(f.words & words))
    unit = field_unit(field.name, {"description": field.description}) or 1.0
    return Condition(field, ">", _as_number((times[0].minutes or 0.0) / unit), 1.0 + len(field.words & words))


def _as_number(value: float) -> Any:
    """A compared amount as said: a whole number as an int, else rounded to three places."""
    return int(value) if float(value).is_integer() else round(value, 3)


#: "no cron process running", "no worker up": "no" before the thing whose state is said.
_NO_THING = re.compile(r"^\s*(?:if\s+)?no\s+(?!one\b|need\b|longer\b|more\b|less\b)")
#: "if it looks down", "if it seems unhealthy": an impression of a state, which no field can check.
_IMPRESSION = re.compile(r"\b(looks?|looking|seems?|seeming|appears?|feels?|sounds?)\b")


def _state(low: str, words: set[str], fields: list[Field]) -> Condition | None:
    if _IMPRESSION.search(low):
        return None
    # "no cron process running": a state said with "no" before its thing is that state's negation.
    negated = bool(_NOT.search(low)) or _NO_THING.match(low) is not None
    raw = set(re.findall(r"[a-z]+", low))
    # A state named by its own value: "if it is stopped", "if it's not running".
    for f in fields:
        for value in f.enum:
            if isinstance(value, str) and value.lower() in raw:
                return Condition(f, "!=" if negated else "==", value, 3)
    states = _state_words(low)
    bad = bool(states & _NEGATIVE)
    good = bool(states & _POSITIVE)
    there = _THERE.search(low)
    if not (bad or good) and there and [f for f in fields if f.type == "boolean"]:
        # "if there's no postgres process": whether the thing is there, a flag's good state.
        good, negated = True, negated or there.group(1) == "no"
    if not (bad or good):
        return None
    wants_good = good and not bad
    if negated:
        wants_good = not wants_good
    flags = [f for f in fields if f.type == "boolean"]
    if flags:
        field = max(flags, key=lambda f: len(f.words & words))
        return Condition(field, "==", wants_good, 2)
    enums = [f for f in fields if f.enum and isinstance(f.enum[0], str)]
    if enums:
        # The field the condition names ("if its health check fails": health), else the first.
        field = max(enums, key=lambda f: len(f.words & words))
        said = next((v for v in field.enum if isinstance(v, str) and v.lower() in (_NEGATIVE if not wants_good
                                                                                     else _POSITIVE)), None)
        if field is not enums[0] and said is not None:
            # Another field than the main one, named: its own word for that state ("health == unhealthy").
            return Condition(field, "==", said, 2)
        return Condition(field, "==" if wants_good else "!=", field.enum[0], 2)
    return None


#: Words after which "up" / "down" say a state ("it's down", "if it goes down"); after another verb they are
#: a particle of an idiom ("if it acts up", "if it messes up") that says no checkable state.
_STATE_VERBS = {"is", "are", "was", "were", "be", "been", "being", "s", "t", "isn", "isnt", "wasn", "aren", "not",
                "still", "stays", "stay", "goes", "go", "went", "gone", "comes", "came", "back", "it", "its"}


def _state_words(low: str) -> set[str]:
    """The words of ``low`` that may say a state: "up" and "down" only after a verb of being or becoming."""
    words = re.findall(r"[a-z]+", low)
    # Asked as a question ("is redis down"), the verb of being comes first (perhaps after the "not" of "... if
    # not": "not is redis up").
    lead = words[1:2] if words[:1] == ["not"] else words[:1]
    asked = lead in (["is"], ["are"], ["was"], ["were"])
    return {w for i, w in enumerate(words)
            if w not in ("up", "down") or asked or (i > 0 and words[i - 1] in _STATE_VERBS) or i == 0}


_IF = re.compile(r"(?<!\beven)(?:^|,?\s+)(?P<word>only\s+if|if|in\s+case|whenever|unless"
                 # ... and the other ways English says "if" ("provided it is down", "as long as X is up").
                 r"|provided(?:\s+that)?|providing(?:\s+that)?|as\s+long\s+as|so\s+long\s+as|assuming(?:\s+that)?"
                 r"|on\s+(?:the\s+)?condition\s+that|in\s+the\s+event(?:\s+that)?)\s+", re.I)


#: "should X happen, do Y" / "do Y should X happen": "should" before its subject says "if" (not a question:
#: an action is said too). Not "should I/we ...", which asks for advice.
_SHOULD_FIRST = re.compile(r"^\s*should\s+(?!i\b|we\b|you\b)(?P<cond>[^,;]{3,}?)\s*,\s*(?:then\s+)?(?P<action>\S.*)$",
                           re.I)
#: "when more than 4 X run, email the team": "when" with a comma and then an action is a condition, not a
#: question ("when did X run?" has no comma and asks).
_WHEN_FIRST = re.compile(r"^\s*(?:when|once|as\s+soon\s+as)\s+"
                         r"(?!you\b|u\b|did\b|does\b|do\b|is\b|was\b|will\b|are\b|were\b|can\b)"
                         r"(?P<cond>[^,;?]{3,}?)\s*,\s*(?:then\s+)?(?P<action>[^?]+)$", re.I)
_SHOULD_AFTER = re.compile(r"^(?P<action>.+?),?\s+should\s+(?!i\b|we\b|you\b|be\b|not\b)(?P<cond>\S+\s+\S.*)$", re.I)


#: "notify the team when the load is above 4": an action, then "when" and a state (a verb of being or becoming);
#: not "tell me / let me know when ..." (asked to be told, see the phrases), nor a time ("the errors from when
#: the deploy ran").
_WHEN_AFTER = re.compile(r"^(?!.*\b(?:me|us)\b.*\bwhen\b)(?P<action>.+?)(?<!\beven)\s+(?:when|once|as\s+soon\s+as)\s+"
                         r"(?P<cond>(?!you\b|i\b|we\b)[^?]*\b(?:is|are|gets?|goes|becomes?|hits?|reaches|drops?"
                         r"|falls?|rises?|exceeds?|passes|crosses)\b[^?]*)$", re.I)


#: A comparison with an amount: "over 85%", "older than 12h", "inside 25 days".
_COMPARED_AMOUNT = re.compile(rf"\b(?:{_GREATER}|{_LESS})\s+\d|{_BOUND_AFTER.pattern}", re.I)
#: Question words that ask for a value rather than whether something holds.
_WH_FIRST = re.compile(r"^\s*(?:what|whats|what's|how|which|who|when|where|why)\b", re.I)


def reads_as_condition(question: str) -> bool:
    """Whether a yes/no question said before an order can only be that order's condition: it compares
    a value with an amount ("/var over 85%? run rotate-logs.sh") or says a bad state ("the backup
    didn't succeed? retry it"). A question for a value ("what's the load?") or a good state ("is
    redis up?") is not: what to do with its answer is not said."""
    low = question.lower()
    if _WH_FIRST.match(low):
        return False
    if _COMPARED_AMOUNT.search(low):
        return True
    words = set(re.findall(r"[a-z]+", low))
    # "no cron process running? telegram me": a good state said with "no" before its thing is a bad one.
    negated = _NOT.search(low) is not None or _NO_THING.match(low) is not None
    return bool(words & _NEGATIVE) or (negated and bool(words & _POSITIVE))


def _inverted_condition(segment: str, starts: set[str] | frozenset[str],
                        verbs: set[str] | frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """``(action, condition)`` of a condition said with an inverted "should" ("should the disk fill up, clean
    it"), when the other part starts with an action word; else ``None``."""
    for pattern in (_SHOULD_FIRST, _WHEN_FIRST, _SHOULD_AFTER, _WHEN_AFTER):
        m = pattern.match(segment)
        if m is None:
            continue
        first = re.findall(r"[a-z]+", m.group("action").lower())[:1]
        # Said first, the comma ends the condition; said after, the action must start with an action word.
        said_first = pattern is not _SHOULD_AFTER
        if (said_first and not m.group("action").rstrip().endswith("?")) or (
                first and (canonical(first[0]) in starts or first[0] in verbs)):
            return m.group("action").strip(" ,.?"), m.group("cond").strip(" ,.?")
    return None


#: "check if X", "I wonder if X": an "if" that means "whether", so no condition ...
_WHETHER_IF = re.compile(r"\b(check|see|verify|know|tell\s+me|find\s+out|ask|test|wonder|look)\s*$", re.I)
#: ... unless others are to be told ("let the webhook know if it's down": a notification on a condition) ...
_TELL_OTHERS = re.compile(r"\blet\s+(?!me\b|us\b)\S+(?:\s+\S+)?\s+know\s*$", re.I)
#: ... or what follows only points back ("... know if not", "if so"): no "whether" is asked that way.
_ANAPHORIC_CONDITION = re.compile(r"\s*(?:not|so|yes|no|it\s+is\s*n[o']t|it\s+isn't|it's\s+not|it\s+doesn't|it\s+does)"
                                  r"\s*[.!?]*\s*$", re.I)


def split_condition(segment: str, starts: set[str] | frozenset[str] = frozenset(), *,
                    verbs: set[str] | frozenset[str] = frozenset()) -> tuple[str, str | None]:
    """``(action, condition)`` of one segment: "restart it if it's down" -> ("restart it", "it's down").

    ``starts`` are the words that start an action: "if redis is down start it" has no comma, and the
    action begins at the first of them after the condition's own words. ``verbs`` (plain English verbs of
    doing) also start the action of a condition said after it with "should" ("email the team should X be
    older than a day")."""
    inverted = _inverted_condition(segment, starts, verbs)
    if inverted is not None:
        return inverted
    m = _IF.search(segment)
    if not m or (_WHETHER_IF.search(segment[:m.start()]) and not _TELL_OTHERS.search(segment[:m.start()])
                 and not _ANAPHORIC_CONDITION.match(segment[m.end():])):
        return segment, None
    before, after = segment[:m.start()].strip(" ,"), segment[m.end():].strip(" ,.?")
    if m.group("word").lower() == "unless":
        after = f"not {after}"  # "unless it's running" is "if it's not running"
    topic = ""
    if before.endswith(":"):
        # "api.example.com: if the cert is inside 25 days, renew": what it is about, then a condition said
        # first; the action is about that thing too.
        topic, before = before.rstrip(":").strip(), ""
    if not before:
        action, cond = _condition_first(after, starts)
        if topic and re.search(r"\bits?\b", cond, re.I):
            # "orders: if its last backup is 2 days old, ...": "it" in the condition is what it is about.
            cond = re.sub(r"\bits\b", f"{topic}'s", cond, count=1, flags=re.I)
            cond = re.sub(r"\bit\b", topic, cond, count=1, flags=re.I) if topic not in cond else cond
        if topic and action:
            return f"{action} {topic}", cond
        # The action is said in the next segment: the condition carries what it is about.
        return action, f"{cond} ({topic})" if topic else cond
    return before, after


def _condition_first(after: str, starts: set[str] | frozenset[str]) -> tuple[str, str]:
    """``(action, condition)`` of what follows an "if" that starts the segment ("the backup failed, start a new
    one"); the action is empty when none is said."""
    cond, _, action = after.partition(",")
    if not action.strip():
        parts = re.split(r"\s+then\s+", after, maxsplit=1)
        if len(parts) == 2:
            return parts[1].strip(), parts[0].strip()
        words = after.split()
        for i in range(2, len(words)):
            said = " ".join(words[:i]).lower()
            # The condition must say a state first ("redis is down"), not only name a thing ("the backup").
            # ... or a word of a state ("if it fails notify the team").
            w = words[i].lower()
            acts = w in starts or (canonical(w) in starts and w not in _NEGATIVE | _POSITIVE
                                   and canonical(w) != "status")
            if acts and (re.search(r"\b(is|are|was|were|isn't|has|have|gets?|goes)\b", said)
                         or set(re.findall(r"[a-z]+", said)) & (_NEGATIVE | _POSITIVE)):
                return " ".join(words[i:]), " ".join(words[:i])
        return "", after
    return action.strip(), cond.strip()
