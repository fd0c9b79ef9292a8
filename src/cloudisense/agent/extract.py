"""Parameter extraction for the offline planner, grounded in the node's configured entities.

Everything here is deterministic string work on one request segment:

* :func:`find_mentions` finds configured entity names in the text ("the nginx error log"
  is log ``nginx-error``, "the cleanup script" is script ``cleanup.sh``), tolerating typos
  ("wroker") and words in between ("rotate the logs" is ``rotate-logs.sh``);
* the ``extract_*`` functions read counts, time windows, patterns, paths and flags.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from cloudisense.agent.catalog import STOPWORDS, raw_tokens, stem

#: File extensions that are not part of how people say a name.
_EXTENSIONS = {"sh", "yml", "yaml", "py", "bash", "json", "toml", "log"}
#: Words that name an entity kind ("the nginx playbook": kind word after a name).
KIND_WORDS: dict[str, str] = {
    "log": "log", "logs": "log", "logfile": "log",
    "script": "script", "scripts": "script",
    "playbook": "playbook", "playbooks": "playbook", "role": "playbook", "roles": "playbook",
    "service": "target", "services": "target", "target": "target", "targets": "target", "daemon": "target",
    "rule": "rule", "rules": "rule",
}
#: Singular nouns that refer to one specific entity of a kind ("show me the log").
SINGULAR_KIND_NOUNS: dict[str, str] = {
    "log": "log", "logfile": "log", "script": "script", "playbook": "playbook", "role": "playbook",
    "service": "target", "target": "target", "daemon": "target", "rule": "rule",
}
PLURAL_KIND_NOUNS: dict[str, str] = {
    "logs": "log", "scripts": "script", "playbooks": "playbook", "roles": "playbook",
    "services": "target", "targets": "target", "rules": "rule",
}
#: Everyday words for a configured name, tried only when nothing of the wanted kind matched
#: literally ("the web role" is the nginx playbook on a node whose web tier is nginx).
ALIASES: dict[str, tuple[str, ...]] = {
    "web": ("nginx",), "proxy": ("nginx",), "http": ("nginx",), "frontend": ("nginx", "web"),
    "account": ("users",), "accounts": ("users",), "user": ("users",),
    "application": ("app",), "system": ("syslog",), "kv": ("redis",), "cache": ("redis",),
}
PRONOUNS = {"it", "its", "it's", "them", "that", "this", "one", "same", "him", "her", "there"}


def entity_tokens(name: str) -> list[str]:
    """How a configured name is spoken: ``rotate-logs.sh`` -> ``["rotate", "log"]``."""
    parts = [p for p in re.split(r"[-_.\s]+", name.lower()) if p]
    if len(parts) > 1 and parts[-1] in _EXTENSIONS:
        parts = parts[:-1]
    return [stem(p) for p in parts]


@dataclass
class Mention:
    """A configured name found in the text: its kind, name(s), and where (token positions)."""

    kind: str
    names: list[str]
    start: int
    end: int
    #: ``"exact"`` (every word of the name), ``"partial"`` (a distinctive word + kind word) or ``"alias"``.
    how: str = "exact"

    @property
    def ambiguous(self) -> bool:
        """More than one configured name fits."""
        return len(self.names) > 1


@dataclass
class Segment:
    """One request segment, tokenised for matching."""

    text: str
    raw: list[str] = field(default_factory=list)
    #: Positions in ``raw`` of the tokens kept for matching (stopwords removed).
    keep: list[int] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> "Segment":
        """Tokenise ``text``."""
        # "rotate-logs" and "nginx-error" are matched word by word; "backup.sh" stays whole.
        raw = [p for t in raw_tokens(text) for p in (t.split("-") if "-" in t.strip("-") and "/" not in t else [t]) if p]
        keep = [i for i, t in enumerate(raw) if t not in STOPWORDS or t in PRONOUNS]
        return cls(text, raw, keep, [stem(raw[i]) for i in keep])


def _fix(word: str, vocabulary: set[str]) -> str:
    if word in vocabulary or len(word) < 4 or not word.isalpha():
        return word
    close = difflib.get_close_matches(word, sorted(vocabulary), n=1, cutoff=0.8)
    return close[0] if close else word


def find_mentions(segment: Segment, entities: dict[str, list[str]]) -> list[Mention]:
    """Configured entities named in ``segment``, longest match first, without overlaps."""
    vocab = {tok for names in entities.values() for n in names for tok in entity_tokens(n)}
    words = [_fix(w, vocab) for w in segment.stems]
    raw_kept = [segment.raw[i] for i in segment.keep]
    found: list[Mention] = []
    for kind, names in entities.items():
        for name in names:
            toks = entity_tokens(name)
            n = len(toks)
            for i in range(len(words) - n + 1):
                if words[i:i + n] == toks or raw_kept[i] == name.lower():
                    found.append(Mention(kind, [name], i, i + (n if words[i:i + n] == toks else 1)))
    # Longer names win over the names they contain ("nginx-error" over target "nginx").
    found.sort(key=lambda m: (-(m.end - m.start), m.start))
    chosen: list[Mention] = []
    for m in found:
        if any(m.start < c.end and c.start < m.end and (c.end - c.start) > (m.end - m.start) for c in chosen):
            continue
        chosen.append(m)
    chosen += _partial_mentions(words, entities, chosen)
    return _prefer_kind_words(chosen, words)


def _partial_mentions(words: list[str], entities: dict[str, list[str]], taken: list[Mention]) -> list[Mention]:
    """``"error log"`` -> ``nginx-error``; ``"nginx log"`` -> both nginx logs (ambiguous)."""
    out: list[Mention] = []
    for i, word in enumerate(words[:-1]):
        kind = KIND_WORDS.get(words[i + 1])
        busy = {j for m in taken if m.kind == kind for j in range(m.start, m.end)}
        if kind is None or i in busy or kind not in entities:
            continue
        hits = [n for n in entities[kind] if word in entity_tokens(n) and len(entity_tokens(n)) > 1]
        if hits:
            out.append(Mention(kind, hits, i, i + 1, "partial"))
    return out


def _prefer_kind_words(mentions: list[Mention], words: list[str]) -> list[Mention]:
    """A name followed by a kind word is of that kind only ("the nginx playbook" is not the target)."""
    out = []
    for m in mentions:
        follower = KIND_WORDS.get(words[m.end]) if m.end < len(words) else None
        if follower and follower != m.kind and any(
                o.kind == follower and o.start == m.start for o in mentions):
            continue
        out.append(m)
    return out


def alias_mentions(segment: Segment, entities: dict[str, list[str]], kind: str) -> list[Mention]:
    """Names of ``kind`` reached through :data:`ALIASES` ("web role" -> ``nginx.yml``)."""
    out = []
    for i, word in enumerate(segment.stems):
        for alias in ALIASES.get(word, ()):
            hits = [n for n in entities.get(kind, []) if entity_tokens(n) == [alias]]
            if hits:
                out.append(Mention(kind, hits, i, i + 1, "alias"))
    return out


def kind_nouns(segment: Segment) -> tuple[set[str], set[str]]:
    """Entity kinds referred to by a singular noun ("the log") and by a plural one ("the logs")."""
    singular = {SINGULAR_KIND_NOUNS[t] for t in segment.raw if t in SINGULAR_KIND_NOUNS}
    plural = {PLURAL_KIND_NOUNS[t] for t in segment.raw if t in PLURAL_KIND_NOUNS}
    return singular, plural


def has_pronoun(segment: Segment) -> bool:
    """Whether the segment refers back to something ("restart it", "check its status")."""
    return any(t in PRONOUNS for t in segment.raw)


# --- numbers, windows, patterns -------------------------------------------------------------

_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50, "hundred": 100,
                 "an": 1, "a": 1, "half": 0.5}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(k for k in _WORD_NUMBERS if k not in {"a", "an", "half"}) + ")"


def _num(text: str) -> float:
    return float(text) if text[0].isdigit() else float(_WORD_NUMBERS[text])


def extract_lines(text: str) -> int | None:
    """``"last 20 lines"``, ``"tail -n 100"``, ``"100 lines"`` -> the count."""
    t = text.lower()
    m = re.search(rf"{_NUM}\s+(?:log\s+)?(?:lines|line|entries|rows)\b", t) or re.search(r"-n\s*(\d+)", t) \
        or re.search(r"\btail\s+(\d+)\b", t)
    return int(_num(m.group(1))) if m else None


_UNITS = {"m": 1, "min": 1, "mins": 1, "minute": 1, "minutes": 1, "h": 60, "hr": 60, "hrs": 60, "hour": 60,
          "hours": 60, "d": 1440, "day": 1440, "days": 1440, "week": 10080, "weeks": 10080}


def extract_since_minutes(text: str) -> int | None:
    """``"from the last hour"`` -> 60, ``"past 30 min"`` -> 30, ``"in the last 2 hours"`` -> 120."""
    t = text.lower()
    units = "|".join(sorted(_UNITS, key=len, reverse=True))
    m = re.search(rf"\b(?:last|past|previous|within|since|in the last|over the last)\s+(?:the\s+)?{_NUM}\s*({units})\b", t)
    if m:
        return int(_num(m.group(1)) * _UNITS[m.group(2)])
    m = re.search(r"\b(?:last|past|previous)\s+(?:an?\s+|one\s+)?(hour|day|minute|week)\b", t) \
        or re.search(r"\b(?:half an|an|one)\s+(hour|day|minute|week)\s+ago\b", t)
    if m:
        return _UNITS[m.group(1)]
    m = re.search(rf"\b{_NUM}\s*({units})\s+ago\b", t)
    if m:
        return int(_num(m.group(1)) * _UNITS[m.group(2)])
    return None


#: Words people use for the things they grep logs for, and the pattern each becomes.
PATTERN_WORDS: dict[str, str] = {
    "error": "error", "errors": "error", "err": "error", "timeout": "timeout", "timeouts": "timeout",
    "timed": "timeout", "warning": "warning", "warnings": "warning", "warn": "warning",
    "exception": "exception", "exceptions": "exception", "traceback": "traceback", "tracebacks": "traceback",
    "oom": "oom", "panic": "panic", "fatal": "fatal", "critical": "critical", "crash": "crash",
    "crashes": "crash", "denied": "denied", "refused": "refused", "failure": "fail", "failures": "fail",
    "failed": "fail", "segfault": "segfault", "killed": "killed",
}
_QUOTED = re.compile(r"""(?:'([^']{1,200})'|"([^"]{1,200})"|“([^”]{1,200})”)""")


