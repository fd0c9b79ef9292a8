"""Parameter extraction for the offline planner, grounded in the node's configured entities.

Everything here is deterministic string work on one request segment, driven only by what the
registry and the configuration declare:

* :func:`find_mentions` finds configured entity names of any kind in the text ("the nginx error
  log" is log ``nginx-error``, "api.example.com" is domain ``api.example.com``), tolerating typos
  ("wroker", "www.exmaple.com") and the configured aliases ("the kv store" is ``redis``);
* :func:`read_value` reads one param by its JSON-schema: integers (with units when the field
  says what unit it counts: "2 hours" is 120 for a minutes field), booleans from modifiers
  ("force", "dry-run"), enums, ids that look like ids ("b-42"), paths and free text.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections import Counter
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from cloudisense.assistant.catalog import (
    _PHRASE_RE,
    STOPWORDS,
    SYNONYMS,
    VocabularyMemo,
    canonical,
    raw_tokens,
    spell_phrases,
    stem,
    uninflect,
)

#: File extensions that are not part of how people say a name.
_EXTENSIONS = {"sh", "yml", "yaml", "py", "bash", "json", "toml", "log"}
PRONOUNS = {"it", "its", "it's", "them", "that", "this", "one", "same", "him", "her", "there"}


def entity_tokens(name: str) -> list[str]:
    """How a configured name is spoken: ``rotate-logs.sh`` -> ``["rotate", "log"]``."""
    return list(_entity_tokens(name))


@functools.lru_cache(maxsize=4096)
def _entity_tokens(name: str) -> tuple[str, ...]:
    parts = [p for p in re.split(r"[-_.\s]+", name.lower()) if p]
    if len(parts) > 1 and parts[-1] in _EXTENSIONS:
        parts = parts[:-1]
    return tuple(stem(p) for p in parts)


def kind_words(kinds: Any) -> dict[str, str]:
    """Words that name an entity kind: the kind itself, its plural and its synonyms ("service" is a target)."""
    return dict(_kind_words(tuple(kinds)))


@functools.lru_cache(maxsize=256)
def _kind_words(kinds: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for kind in kinds:
        norm = canonical(kind)
        out[kind] = out[kind + "s"] = out[norm] = kind
        for word, to in SYNONYMS.items():
            if to == norm:
                out[word] = kind
    return tuple(out.items())


def _plural(word: str) -> bool:
    return len(word) > 3 and word.endswith("s") and stem(word) != word


def _same_number(said: str, name: str) -> bool:
    """"orders" names database ``orders``; "order" (another word) does not: a one-word name is said as written."""
    word = [p for p in re.split(r"[-_.\s]+", name.lower()) if p][0]  # noqa: RUF015 - IndexError, not StopIteration
    return said == word or _plural(said) == _plural(word)


@dataclass
class Mention:
    """A configured name found in the text: its kind, name(s), and where (token positions)."""

    kind: str
    names: list[str]
    start: int
    end: int
    #: ``exact``, ``partial`` (a distinctive word + kind word), ``alias`` or ``fuzzy`` (a typo).
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
    def of(cls, text: str) -> Segment:
        """Tokenise ``text``."""
        # "rotate-logs" and "nginx-error" are matched word by word; "backup.sh" and ids ("b-42") stay whole.
        raw = [_bare(p) if "-" in t else p for t in raw_tokens(text)
               for p in (t.split("-") if "-" in t.strip("-") and "/" not in t and not re.search(r"\d", t) else [t])
               if p]
        keep = [i for i, t in enumerate(raw) if t not in STOPWORDS or t in PRONOUNS]
        return cls(text, raw, keep, [stem(raw[i]) for i in keep])


@functools.lru_cache(maxsize=4096)
def _name_parts(name: str) -> list[str]:
    """A configured name's words as written, lower case, without its file extension ("users-db" -> users, db)."""
    parts = [p for p in re.split(r"[-_.\s]+", name.lower()) if p]
    return parts[:-1] if len(parts) > 1 and parts[-1] in _EXTENSIONS else parts


def _bare(part: str) -> str:
    """A word of a hyphenated name without its file extension ("logs.sh" of "rotate-logs.sh" is "logs")."""
    head, dot, ext = part.rpartition(".")
    return head if dot and ext in _EXTENSIONS and head.isalpha() else part


_VOWELS = set("aeiou")
_NO_VOWELS = str.maketrans("", "", "aeiou")


def near_miss(word: str, target: str) -> bool:
    """A typo of ``target``: two neighbouring letters swapped, one letter missing or extra, or no vowels.

    A changed letter is not enough ("older" is not "order")."""
    if word == target or word[:1] != target[:1]:
        return False
    if len(word) >= 4 and len(target) >= 5 and word.isalpha() and not set(word) & _VOWELS \
            and target.translate(_NO_VOWELS) == word:
        return True  # written without its vowels ("srch", "rstrt")
    if len(word) == len(target):
        diff = [i for i, (a, b) in enumerate(zip(word, target, strict=True)) if a != b]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and word[diff[0]] == target[diff[1]] \
            and word[diff[1]] == target[diff[0]]
    short, long_ = sorted((word, target), key=len)
    if len(short) < 4:
        return False
    return letter_missing(short, long_)


def letter_missing(word: str, full: str) -> bool:
    """``word`` is ``full`` with one letter after its first left out ("lok" of "look", "whn" of "when")."""
    return len(full) == len(word) + 1 and word[:1] == full[:1] and any(
        full[:i] + full[i + 1:] == word for i in range(1, len(full)))


#: difflib is the slow part of planning: ``near_miss_any`` remembers its answers.
_NEAR_MISS_MEMO: VocabularyMemo[bool] = VocabularyMemo()


def near_miss_any(word: str, vocabulary: set[str] | frozenset[str]) -> bool:
    """Whether ``word`` is a typo of some word of ``vocabulary``."""
    return _NEAR_MISS_MEMO.get(word, vocabulary, lambda: any(
        near_miss(word, v) for v in difflib.get_close_matches(word, list(vocabulary), n=5, cutoff=0.75)))


def _fix(word: str, vocabulary: set[str]) -> str:
    if word in vocabulary or len(word) < 4 or not word.isalpha():
        return word
    close = [v for v in difflib.get_close_matches(word, sorted(vocabulary), n=3, cutoff=0.75) if near_miss(word, v)]
    return close[0] if close else word


def _fix_stem_or_typed(stemmed: str, typed: str, vocabulary: set[str]) -> str:
    fixed = _fix(stemmed, vocabulary)
    if fixed != stemmed or not typed.isalpha():
        return fixed
    typed_fixed = _fix(typed, vocabulary)
    return typed_fixed if typed_fixed != typed else stemmed