def quoted(text: str) -> str | None:
    """The first quoted phrase in ``text``."""
    m = _QUOTED.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def extract_pattern(segment: Segment, mentions: list[Mention]) -> str | None:
    """What to search for: a quoted phrase, ``"for X"`` after grep/search, a status code, or an error word."""
    q = quoted(segment.text)
    if q:
        return q.strip()
    busy = {segment.keep[i] for m in mentions for i in range(m.start, m.end)}
    for i, tok in enumerate(segment.raw):
        if i in busy:
            continue
        if re.fullmatch(r"[45]\d\ds?", tok):
            return tok.rstrip("s")
        if tok in PATTERN_WORDS:
            return PATTERN_WORDS[tok]
    m = re.search(r"\b(?:grep|search|find|look)\b.*?\bfor\s+([a-z0-9_.:\-]+)", segment.text.lower())
    if m and m.group(1) not in STOPWORDS and m.group(1) not in KIND_WORDS:
        return m.group(1)
    return None


def extract_path(text: str) -> str | None:
    """An absolute path (``/var``, ``/home/data``)."""
    m = re.search(r"(?:^|\s|on\s|of\s)(/[\w.\-/]*)", text)
    if not m:
        return None
    path = m.group(1).rstrip(".,?!")
    return path if len(path) == 1 else path.rstrip("/")