def find_mentions(segment: Segment, entities: dict[str, list[str]],
                  aliases: dict[str, str] | None = None) -> list[Mention]:
    """Configured entities named in ``segment`` (aliases included), longest match first, without overlaps."""
    vocab = {tok for names in entities.values() for n in names for tok in entity_tokens(n)}
    raw_kept = [segment.raw[i] for i in segment.keep]
    # The word as typed is tried too: a slip can make a stem of its own ("acces" stems to "acce", two
    # letters from "access"; as typed it is one).
    words = [_fix_stem_or_typed(w, r, vocab) for w, r in zip(segment.stems, raw_kept, strict=True)]
    fixed = [w != s for w, s in zip(words, segment.stems, strict=True)]
    dotted = {n.lower(): (kind, n) for kind, names in entities.items() for n in names if "." in n.strip(".")}
    found: list[Mention] = []
    for kind, names in entities.items():
        for name in names:
            toks = entity_tokens(name)
            n = len(toks)
            for i in range(len(words)):
                if raw_kept[i] == name.lower():
                    found.append(Mention(kind, [name], i, i + 1))
                elif i + n <= len(words) and words[i:i + n] == toks and (n > 1 or fixed[i] or _same_number(
                        raw_kept[i], name)):
                    # "user-db" for users-db is the name said otherwise (a typo), not the name.
                    otherwise = n > 1 and raw_kept[i:i + n] != _name_parts(name)
                    found.append(Mention(kind, [name], i, i + n,
                                         "fuzzy" if any(fixed[i:i + n]) or otherwise else "exact"))
    for i, tok in enumerate(raw_kept):
        if "." in tok.strip(".") and tok not in dotted and dotted:
            close = [d for d in difflib.get_close_matches(tok, list(dotted), n=2, cutoff=0.85) if near_miss(tok, d)]
            if close:
                kind, name = dotted[close[0]]
                found.append(Mention(kind, [name], i, i + 1, "fuzzy"))
    owner = {n: kind for kind, names in entities.items() for n in names}
    for phrase, name in (aliases or {}).items():
        toks = [stem(t) for t in raw_tokens(phrase) if t not in STOPWORDS]
        if not toks or name not in owner:
            continue
        for i in range(len(words) - len(toks) + 1):
            if words[i:i + len(toks)] == toks:
                found.append(Mention(owner[name], [name], i, i + len(toks), "alias"))
    # Longer names win over the names they contain ("nginx-error" over target "nginx").
    found.sort(key=lambda m: (-(m.end - m.start), m.how == "alias", m.start))
    chosen: list[Mention] = []
    for m in found:
        if any(m.start < c.end and c.start < m.end and ((c.end - c.start) > (m.end - m.start) or (c.how != "alias"
                                                       and m.how == "alias")) for c in chosen):
            continue
        if any(c.start == m.start and c.end == m.end and c.names == m.names for c in chosen):
            continue
        chosen.append(m)
    kinds = kind_words(entities)
    chosen += _partial_mentions(words, entities, chosen, kinds)
    return _prefer_kind_words(chosen, words, kinds)


def _partial_mentions(words: list[str], entities: dict[str, list[str]], taken: list[Mention],
                      kinds: dict[str, str]) -> list[Mention]:
    """``"error log"`` -> ``nginx-error``; ``"nginx log"`` -> both nginx logs (ambiguous)."""
    out: list[Mention] = []
    for i, word in enumerate(words[:-1]):
        kind = kinds.get(words[i + 1])
        busy = {j for m in taken if m.kind == kind for j in range(m.start, m.end)}
        if kind is None or i in busy or kind not in entities:
            continue
        hits = [n for n in entities[kind] if len(entity_tokens(n)) > 1
                and any(word == t or _same_root(word, t) for t in entity_tokens(n))]
        if hits:
            out.append(Mention(kind, hits, i, i + 1, "partial"))
    busy = {j for m in [*taken, *out] for j in range(m.start, m.end)}
    for i in range(len(words) - 1):
        if i in busy or i + 1 in busy:
            continue
        # "the log rotation" -> rotate-logs.sh: both words of a two-word name, in either order and either form.
        pair = words[i:i + 2]
        for kind, names in entities.items():
            hits = [n for n in names if len(toks := entity_tokens(n)) == 2 and _match_in_any_order(pair, toks)]
            if len(hits) == 1:
                out.append(Mention(kind, hits, i, i + 2, "partial"))
    return out


def _match_in_any_order(words: list[str], tokens: list[str]) -> bool:
    """Each of two words is one of two name tokens, the same word or another form of it."""
    def same(w: str, t: str) -> bool:
        return w == t or _same_root(w, t)

    return (same(words[0], tokens[0]) and same(words[1], tokens[1])) or (
        same(words[0], tokens[1]) and same(words[1], tokens[0]))


def _same_root(word: str, token: str) -> bool:
    """Two forms of one word ("rotation" and "rotate", "cleaning" and "clean"): a shared start of five letters
    or more, missing at most two letters of the shorter one."""
    if not (word.isalpha() and token.isalpha()) or min(len(word), len(token)) < 5:
        return False
    shared = len(os.path.commonprefix([word, token]))  # noqa: RUF071 (letters, not paths)
    return shared >= 5 and shared >= min(len(word), len(token)) - 2


def _prefer_kind_words(mentions: list[Mention], words: list[str], kinds: dict[str, str]) -> list[Mention]:
    """A name followed by a kind word is of that kind only ("the nginx playbook" is not the target)."""
    out = []
    for m in mentions:
        follower = kinds.get(words[m.end]) if m.end < len(words) else None
        if follower and follower != m.kind and any(o.kind == follower and o.start == m.start for o in mentions):
            continue
        out.append(m)
    return out


def kind_nouns(segment: Segment, kinds: dict[str, str]) -> tuple[set[str], set[str]]:
    """Entity kinds referred to by a singular noun ("the log") and by a plural one ("the logs")."""
    singular = {kinds[t] for t in segment.raw if t in kinds and not _plural(t)}
    plural = {kinds[t] for t in segment.raw if t in kinds and _plural(t)}
    return singular, plural


def has_pronoun(segment: Segment) -> bool:
    """Whether the segment refers back to something ("restart it", "check its status")."""
    return any(t in PRONOUNS for t in segment.raw)


# --- numbers and units ------------------------------------------------------------------------

_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "dozen": 12, "fifteen": 15, "twenty": 20,
                 "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "pair": 2, "trio": 3}
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(_WORD_NUMBERS) + ")"
#: Time units in minutes.
_UNITS = {"sec": 1 / 60, "secs": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
          "m": 1, "min": 1, "mins": 1, "minute": 1, "minutes": 1, "h": 60, "hr": 60, "hrs": 60, "hour": 60,
          "hours": 60, "d": 1440, "day": 1440, "days": 1440, "week": 10080, "weeks": 10080,
          "fortnight": 20160, "fortnights": 20160,
          "month": 43200, "months": 43200, "yr": 525600, "yrs": 525600, "year": 525600, "years": 525600}
_UNIT_RE = "|".join(sorted(_UNITS, key=len, reverse=True))
#: The words of time units, as said and stemmed ("min", "hours" / "hour").
TIME_UNITS = frozenset(_UNITS) | frozenset(stem(u) for u in _UNITS)
#: How a field says which time unit it counts (by its name or description).
_FIELD_UNIT = {"second": 1 / 60, "seconds": 1 / 60, "minute": 1, "minutes": 1, "hour": 60, "hours": 60,
               "day": 1440, "days": 1440, "week": 10080, "weeks": 10080}


def word_number(token: str) -> str:
    """``token`` in digits when it is a number said in words other than "one" ("dozen" -> "12"), else itself."""
    value = _WORD_NUMBERS.get(token)
    return str(value) if value is not None and token != "one" else token


def _num(text: str) -> float:
    return float(text) if text[0].isdigit() else float(_WORD_NUMBERS[text])


def field_words(param: str, spec: dict[str, Any]) -> list[str]:
    """The words of a param's name and description (``since_minutes`` -> since, minutes, ...)."""
    return re.findall(r"[a-z]+", f"{param.replace('_', ' ')} {spec.get('description', '')}".lower())


def field_unit(param: str, spec: dict[str, Any]) -> float | None:
    """The time unit (in minutes) a numeric field counts, when its name or description says so."""
    name_words = re.findall(r"[a-z]+", param.lower().replace("_", " "))
    for words in (name_words, field_words(param, spec)):
        for w in words:
            if w in _FIELD_UNIT:
                return _FIELD_UNIT[w]
    return None


@dataclass(frozen=True)
class Quantity:
    """A number in the text, with its time unit (minutes) when it has one, and where it is."""

    value: float
    minutes: float | None
    start: int
    end: int
    #: The word right after the number ("20 lines" -> ``lines``).
    noun: str = ""
    #: A frequency ("every 6 hours", "once a day", "daily"), not a duration or an age.
    every: bool = False