def extract_limit(text: str) -> int | None:
    """``"top 5"``, ``"the 3 biggest"``, ``"20 processes"`` -> the count."""
    t = text.lower()
    m = re.search(rf"\btop\s+{_NUM}\b", t) or re.search(
        rf"\b{_NUM}\s+(?:biggest|heaviest|largest|hungriest|busiest|most|top|processes|procs|process)\b", t)
    return int(_num(m.group(1))) if m else None


def extract_sort_by(tokens: list[str]) -> str | None:
    """``memory`` or ``cpu`` when the request says how to order."""
    if "memory" in tokens:
        return "memory"
    if "cpu" in tokens:
        return "cpu"
    return None


def wants_check_mode(text: str) -> bool:
    """Dry-run / check mode of a playbook."""
    return bool(re.search(r"\b(dry[\s-]?run|dryrun|check mode|--check|simulate|what would change|no changes)\b",
                          text.lower()))


def extract_args(text: str) -> list[str]:
    """Script arguments: ``"with --full"`` / ``"with args a b"`` -> the list."""
    m = re.search(r"\b(?:with|args?|arguments?)\s+((?:-{1,2}[\w\-=./]+\s*)+)", text)
    if m:
        return m.group(1).split()
    return []


def extract_message(text: str) -> str | None:
    """The notification text: a quoted phrase, or what follows ``saying`` / ``that`` / ``:``."""
    q = quoted(text)
    if q:
        return q.strip()
    m = re.search(r"(?:\bsaying\b|\bthat\b|:|\babout\b)\s*(.+)$", text, re.IGNORECASE)
    if m and len(m.group(1).strip()) > 2:
        return m.group(1).strip().rstrip(".")
    return None


def strip_message(text: str) -> str:
    """The request without its message body, for retrieval ("tell the team that nginx restarted")."""
    if not re.search(r"\b(tell|notify|ping|alert|message|send|post|let)\b", text, re.IGNORECASE):
        return text
    out = _QUOTED.sub(" ", text)
    return re.sub(r"(?:\bsaying\b|\bthat\b|:|\babout\b)\s*(.+)$", " ", out, flags=re.IGNORECASE)


def process_name(segment: Segment, cue_words: set[str]) -> str | None:
    """A process name for ``check_process``: the word next to "process", else the first unknown word."""
    raw = segment.raw
    for i, tok in enumerate(raw):
        if stem(tok) == "process":
            for j in (i - 1, i + 1):
                if 0 <= j < len(raw) and raw[j] not in STOPWORDS and stem(raw[j]) not in cue_words:
                    return raw[j]
    for tok in raw:
        if tok in STOPWORDS or stem(tok) in cue_words or tok in cue_words or tok in PRONOUNS:
            continue
        if re.fullmatch(r"[a-z][\w.\-]{1,63}", tok):
            return tok
    return None