_EVERY_BEFORE = re.compile(r"\b(every|each|once\s+per|once\s+every)\s+$"
                           # "set the backup interval to 3 hours": the time named as the interval
                           r"|\b(interval|frequency)\s+(?:\w+\s+){0,3}?(?:to|of|at|=|:)\s*$")
#: "a 15-minute interval", "6 hours apart": the time named as the interval, after it.
_EVERY_AFTER = re.compile(r"\s*(?:intervals?|apart|cadence|frequency)\b")
#: How many times in a unit of time, said before "a/per day": "twice", "4 times", "3x", "three backups".
_TIMES_PER = re.compile(rf"\b(?:(once|twice|thrice)|{_NUM}\s*(?:times|x)|{_NUM}\s+(?:[a-z][\w\-]*\s+){{0,3}}?"
                        r"[a-z]+s)\s+$")
#: A determiner before "one" makes it a pronoun ("the one that fired", "this one", "which one").
_ONE_AS_PRONOUN = re.compile(r"\b(the|this|that|which|each|any|every|another|a|no|last|first|next|new|other|same)\s+$")
#: Words of a field that counts the time between two runs ("minutes between two automatic backups").
_INTERVAL_WORDS = {"between", "interval", "every", "often", "frequency", "period"}


def is_interval(param: str, spec: dict[str, Any]) -> bool:
    """Whether a numeric field counts the time between repeated runs (it takes "every 6 hours", "daily")."""
    return bool(_INTERVAL_WORDS & set(field_words(param, spec)))


def quantities(text: str) -> list[Quantity]:
    """Numbers in ``text``: ``"2 hours"`` (a duration), ``"last hour"`` (one hour), ``"20 lines"``, ``"top 5"``."""
    return list(_quantities(text))


@functools.lru_cache(maxsize=4096)
def _quantities(text: str) -> tuple[Quantity, ...]:
    """Numbers in ``text``: ``"2 hours"`` (a duration), ``"last hour"`` (one hour), ``"20 lines"``, ``"top 5"``."""
    t = text.lower()
    out: list[Quantity] = []
    # "half an hour", "an hour and a half", "1 and a half days": halves of a unit.
    for m in re.finditer(r"\bhalf\s+(?:an?\s+)?(hour|day|minute|week|month|year)\b"
                         r"|\b(?:(an?|one|\d+)\s+)?(hour|day|minute|week|month|year)s?\s+and\s+a\s+half\b", t):
        whole = 0.0 if m.group(1) else (float(m.group(2)) if (m.group(2) or "a")[0].isdigit() else 1.0)
        unit = m.group(1) or m.group(3)
        out.append(Quantity(whole + 0.5, (whole + 0.5) * _UNITS[unit], m.start(), m.end(),
                            every=bool(_EVERY_BEFORE.search(t[:m.start()]))))
    # "a couple of hours", "a couple days": two of a unit.
    for m in re.finditer(r"\ba\s+couple\s+(?:of\s+)?(minute|hour|day|week)s?\b", t):
        out.append(Quantity(2, 2 * _UNITS[m.group(1)], m.start(), m.end(),
                            every=bool(_EVERY_BEFORE.search(t[:m.start()]))))
    # "the past quarter hour", "three quarters of an hour": quarters of an hour.
    for m in re.finditer(r"\b(?:(three)\s+)?quarters?\s+(?:of\s+)?(?:an?\s+)?hour\b", t):
        quarters = 3 if m.group(1) else 1
        out.append(Quantity(quarters / 4, 15.0 * quarters, m.start(), m.end(),
                            every=bool(_EVERY_BEFORE.search(t[:m.start()]))))
    # "90 minutes", "48h", "a 15-minute interval" (the unit joined by a hyphen).
    for m in re.finditer(rf"(?<![\w.\-]){_NUM}\s*-?\s*({_UNIT_RE})(?![\w])", t):
        if any(q.start <= m.start() < q.end for q in out):
            continue
        out.append(Quantity(_num(m.group(1)), _num(m.group(1)) * _UNITS[m.group(2)], m.start(), m.end(),
                            every=bool(_EVERY_BEFORE.search(t[:m.start()]) or _EVERY_AFTER.match(t[m.end():]))))
    for m in re.finditer(r"\b(last|past|previous|an?|one|per|every|each)\s+"
                         r"(hour|day|minute|week|fortnight|month|year)\b", t):
        if not any(q.start <= m.start(2) < q.end for q in out):
            times = _TIMES_PER.search(t[:m.start()]) if m.group(1) in ("per", "an", "a", "every", "each") else None
            every = m.group(1) in ("per", "every", "each") or bool(times)
            # "twice a day" runs every 12 hours, "4 times a day" or "three backups per day" every 6 and 8.
            count = 1.0
            if times:
                said = times.group(1) or times.group(2) or times.group(3)
                count = {"once": 1.0, "twice": 2.0, "thrice": 3.0}.get(said) or _num(said)
            if count <= 0:
                continue
            start = times.start() if times and not times.group(1) else m.start(2)
            out.append(Quantity(1, _UNITS[m.group(2)] / count, start, m.end(), every=every))
    # "hourly", "6-hourly" (every 6 hours), "2-weekly".
    for m in re.finditer(r"(?<![\w.\-])(?:(\d+)\s*-\s*)?(hourly|daily|nightly|weekly)\b", t):
        units = float(m.group(1)) if m.group(1) else 1.0
        if units <= 0:
            continue
        out.append(Quantity(units, units * {"hourly": 60, "daily": 1440, "nightly": 1440, "weekly": 10080}[m.group(2)],
                            m.start(), m.end(), every=True))
    for m in re.finditer(rf"(?<![\w.\-/%]){_NUM}(?![\w.%\-/])(?:\s+([a-z]+))?", t):
        if any(q.start <= m.start() < q.end for q in out):
            continue
        if m.group(1) == "one" and _ONE_AS_PRONOUN.search(t[:m.start()]):
            continue  # "ack the one that just fired": which one is a question, never alert 1
        out.append(Quantity(_num(m.group(1)), None, m.start(), m.end(), stem(m.group(2) or "")))
    return tuple(sorted(out, key=lambda q: q.start))


# --- reading one param by its schema ------------------------------------------------------------

#: A quote; an apostrophe inside a word ("what's", "the node's") opens or closes none.
_QUOTED = re.compile(r"""(?:(?<!\w)'([^']{1,200})'(?!\w)|"([^"]{1,200})"|“([^”]{1,200})”)""")


def quoted(text: str) -> str | None:
    """The first quoted phrase in ``text``."""
    m = _QUOTED.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def non_null(spec: dict[str, Any]) -> dict[str, Any]:
    """``Optional[X]``'s schema ``X`` (the one member of ``anyOf`` that is not null), else ``spec``."""
    options = [o for o in spec.get("anyOf") or [] if isinstance(o, dict) and o.get("type") != "null"]
    return options[0] if len(options) == 1 else spec


def json_type(spec: dict[str, Any]) -> str:
    """The main JSON type of a param (``anyOf [X, null]`` is ``X``)."""
    if "type" in spec:
        typ = spec["type"]
        return next((t for t in typ if t != "null"), "string") if isinstance(typ, list) else typ
    for alt in spec.get("anyOf") or []:
        if isinstance(alt, dict) and alt.get("type") not in (None, "null"):
            return str(alt["type"])
    return "any"


def enum_of(spec: dict[str, Any]) -> list[Any]:
    """The allowed values of a param, when it has an enum."""
    if spec.get("enum"):
        return list(spec["enum"])
    for alt in spec.get("anyOf") or []:
        if isinstance(alt, dict) and alt.get("enum"):
            return list(alt["enum"])
    return []


def free_text(spec: dict[str, Any]) -> bool:
    """A param that takes free text (a message, a note, a file's content): long, and of no declared shape."""
    return int(non_null(spec).get("maxLength") or 0) >= 100 and not pattern_of(spec)


def pattern_of(spec: dict[str, Any]) -> str | None:
    """The regular expression a string param must match, when it has one."""
    if spec.get("pattern"):
        return str(spec["pattern"])
    for alt in spec.get("anyOf") or []:
        if isinstance(alt, dict) and alt.get("pattern"):
            return str(alt["pattern"])
    return None


def distinctive(param: str, spec: dict[str, Any]) -> bool:
    """A param whose value, once read, says which intent: an id of a declared shape ("b-42"), an interval."""
    pattern = pattern_of(spec)
    if json_type(spec) == "string" and pattern and specific_pattern(pattern):
        return True
    return json_type(spec) in ("integer", "number") and is_interval(param, spec)


def specific_pattern(pattern: str) -> bool:
    """A pattern that plain words do not match ("b-\\d+" is specific, "[A-Za-z0-9]+" is not)."""
    try:
        return not any(re.fullmatch(pattern, w) for w in _PLAIN_WORDS)
    except re.error:
        return False


#: Plain words of a few lengths: a pattern that matches one of them can't tell an id from a word.
_PLAIN_WORDS = ("x", "the", "disk", "files", "status", "restart", "services")


def _modifier_phrases(param: str, spec: dict[str, Any]) -> list[str]:
    """How a request turns a boolean param on: its name ("force", "dry run") and the lead words of its description."""
    name = param.lower().replace("_", " ")
    phrases = {name, name.replace(" ", "-"), name.replace(" ", ""), param.lower()}
    desc = str(spec.get("description", "")).lower()
    lead = re.split(r"[:(,;]", desc)[0].strip()
    if lead and len(lead.split()) <= 2:
        phrases |= {lead, lead.replace(" ", "-"), lead.replace(" ", "")}
    for inner in re.findall(r"\(([a-z\- ]{3,20})\)", desc):
        phrases.add(inner.strip())
    # A one-word modifier said as an adverb or a past form ("forcibly", "forced" for force).
    root = name[:-1] if name.endswith("e") else name
    if " " not in name and len(name) >= 4:
        phrases |= {root + end for end in ("ed", "ibly", "ably", "efully", "fully", "ly")} - {name}
    return sorted(p for p in phrases if len(p) >= 3)


def _said_instead(desc: str, low: str) -> bool:
    """A flag described as "X instead of Y", asked for as not Y ("a complete backup, not incremental")."""
    other = re.search(r"\binstead\s+of\s+(?:an?\s+|the\s+)?([a-z-]{3,})", desc)
    if other is None:
        return False
    word = re.escape(other.group(1))
    return re.search(rf"\b(?:not|no|non-?|rather\s+than|instead\s+of)\s*(?:an?\s+|the\s+)?{word}\b", low) is not None


#: How a request asks for a run that changes nothing ("without changing anything", "make no changes").
_NO_CHANGE = re.compile(r"\b(?:without|not|don'?t|do\s+not|never)\s+(?:chang|modify|touch|alter)\w*\s+"
                        r"(?:anything|a\s+thing|something)\b|\bchanges?\s+nothing\b|\b(?:make|making)\s+no\s+changes\b"
                        # "see what it would change", "but don't actually renew it", "don't apply anything"
                        r"|\bwould\s+change\b|\b(?:don'?t|do\s+not)\s+(?:actually|really)\s+\w+"
                        r"|\b(?:don'?t|do\s+not|without)\s+(?:apply|applying|commit|committing)\b")
#: Words just before a modifier that say it is not so ("nobody has acknowledged", "not forced").
_NEGATION_BEFORE = re.compile(r"(?:\b(?:not|never|nobody|no\s+one|none|no|without|skip|skipping)\b|n't)"
                              r"(?:\s+\w+){0,2}\s*$")


@dataclass
class Reading:
    """What one segment offers for plain params: the text, its quantities, and what was taken already."""

    segment: Segment
    #: Raw-token positions of configured names (never read as values).
    busy: set[int]
    used: set[int] = field(default_factory=set)
    #: A quoted phrase is one param's value (the message, or the text to look for), not two.
    quote_taken: bool = False
    #: Words of the catalogue: they say what to do, so they are never guessed to be a name.
    vocabulary: set[str] | frozenset[str] = frozenset()
    #: Declared id patterns of the catalogue ("b-\d+"): a token of that shape is that id, not another name.
    id_patterns: tuple[re.Pattern[str], ...] = ()
    #: The names of the catalogue's intents: the value of a param that names an intent ("only this intent").
    intent_names: AbstractSet[str] = frozenset()

    @property
    def text(self) -> str:
        """The segment's text."""
        return self.segment.text

    def __post_init__(self) -> None:
        self.numbers = quantities(self.text)


#: Arguments said as such, starting with a flag, to the end of their clause.
_ARGS_LISTED = re.compile(r"\b(?:args?|arguments?|passing|flags?)\s*[:=]?\s+(-[^,;]*?)\s*"
                          r"(?=[,;]|\s+(?:and\s+then|then|please|pls)\b|[.!?]?\s*$)", re.I)
#: What a log or a listing is made of: said with a count, they say how many, never what to look for.
_RECORD_WORDS = {"entry", "entries", "line", "lines", "record", "records", "row", "rows", "item", "items"}


#: Words that judge what is looked for without saying it ("anything weird in the logs?"): never a text to look for.
_JUDGING_WORDS = frozenset({"weird", "odd", "strange", "unusual", "funny", "suspicious", "interesting", "abnormal",
                            "fishy", "wrong", "bad", "off", "unexpected", "sketchy", "dodgy"})


def read_value(param: str, spec: dict[str, Any], reading: Reading, *, required: bool,
               known_words: set[str]) -> Any:
    """The value of one non-entity param read from the text by its type, or ``None``.

    ``known_words`` are the words that say *which* intent (its name, description, examples):
    they are never taken as a free-text value.
    """
    value = _read_value(param, spec, reading, required=required, known_words=known_words)
    if isinstance(value, str) and value.lower() in _JUDGING_WORDS and not quoted(reading.text):
        return None
    return value


def _read_value(param: str, spec: dict[str, Any], reading: Reading, *, required: bool,
                known_words: set[str]) -> Any:
    typ = json_type(spec)
    text = reading.text
    low = text.lower()
    if typ in ("integer", "number"):
        return _read_number(param, spec, reading, typ, known_words)
    if typ == "boolean":
        if spec.get("default") is True:
            return None
        # The text with its phrases spelt the catalogue's way ("check mode" is "dryrun"): a phrase said is a
        # modifier wherever it stands.
        # ("check-mode", "dry-run": the hyphen joins the same words.)
        rewritten = spell_phrases(" " + re.sub(r"(?<=[a-z])-(mode|run)\b", r" \1", low) + " ")
        for phrase in _modifier_phrases(param, spec):
            said_as = re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])")
            spots = list(said_as.finditer(low))
            # "unacknowledged", "nobody has acknowledged": the modifier said as not so. Only a
            # three-state flag (default none: either way or not at all) reads that as false.
            if re.search(rf"(?<![\w-])un-?{re.escape(phrase)}(?![\w-])", f"{low} {rewritten}") or any(
                    _NEGATION_BEFORE.search(low[:spot.start()]) for spot in spots):
                return False if "default" in spec and spec["default"] is None else None
            # A first word that is the request's verb ("check the playbook") is not a modifier.
            if spots and (spots[0].start() > 0 or " " in phrase or "-" in phrase
                         or canonical(phrase) not in known_words):
                return True
            # "force-restore b-44": the modifier joined to the request's verb.
            if " " not in phrase and "-" not in phrase and re.search(
                    rf"(?<![\w-]){re.escape(phrase)}-(?:[a-z]{{3,}})\b", low):
                joined_verb = re.search(rf"(?<![\w-]){re.escape(phrase)}-([a-z]{{3,}})\b", low)
                if joined_verb and canonical(joined_verb.group(1)) in known_words:
                    return True
            if not spots and (spelt_at := said_as.search(rewritten)):
                if _NEGATION_BEFORE.search(rewritten[:spelt_at.start()]):  # "nobody has acked"
                    return False if "default" in spec and spec["default"] is None else None
                return True
        # "test-renew X" for a flag described as "only test that ...": its verb joined to the action's.
        only = re.match(r"\s*(?:only|just)\s+([a-z]{4,})\b", str(spec.get("description", "")).lower())
        if only and re.search(rf"(?<![\w-]){re.escape(only.group(1))}-[a-z]{{3,}}", low):
            return True
        # "even though it has newer writes" for a flag described as "... even when the database has newer writes".
        desc_even = re.search(r"\beven\s+(?:when|if|though)\s+([^.;()]+)", str(spec.get("description", "")).lower())
        said_even = re.search(r"\beven\s+(?:when|if|though)\s+([^.;,]+)", low)
        if desc_even and said_even:
            wanted = {stem(w) for w in re.findall(r"[a-z]+", desc_even.group(1)) if w not in STOPWORDS and len(w) > 2}
            if wanted & {stem(w) for w in re.findall(r"[a-z]+", said_even.group(1))}:
                return True
        if _said_instead(str(spec.get("description", "")).lower(), low):
            return True
        # A flag that makes the run change nothing (its description says so), asked for in other words.
        if re.search(r"\bchanges?\s+nothing\b", str(spec.get("description", "")).lower()) and _NO_CHANGE.search(low):
            return True
        # "the logs with their sizes": what the flag adds, asked for ("true: also each file's path, size ...").
        desc = str(spec.get("description", "")).lower()
        if desc.startswith("true:"):
            adds = {stem(w) for w in re.findall(r"[a-z]+", desc[5:]) if len(w) >= 3 and w not in STOPWORDS}
            for asked in re.finditer(r"\b(?:with|including|plus)\s+(?:their|its|the|all)?\s*([a-z]+)", low):
                if stem(asked.group(1)) in adds:
                    return True
            # "how large is each?" ("how large" is "size"): a word of what it adds, asked about each thing.
            spelt = {stem(w) for w in raw_tokens(spell_phrases(f" {low} "))}
            if re.search(r"\b(?:each|every\s+one|all\s+of\s+them|apiece)\b", low) and spelt & adds:
                return True
            if "path" in adds and re.match(r"\s*where\b", low):
                return True  # "where do the files live?" asks for what the flag adds: their paths
        # "ids and descriptions only": a flag described as keeping only some fields ("only id, description and
        # enabled"), asked for by naming two of them and "only".
        keeps = re.match(r"\s*only\s+(.+)", desc)
        if keeps and re.search(r"\b(?:only|just)\b", low):
            fields = {stem(w) for w in re.findall(r"[a-z]+", keeps.group(1)) if len(w) >= 2 and w not in STOPWORDS}
            if len(fields & {stem(w) for w in re.findall(r"[a-z]+", low)}) >= 2:
                return True
        return None
    values = enum_of(spec)
    if values:
        # The words of a configured name are that name ("the application log" says no ``source: log``).
        said = Counter(raw_tokens(low))
        said.subtract(reading.segment.raw[i] for i in reading.busy if i < len(reading.segment.raw))
        words = [t for t, n in said.items() if n > 0]
        busy_raw = {reading.segment.raw[i] for i in reading.busy if i < len(reading.segment.raw)}
        # "warning-level alerts": a listed value said as part of a hyphenated word (not of a configured name).
        words += [p for w in list(words) if "-" in w.strip("-") and not all(p in busy_raw for p in w.split("-"))
                  for p in w.split("-") if p and p not in words]
        tokens = {canonical(t) for t in words} | set(words)
        # ... and as the phrase table spells them ("have cleared" is "resolved").
        tokens |= set(raw_tokens(spell_phrases(f" {low} "))) - set(raw_tokens(low)) - busy_raw
        # (A value matched through its synonym only when that synonym does not merge opposites: "failed" and
        # "success" are both a "result", which says neither.)
        hits = [v for v in values if isinstance(v, str) and (v.lower() in tokens or (
                canonical(v.lower()) in tokens and canonical(v.lower()) not in _MERGED_OPPOSITES)
                                                             or any(near_miss(t, v.lower()) for t in tokens)
                                                             # "the ones that errored": the value with an ending
                                                             or any(uninflect(t, {v.lower()}) for t in words))]
        if not hits and not required and "default" in spec:
            hits = _enum_by_description(spec, values, {stem(t) for t in raw_tokens(spell_phrases(f" {low} "))})
        return hits[0] if len(hits) == 1 else None
    if typ == "array":
        # Flags, each with the value that follows it when that is a number or a path ("--keep 3").
        # Said as its arguments ("args: --bucket nightly --no-verify", "passing --compress and --level 9"): all
        # that follows, to the end of the clause, word by word.
        listed = _ARGS_LISTED.search(text)
        if listed and any(w.startswith(("argument", "arg")) for w in field_words(param, spec)):
            return [w for w in listed.group(1).split() if w.lower() not in ("and", "plus")]
        flags = r"((?:-{1,2}[\w\-=./]+(?:\s+(?!-)(?:[\w=.]*\d[\w=./]*|[./~][\w=./\-]*)(?![\w\-]))?\s*)+)"
        m = re.search(r"\b(?:with|args?|arguments?)\s+" + flags, text)
        if m is None and any(w.startswith(("argument", "arg")) for w in field_words(param, spec)):
            # "run x.sh --dry-run", "x.sh --keep 4 please": long flags said anywhere are its arguments.
            m = re.search(r"(?<![\w\-])(?=--[a-z])" + flags, text)
        return m.group(1).split() if m else None
    if typ == "object" and spec.get("additionalProperties", True) is not False:
        # "setting listen_port=9090", "with listen_port 8088": named values, each a key and what it is set to.
        pairs = re.findall(r"(?<![\w\-/.])([A-Za-z_]\w*)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s,;]+)", text)
        pairs += [p for p in re.findall(r"(?<![\w\-/.])([a-z]+_[a-z0-9_]+)\s+(?:to\s+|of\s+|at\s+)?(\d[\w.]*)", text)
                  if p[0] not in {k for k, _ in pairs}]
        return {k: _scalar(v) for k, v in pairs} or None
    if typ == "any":
        # A value of any JSON type ("publish 'deploy done' on /team"): only text said as a value is one.
        q = quoted(text)
        if q and not reading.quote_taken:
            reading.quote_taken = True
            return q.strip()
        return None
    if typ != "string":
        return None
    pattern = pattern_of(spec)
    words = field_words(param, spec)
    if (pattern and specific_pattern(pattern)) or "id" in words:
        for m_tok in re.finditer(r"[\w][\w.\-]*", text):
            tok = m_tok.group(0)
            if re.search(r"\b(?:before|after|prior\s+to|than|since|except|not)\s+$", text[:m_tok.start()], re.I):
                continue  # "the backup before b-41": a point of reference, not the one meant
            if pattern and specific_pattern(pattern):
                if re.fullmatch(pattern, tok):
                    return tok
            elif re.search(r"\d", tok) and len(tok) >= 6 and re.fullmatch(r"[A-Za-z0-9][\w.\-]*", tok):
                return tok
        return None
    if "path" in words or re.search(r"e\.g\.\s*/", str(spec.get("description", ""))) or spec.get("default") == "/":
        relative = re.search(r"e\.g\.\s*[a-z][\w.\-]*/", str(spec.get("description", "")))
        # A path the description shows relative to a label ("e.g. demo/notes.txt") is never an absolute one ("/chat"
        # is a topic, not a file).
        m = None if relative else re.search(r"(?<![\w.])(/[\w.\-/]*)", text)
        if not m and relative:
            # A path the description shows relative to a folder label ("demo/notes.txt").
            m = re.search(r"(?<![\w./\-])([A-Za-z0-9_][\w.\-]*/[\w.\-/]*)", text)
        if not m:
            # "notes.md from the docs folder": a file in a folder named by its label.
            named_in = re.search(r"(?<![\w./\-])([\w\-]+\.[a-z0-9]{1,5})\s+(?:in|from|under|inside)\s+(?:the\s+)?"
                                 r"([a-z0-9][\w\-]*)\s+(?:folder|root|directory|dir)\b", text, re.I) \
                if re.search(r"e\.g\.\s*[a-z][\w.\-]*/", str(spec.get("description", ""))) else None
            return f"{named_in.group(2)}/{named_in.group(1)}" if named_in else None
        path = m.group(1).rstrip(".,?!")
        path = path if len(path) == 1 else path.rstrip("/")
        inside = re.search(rf"(?<![\w./\-])([\w\-]+\.[a-z0-9]{{1,5}})\s+(?:under|in|inside|within|from)\s+"
                           rf"(?:the\s+)?(?:folder\s+)?{re.escape(path)}(?![\w.\-/])", text, re.I)
        if inside and "/" not in inside.group(1):
            # "a.txt under docs/old" is the file docs/old/a.txt, not the folder.
            return f"{path}/{inside.group(1)}"
        return path
    if "why" in words:
        # A text that says why ("a message saying why"): the reason the request gives, "because ..." or a closing
        # statement after a comma ("silence alert 25 for three hours, we're migrating").
        because = re.search(r"\b(?:because(?:\s+of)?|due\s+to|on\s+account\s+of)\s+(\S.*)$", text, re.I) \
            or re.search(r"(?:,|\band)\s*((?:we|we're|we\s+are|it's|it\s+is|there's|there\s+is|they're|they\s+are"
                         r"|i'm|i\s+am)\s+\S.*)$", text, re.I)
        if because:
            return because.group(1).strip(" .!?")
    if "send" in words or "message" in words:
        message = extract_message(text)
        if message is not None and not required and not quoted(text) and not _says_more(message, known_words):
            return None  # "alert 11: 45 minutes of silence" says how long, not why
        if message is not None:
            reading.quote_taken = True
        return message
    # Free text: a quoted phrase; "for X" / "containing X"; else, when required, the one word left unexplained.
    q = quoted(text)
    if q and not reading.quote_taken:
        reading.quote_taken = True
        return q.strip()
    if "intent" in words and reading.intent_names:
        # "the records of stop_target": a param that names an intent takes an intent's name said.
        intent_said = next((t for t in raw_tokens(text) if t in reading.intent_names), None)
        if intent_said:
            return intent_said
    # "limited to web1" for a ``limit`` field, "by user carol" for a ``user`` one: its name said, then the value.
    head = re.escape(param.lower().split("_")[0])
    if free_text(spec) and len(param) >= 3 \
            and not re.search(r"\b(?:url|urls|uri|address|one\s+of)\b", str(spec.get("description", "")).lower()):
        # A free text ("with a note: investigating redis latency"): all that follows its name and a colon.
        told = re.search(rf"\b{head}\w*\s*(?::|=|\s+saying)\s*(\S.*)$", text, re.I)
        if told:
            return told.group(1).strip(" .!?'\"")
    if int(non_null(spec).get("maxLength") or 0) >= 1000:
        return None  # a body of text ("the new content") is said in quotes or after its name, never one word guessed
    named = re.search(rf"\b{head}\w*\s*(?:\s+to\s+|=\s*|:\s*)([a-z0-9][\w.:!*\-]*)"
                      rf"|\b(?:for|by|of|from)\s+{head}\s+([a-z0-9][\w.:!*\-]*)", low) \
        if not required and len(param) >= 4 else None
    if named is None and not required and param.lower() in _PERSON_PARAMS:
        named = re.search(r"\bby\s+([a-z0-9][\w.@\-]*)", low)  # "entries by carol": who, for a param of a person
    if named and named.lastindex and named.lastindex > 1 and named.group(1) is None:
        named = re.search(r"(.+)", named.group(2))  # "by user carol": the name after its param's name
    if named and named.group(1) not in STOPWORDS and stem(named.group(1)) not in known_words \
            and named.group(1) not in _NOBODY_IN_PARTICULAR:
        return named.group(1)
    if required and len(param) >= 4:
        # "what's sitting in the demo root?": a word said right before the param's own name is its value.
        kind_said = re.search(rf"\b(?:the|a|an|our|my)\s+([a-z0-9][\w.\-]*)\s+{head}s?\b", low)
        if kind_said and kind_said.group(1) not in STOPWORDS and stem(kind_said.group(1)) not in known_words:
            return kind_said.group(1)
    if "host" in words and not required:
        # "on db3 only", "only against db2", "to db1 only": where the run is limited to, for a field of hosts; so is
        # a host said the way hosts are named ("against web2", "on db-3") or a pattern of them ("hosts matching web*").
        only = re.search(r"\b(?:on|against|to)\s+([a-z0-9][\w.:!*\-]*)\s+only\b"
                         r"|\bonly\s+(?:on|against|to)\s+([a-z0-9][\w.:!*\-]*)"
                         r"|\b(?:on|against)\s+([a-z][\w.:!*\-]*\d[\w.:!*\-]*|[a-z][\w\-]*\*[\w.:!*\-]*)(?![\w./])"
                         r"|\bhosts?\s+(?:matching|like|named|called)\s+([a-z0-9*][\w.:!*\-]*)"
                         # "on the db1 host", "on host db1": the host said with its kind.
                         r"|\b(?:on|against|to)\s+(?:the\s+)?([a-z0-9][\w.:!*\-]*)\s+(?:host|machine|server|box)\b"
                         r"|\b(?:on|against|to)\s+(?:the\s+)?(?:host|machine|server|box)\s+([a-z0-9][\w.:!*\-]*)", low)
        host = next((g for g in only.groups() if g), None) if only else None
        if host and host not in STOPWORDS and stem(host) not in known_words:
            return host
    # ("with listen_port 8088" sets a value and names no text.)
    m = re.search(r"\b(?:for(?!\s+(?:real|now|good|sure|once|today|tonight|later)\b)|containing|matching|with"
                  r"|mentioning|mentions?|that\s+mentions?|contains?)\s+"
                  r"([a-z0-9_.:\-]+)(?![\w.:\-])(?!\s*=|\s+\d)", low)
    if m and m.group(1) in reading.intent_names and "intent" not in words:
        m = None  # "audit entries for restart_target": an intent's name is the value of a param naming intents only
    if m and m.group(1) not in STOPWORDS and stem(m.group(1)) not in known_words:
        if re.fullmatch(r"\d+s", m.group(1)):
            return m.group(1)[:-1]  # "for 404s": lines with 404
        return stem(m.group(1)) if "text" in words else m.group(1)
    if not required:
        return None
    # "503 responses", "the 404 errors": an HTTP status said as what is counted is the text to look for; so is a
    # log level said as one ("lines at WARN level", "error-level entries").
    code_or_level = _CODE_OR_LEVEL.search(low)
    if code_or_level and (code_or_level.group(1) or code_or_level.group(2) not in STOPWORDS | _NO_LEVEL):
        return code_or_level.group(1) or code_or_level.group(2)
    seg = reading.segment
    first = next((i for i, t in enumerate(seg.raw) if t not in STOPWORDS), -1)
    # The words of a phrase that means something ("what happened" is the audit trail) are not a value.
    phrased = {w for m in _PHRASE_RE.finditer(f" {low} ") for w in m.group(1).split()}
    order = list(range(len(seg.raw)))
    # What a quantifier speaks of ("any 429s", "some timeouts") is what to look for, before any other word.
    order.sort(key=lambda i: 0 if (i > 0 and seg.raw[i - 1] in ("any", "some", "no")) or re.fullmatch(
        r"\d+s", seg.raw[i]) else 1)  # ... and so is a code said in the plural ("count of 500s")
    if set(words) & _CONTAINER_WORDS:
        # A folder or root is said after "in" ("what is left in docs"): look there first.
        order.sort(key=lambda i: 0 if i > 0 and seg.raw[i - 1] in ("in", "inside", "under", "within") else 1)
    for i in order:
        tok = seg.raw[i]
        if i in reading.busy or tok in STOPWORDS or tok in PRONOUNS or tok in _QUANTIFIERS \
                or not re.fullmatch(r"[a-z0-9][\w.\-]{1,63}", tok):
            continue
        if stem(tok) in known_words or canonical(tok) in known_words or tok in _UNITS or tok in _WORD_NUMBERS:
            continue
        if re.fullmatch(r"\d+(\.\d+)?", tok):
            continue  # a count or a window, not a text
        if tok in phrased or tok in RECENCY:
            continue  # "what's new in the app log" asks for its latest lines, not for lines with "new"
        if i == first and i + 1 < len(seg.raw) and seg.raw[i + 1] in _DETERMINERS:
            continue  # the verb of "open the log", not what to look for
        if "text" not in words and (canonical(tok) in reading.vocabulary or stem(tok) in reading.vocabulary
                                    or any(p.fullmatch(tok) for p in reading.id_patterns)):
            continue  # a name is not a word of what to do ("check disk and memory"), nor another thing's id
        before_noun = i + 1 < len(seg.raw) and stem(seg.raw[i + 1]) in {stem(w) for w in words} - {"name"} \
            and seg.raw[i + 1] not in STOPWORDS and "text" not in words
        if tok.isalpha() and stem(tok) not in reading.vocabulary and near_miss_any(stem(tok), reading.vocabulary) \
                and not before_noun:
            # a typo of a word of what to do ("shwo me the app log"), unless said as the thing the param names
            # ("httpd processes": a process's name)
            continue
        if i == first and len(tok) == 3 and tok.isalpha() and tok not in reading.vocabulary and any(
                len(v) == 4 and letter_missing(tok, v) for v in reading.vocabulary):
            continue  # ... a short one said first is the verb ("lok at ...")
        after = seg.raw[i + 1] if i + 1 < len(seg.raw) else ""
        if i > 0 and seg.raw[i - 1] in ("the", "our", "my", "your") and stem(after) not in words \
                and not (set(words) & _CONTAINER_WORDS and stem(after) in _CONTAINER_WORDS):  # "the docs folder"
            continue  # "the site" refers to a thing by a common noun; a name is said bare ("is mysqld up")
        if tok in _SAYING:
            continue  # "did syslog record oom", "what did X say": the verb of saying, not what is said
        if tok in _COUNT_CUES or tok in _ORDER_WORDS:
            continue  # "first 10 lines of syslog": which lines, never a text to look for
        if tok in _RECORD_WORDS:
            continue  # "the newest 120 entries of the access log": what a log is made of, not a text in it
        if tok.isalpha() and len(tok) > 4 and any(_same_root(tok, v) and stem(tok) not in (v, stem(v))
                                                  for v in reading.vocabulary if v[:3] == tok[:3]):
            continue  # "which alerts fired": another form of a word of the node's declarations ("firing")
        if tok.isalpha() and i == len(seg.raw) - 1 - (seg.raw[-1] == "?") and i > 0 \
                and seg.raw[i - 1] not in _SAYING and re.search(r"\b(?:does|do|did|will|can|should)\s+\S+",
                                                                " ".join(seg.raw[:i])):
            # "which labels does the file manager expose?": the last word after "does X" is its verb (but "does
            # anything log panic?": after a verb of saying, it is what is said)
            continue
        if re.fullmatch(r"\d+s", tok):
            return tok[:-1]  # "502s" are lines with 502
        if set(words) & _CONTAINER_WORDS and re.search(r"\.[a-z0-9]{1,5}$", tok):
            continue  # a file's name is not the folder it is in
        if "text" not in words:
            # A name is said whole: "node-agent" was split into its words for matching, not into two names.
            whole = next((w for w in raw_tokens(text) if "-" in w and tok in w.split("-")
                          and re.fullmatch(r"[a-z0-9][\w.\-]{1,63}", w)), None)
            if whole:
                return whole
        return stem(tok) if "text" in words else tok
    return None


#: Words after "by" that name nobody ("stopped by someone", "restarted by mistake").
_NOBODY_IN_PARTICULAR = {"someone", "somebody", "anyone", "anybody", "nobody", "everyone", "everybody", "whoever",
                         "mistake", "accident"}
#: Names of params that are a person ("entries by carol" is the user carol).
_PERSON_PARAMS = {"user", "username", "owner", "author", "actor", "operator", "requester", "who"}
#: Synonyms that stand for a word and its opposite alike (see ``catalog.SYNONYMS``: "failed" and "succeeded" are
#: both a "result"): matching a listed value through one of them would pick a side the request did not say.
_MERGED_OPPOSITES = {"result", "status"}
#: Words of order or position: which ones, never what.
_ORDER_WORDS = {"first", "last", "top", "bottom", "oldest", "newest", "latest", "earliest", "previous", "next"}
#: Verbs of saying or writing: the word after one is what is said ("log panic", "print done").
_SAYING = {"log", "logs", "logged", "record", "recorded", "say", "said", "print", "printed", "contain", "contains",
           "mention", "mentions", "report", "reported", "show", "write", "wrote", "emit", "emitted", "output", "throw",
           "threw", "return", "returned"}
#: Words of a param that names where things are (a folder, a root label).
_CONTAINER_WORDS = {"folder", "root", "directory", "dir"}
#: Words of how recent, never a text to look for.
RECENCY = {"new", "newer", "newest", "latest", "recent", "recently", "lately", "fresh", "today", "yesterday", "now"}
#: Words that start a noun phrase: the word before one is its verb.
_DETERMINERS = {"the", "a", "an", "my", "our", "your", "all", "some", "every", "this", "that", "these", "those"}
#: Words that say how many, never what ("show me all logs").
_QUANTIFIERS = {"all", "any", "every", "each", "some", "none", "both", "anything", "everything"}
#: Words before a number that make it a count ("top 5", "last 20", "tail -n 100").
_COUNT_CUES = {"top", "last", "first", "latest", "newest", "recent", "-n", "tail", "limit", "show", "list", "give",
               "max", "maximum", "most", "just", "only"}
#: Nouns that count whatever a list holds ("25 entries", "the last 10 records").
_COUNT_NOUNS = {"entries", "entry", "items", "rows", "records", "results", "ones", "hits", "matches"}
#: Two words that say a count's bound just before it ("cap at 4", "up to 10").
_BOUND_CUES = {("cap", "at"), ("capped", "at"), ("up", "to"), ("limit", "to"), ("limited", "to")}


def _scalar(text: str) -> Any:
    """A value said in a request as JSON would hold it: a number, true/false, else the text (unquoted)."""
    text = text.strip("\"'")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def _enum_by_description(spec: dict[str, Any], values: list[Any], said: set[str]) -> list[Any]:
    """The listed values whose own words in the description ("static: reusable until it expires; dynamic:
    works once") the request says, and no other value's: "a link that works once" is ``dynamic``."""
    desc = str(spec.get("description", "")).lower()
    words: dict[Any, set[str]] = {}
    for value in values:
        if not isinstance(value, str):
            continue
        m = re.search(rf"(?<![\w-]){re.escape(value.lower())}\s*:\s*([^;]+)", desc)
        if m:
            words[value] = {stem(w) for w in re.findall(r"[a-z]+", m.group(1)) if w not in STOPWORDS and len(w) > 2}
    own = {v: w - set().union(*(o for u, o in words.items() if u != v)) for v, w in words.items()}
    return [v for v, w in own.items() if w & said]


#: Words after a number from 100 to 599 that make it an HTTP status ("503 responses"), stemmed as quantities are.
_CODE_NOUNS = {"response", "error", "status", "code", "hit", "request", "reply", "responses", "errors", "codes",
               "hits", "requests", "replies", "statuses"}
#: An HTTP status said as what is counted ("503 responses"), or a log level ("at WARN level", "error-level").
_CODE_OR_LEVEL = re.compile(r"(?<![\w.])([1-5]\d\d)\s+(?:responses?|errors?|status(?:es)?|codes?|hits|requests"
                            r"|replies)\b|\b(?:at\s+)?([a-z]{3,8})[\s-]+level\b(?!\s+(?:of|is|was))")
#: Words before "level" that name no log level ("a high level", "the top level").
_NO_LEVEL = {"top", "high", "low", "log", "what", "same", "which"}
#: Words after a count that rank what is counted ("the 11 worst", "the 5 most"): how many to show.
_RANK_WORDS = {"most", "least", "worst", "best"}
#: Words of a field that counts an age ("older_than_days").
_AGE_WORDS = {"older", "old", "age", "aged"}
#: A time said as how long or when ("for 3 days", "in 2 days", "a day from now"), which is no age.
_HOW_LONG_BEFORE = re.compile(r"\b(?:for|in|within|during|lasting|next|coming|following)\s+$")
_HOW_LONG_AFTER = re.compile(r"\s+(?:from\s+now|later|long)\b")


def _read_number(param: str, spec: dict[str, Any], reading: Reading, typ: str, known_words: set[str]) -> Any:
    unit = field_unit(param, spec)
    words = {stem(w) for w in field_words(param, spec)}
    interval = is_interval(param, spec)
    # "(0 lifts it)": a value the description gives an undoing verb, said as that verb or as "un" + a word of the
    # intent ("unmute alert 3", "lift the silence on alert 3").
    undo = re.search(r"\((\d+)\s+(lifts?|removes?|clears?|cancels?|disables?|undoes)\b",
                     str(spec.get("description", "")))
    if undo:
        verb = undo.group(2).rstrip("s")
        said = raw_tokens(reading.text)
        if any(stem(t).startswith(verb[:4]) for t in said) or any(
                t.startswith("un") and len(t) > 4 and canonical(t[2:]) in known_words for t in said):
            return int(undo.group(1)) if typ == "integer" else float(undo.group(1))
    for i, q in enumerate(reading.numbers):
        if i in reading.used or (unit is not None and q.every != interval):
            continue  # "every 6 hours" is how often, never how old or how far back
        if unit is not None:
            if q.minutes is None:
                continue
            if words & _AGE_WORDS and (_HOW_LONG_BEFORE.search(reading.text.lower()[:q.start])
                                       or _HOW_LONG_AFTER.match(reading.text.lower()[q.end:])):
                continue  # "back up orders for 3 days", "in 2 days": how long or when, never how old
            value = q.minutes / unit
        else:
            if q.minutes is not None:
                continue
            # A count: "20 lines" for a lines field, "top 5", "the 3 newest", "20 processes".
            # ("show a dozen ...": the word before the article.)
            before = [w for w in reading.text.lower()[:q.start].split() if w not in ("a", "an")][-1:] or [""]
            # An id: "alert 7", "#7", "number 7": the number right after a word of the id field itself.
            # ... or the number said right after the request's verb, its first word ("acknowledge 12", "mute 9").
            head = reading.text.lower()[:q.start].split()
            named_id = "id" in words and (before[0] in ("#", "no", "no.", "number")
                                          or stem(before[0].lstrip("#")) in words - {"id"}
                                          or (len(head) == 1 and head[0].isalpha() and q.noun in ("", "and", "or")))
            # ... and never a count: "the last 5 alerts" is how many, not alert 5.
            counted = named_id if "id" in words else (
                q.noun in words or q.noun.endswith("est") or q.noun in _RANK_WORDS or before[0] in _COUNT_CUES
                or tuple(head[-2:]) in _BOUND_CUES or q.noun in known_words or q.noun in _COUNT_NOUNS)
            if not counted or (q.noun in _CODE_NOUNS and q.value.is_integer() and 100 <= q.value <= 599):
                continue  # ("show 502 responses": an HTTP status to look for, never how many)
            value = q.value
        if typ == "integer" and value > 0 and round(value) == 0:
            continue  # "6 hours" for a field of days is no 0 days (pruning "older than 0 days" is everything)
        reading.used.add(i)
        if typ == "integer":
            return round(value)
        return value
    return None


#: A request that starts with the name of what it is about and a colon ("db1: the last 6 snapshots").
_LABEL = re.compile(r"^\s*(?:[a-z]+\s+#?\d+|[\w.\-/]+)\s*:\s+", re.I)


def extract_message(text: str) -> str | None:
    """Text to send: a quoted phrase, or what follows ``saying`` / ``that`` / ``:`` / ``about``."""
    q = quoted(text)
    if q:
        return q.strip()
    m = re.search(r"(?:\bsaying\b|\bthat\b|:|\babout\b)\s*(.+)$", text, re.IGNORECASE) or _TOLD.search(text)
    if m and len(m.group(1).strip()) > 2:
        return m.group(1).strip().rstrip(".")
    return None


def _says_more(said: str, known_words: set[str]) -> bool:
    """Whether ``said`` has a word beyond the request's own (the intent's words, amounts and their units,
    pronouns): "45 minutes of silence" has none, so it is no message of its own."""
    for tok in raw_tokens(said):
        if tok in STOPWORDS or tok in PRONOUNS or tok in TIME_UNITS or tok in _WORD_NUMBERS or tok.isdigit():
            continue
        if stem(tok) in known_words or canonical(tok) in known_words or canonical(stem(tok)) in known_words:
            continue
        return True
    return False


#: "tell the team it's flapping", "let ops know we're on it": a clause told to someone, after who hears it.
_TOLD = re.compile(r"\b(?:tell|inform|notify|ping|page|warn|let)\s+(?:the\s+|our\s+|my\s+)?[\w@.\-]+"
                   r"(?:\s+(?:team|chat|channel|group|room|people|folks))?(?:\s+know)?\s+"
                   r"((?:it|it's|its|we|we're|they|they're|there's|everything|i|i've|i'm)\b.{3,})$", re.IGNORECASE)


def strip_message(text: str, names: set[str] | frozenset[str] = frozenset()) -> str:
    """The request without a quoted or ``saying ...`` body, for retrieval ("tell the team that nginx restarted").

    ``names``: the configured names (lower case); one said first with a colon is what the request is about
    ("db1: snapshots every 2 hours"), and the colon starts no message; so is a path."""
    out = _QUOTED.sub(" ", text)
    label = _LABEL.match(out)
    said = label.group(0).strip(" :").lower() if label else ""
    # ... and so is a path said first ("/home: how full?").
    # ... and so is a thing and its number ("alert 44: details").
    if label and (said in names or said.startswith("/") or re.fullmatch(r"[a-z]+\s+#?\d+", said)):
        return label.group(0) + strip_message(out[label.end():])
    return re.sub(r"(?:\bsaying\b|\bthat\b(?=\s+\w+\s+(?:is|was|has|are|will)\b)|:|\babout\b)\s*(.+)$", " ", out,
                  flags=re.IGNORECASE)
