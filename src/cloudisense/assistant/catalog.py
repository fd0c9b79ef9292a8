"""The assistant's tool catalogue, built from the node's intent registry.

Every intent the caller's role may run becomes a tool (``Intent.describe()``:
name, description, risk, examples, params JSON-schema, entity kinds). A request
only ever sees the few tools relevant to it (:meth:`Catalog.search`, BM25 over
name + description + examples), so a prompt stays bounded however many intents
the node has. The same descriptions export to OpenAI, Anthropic and MCP tool
schemas.

Text normalisation (:func:`normalize`) is shared with the offline planner:
lower case, light stemming, phrase and word synonyms ("bounce" is "restart",
"alive" is "status"; but not one that would merge two things the node tells
apart, see :func:`distinct_words`) and typo tolerance against the catalogue's
vocabulary ("restrat" is "restart").
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from cloudisense.assistant.plan import PlanningContext

from cloudisense.core.intents import IntentRegistry, Risk
from cloudisense.core.roles import Role, may_run, refusal

T = TypeVar("T")

#: Multi-word phrases rewritten before tokenising (longest first); they carry meaning single words lose.
PHRASES: dict[str, str] = {
    "kick off": "start", "fire off": "start", "fire up": "start", "bring up": "start", "spin up": "start",
    "boot up": "start", "spin down": "stop", "wind down": "stop", "pull up": "show", "bring back": "start",
    "start up": "start", "turn on": "start", "shut down": "stop", "bring down": "stop", "shutdown": "stop",
    "take down": "stop", "turn off": "stop", "power up": "start", "power on": "start", "switch on": "start",
    "power down": "stop", "power off": "stop", "switch off": "stop", "shut off": "stop",
    "power-cycle": "restart", "power cycle": "restart", "power-cycled": "restart", "power cycled": "restart",
    "power it back on": "start it", "power them back on": "start them", "power it on": "start it",
    "power them on": "start them", "a fresh start": "a restart", "fresh start": "restart",
    "tell me when": "status", "let me know when": "status",
    "override": "force", "overriding": "force",
    "hang on to": "keep", "hang onto": "keep", "hold on to": "keep", "hold onto": "keep",
    "one-time": "once", "single-use": "once", "single use": "once", "one-off": "once",
    "roll out": "run", "preview": "dryrun", "simulate": "dryrun", "simulated": "dryrun", "simulating": "dryrun",
    "simulation": "dryrun",
    "is it back": "status",
    "dry run": "dryrun", "dry-run": "dryrun", "check mode": "dryrun", "--check": "dryrun",
    # A rehearsal that changes nothing is a dry run too.
    "trial run": "dryrun", "trial mode": "dryrun", "test run": "dryrun", "test mode": "dryrun",
    "no changes": "dryrun", "without changing anything": "dryrun", "change nothing": "dryrun",
    "walk me through": "show", "walk through": "show",
    "rehearse": "dryrun", "rehearsal": "dryrun", "practice run": "dryrun", "mock run": "dryrun", "what-if": "dryrun",
    # Asking whether it would work is asking for a try that changes nothing ("make sure renewal would work").
    "would work": "dryrun", "would succeed": "dryrun", "would go through": "dryrun",
    # Chat shorthand for acknowledging, and a state that cleared is resolved.
    "un-acked": "unacknowledged", "unacked": "unacknowledged", "un-acknowledged": "unacknowledged",
    "acked": "acknowledged", "ack'd": "acknowledged", "cleared": "resolved", "has cleared": "resolved",
    "have cleared": "resolved",
    # Filling up is getting full.
    "filling up": "full", "fills up": "full", "fill up": "full", "filled up": "full",
    # Going past the check that would stop it is forcing it.
    "skip the safety check": "force", "skip the safety checks": "force", "skip safety checks": "force",
    "bypass the safety check": "force", "ignore the safety check": "force", "no matter what": "force",
    # What runs out expires; running out *of* something is a question of what is free ("running out of disk space").
    "run out": "expire", "runs out": "expire", "running out": "expire", "ran out": "expire",
    "run out of": "free", "runs out of": "free", "running out of": "free", "ran out of": "free",
    # How big a thing is, is its size.
    "how large": "size", "how big": "size", "how much space": "size", "fill level": "usage",
    "what is eating": "top", "whats eating": "top", "what's eating": "top", "eating": "top",
    "who ran": "audit", "who did": "audit", "what happened": "audit", "tail -n": "tail",
    "reaction rules": "rules", "reaction rule": "rule", "space left": "disk", "free space": "disk", "back up": "backup",
    "back it up": "backup it", "back them up": "backup them",
    # "get it back up", "bring them back up": up again, not a backup.
    "it back up": "it up", "them back up": "them up",
    "backed up": "backup", "backing up": "backup", "get rid of": "delete",
    # Putting a thing back as it was is restoring it.
    "roll back": "restore", "rolled back": "restore", "rolling back": "restore",
    "how old": "age", "how long ago": "age",
    # "how long has it been up": for how long it has run.
    "been up": "uptime", "been running": "uptime", "been online": "uptime",
    # Verbs that say to do *something* about a thing, but not what.
    "take care of": "handle", "deal with": "handle", "sort out": "handle", "look after": "handle",
    "do something about": "handle", "help me with": "handle",
    # Wishes said politely are requests: "i'd like to see X" is "show X", "i want to restart X" is "restart X".
    "i'd like to see": "show", "i would like to see": "show", "i want to see": "show", "i'd like to": "please",
    "i would like to": "please", "i want to": "please", "i'd like you to": "please", "i want you to": "please",
    # ... also as tokenised ("i'd" loses its "'d"):
    "i like to see": "show", "i like to": "please", "i like you to": "please",
    "give me": "show", "get me": "show", "gimme": "show", "let me see": "show", "let me look at": "show",
    "look at": "check", "have a look at": "check", "take a look at": "check",
    # How often: one word for every way of saying a frequency ("once a day" is "every day").
    "once a": "every", "once an": "every", "twice a": "every", "once per": "every", "once every": "every",
    "daily": "every day", "hourly": "every hour", "nightly": "every night", "weekly": "every week",
}

#: Single-word synonyms, applied after stemming.
SYNONYMS: dict[str, str] = {
    # Keeping something quiet silences it; simulating a run is a dry run.
    "quiet": "silence", "hush": "silence", "shush": "silence",
    # Saying a text on a channel for all its listeners is publishing it.
    "broadcast": "publish",
    "bounce": "restart", "kick": "restart", "reboot": "restart", "recycle": "restart", "cycle": "restart",
    "reload": "reload", "snapshot": "backup", "rank": "top", "open": "show", "partition": "disk", "volume": "disk",
    "up": "status", "alive": "status", "running": "status", "healthy": "status", "health": "status",
    "back": "status", "down": "status", "ok": "status", "state": "status", "working": "status",
    "kill": "stop", "halt": "stop", "terminate": "stop", "present": "status",
    # Starting again is restarting; bringing back to life is starting.
    "relaunch": "restart", "revive": "start", "resurrect": "start",
    # Trying again is running again.
    "retry": "run", "rerun": "run", "redo": "run",
    # A log's entries are its lines; a thing's history is the list of what it had.
    "entry": "line", "history": "list",
    # A job running on the box is a process; so is each running instance of a program.
    "job": "process", "instance": "process", "instances": "process",
    "inspect": "show", "examine": "show", "dump": "show",
    "enumerate": "list", "rundown": "overview", "recap": "summary", "inventory": "list", "compare": "show",
    "catalogue": "list", "catalog": "list", "processor": "cpu",
    "mute": "silence", "unmute": "unsilence",
    # Saving something is writing it ("store" is not: "the kv store" is a thing).
    "save": "write", "put": "write", "overwrite": "write",
    # Removing a thing for good is deleting it; putting it back as it was restores it.
    "wipe": "delete", "erase": "delete", "scrap": "delete", "trash": "delete", "nuke": "delete", "discard": "delete",
    "revert": "restore", "rollback": "restore", "recover": "restore", "rewind": "restore",
    # What was spent of something is how much of it was used.
    "spent": "usage", "spend": "usage", "consumed": "usage", "consume": "usage", "burned": "usage", "burnt": "usage",
    "ram": "memory", "mem": "memory", "proc": "process", "procs": "process", "ps": "process",
    # What uses up a resource is a process ("the largest consumers of RAM").
    "consumer": "process", "consumers": "process",
    # Whether something worked is its result, good or bad.
    "fail": "result", "failed": "result", "failing": "result", "failure": "result", "succeed": "result",
    "succeeded": "result", "success": "result", "successful": "result", "outcome": "result",
    "use": "usage", "uses": "usage", "using": "usage", "used": "usage",
    "most": "top", "hogging": "top", "hog": "top", "hogs": "top",
    # Irregular past tenses ("who ran", "what went wrong") and the words for a result.
    "ran": "run", "went": "go", "began": "start",
    # Who did something: the people of the audit trail.
    "people": "who", "someone": "who", "somebody": "who", "anyone": "who", "anybody": "who", "whoever": "who",
    "heaviest": "biggest", "largest": "biggest", "hungriest": "biggest",
    "space": "disk", "room": "disk", "storage": "disk", "filesystem": "disk", "df": "disk", "fs": "disk",
    "ls": "list", "dir": "list", "percentage": "percent",
    "check": "show", "view": "show", "display": "show", "see": "show", "print": "show", "read": "show", "cat": "show",
    "tail": "tail", "grep": "search", "find": "search", "look": "search", "scan": "search",
    "notify": "notify", "notification": "notify", "notifications": "notify", "ping": "notify", "alert": "notify",
    "inform": "notify", "message": "notify", "page": "notify",
    "webhook": "notify", "hook": "notify", "team": "notify", "channel": "notify",
    "execute": "run", "exec": "run", "launch": "run", "trigger": "run", "apply": "run",
    "provision": "playbook", "role": "playbook", "ansible": "playbook", "playbooks": "playbook",
    "service": "service", "services": "service", "daemon": "service", "target": "service", "targets": "service",
    "approval": "approval", "approve": "approval", "waiting": "pending",
    "loaded": "configured", "enabled": "configured", "installed": "configured", "available": "configured",
    "cpu": "cpu", "load": "load", "stats": "stats", "statistic": "stats", "usage": "usage",
    "db": "database", "databases": "database", "cert": "certificate", "certs": "certificate", "logfile": "log",
}

#: Words that carry no meaning for retrieval.
STOPWORDS = frozenset(
    "a an the this that these those my our your me us i you we it its is are was were be been am do does did "
    "of on in at to for from by with and or please pls plz can could would will should shall just "
    "some any all what whats what's which how there here right now currently ? ! me show us "
    "about whether when where who why than into onto also very much many more most only still yet being "
    "have has had they them their then so if as both either else though although even "
    # Words of degree say how much, never what ("is /mnt nearly full?").
    "nearly almost roughly approximately quite fairly rather somewhat pretty "
    # What is left of "isn't", "doesn't" once its "'t" is cut off (raw_tokens): a negation, never a name.
    "isn aren wasn weren doesn didn hasn haven hadn won wouldn shouldn couldn mustn needn ain".split()
) - {"show", "all", "any", "who", "most"}

_TOKEN = re.compile(r"[a-z0-9][a-z0-9_.\-/]*|[?]")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A deliberately light English stemmer: plurals and a few suffixes."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses") or word.endswith("shes") or word.endswith("ches") or word.endswith("xes"):
        return word[:-2]
    if word.endswith("ses") and word[:-2].endswith("ss"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "os")):
        return word[:-1]
    return word


#: (Never inside a path or a file name: "demo/reports/weekly.csv" says no "every week".)
_PHRASE_RE = re.compile(r"(?<![\w\-/.])(" + "|".join(re.escape(p) for p in sorted(PHRASES, key=len, reverse=True))
                        + r")(?![\w\-/]|\.\w)")


#: "mark alert 12 as acknowledged" says the verb last: it is "acknowledged alert 12".
_MARK_AS = re.compile(r"(?<![\w-])(?:mark|flag)\s+(.{1,60}?)\s+as\s+([a-z]+)(?![\w-])")


#: A verb and its particle said around a short object ("shut the web app down", "turn it off"): the
#: two-word verbs of :data:`PHRASES` whose second word is a particle ("switch it back on" is "switch on it").
_PARTICLE_VERBS = sorted({p.split()[0] for p in PHRASES if len(p.split()) == 2
                          and p.split()[1] in ("up", "down", "off", "on") and p.split()[0] != "been"})
_SPLIT_VERB = re.compile(
    r"(?<![\w-])(" + "|".join(map(re.escape, _PARTICLE_VERBS)) + r")"
    r"\s+((?:(?!back\b|up\b|down\b|off\b|on\b|and\b|then\b|if\b)[\w.\-]+\s+){1,4}?)(?:back\s+)?(up|down|off|on)(?![\w-])",
    re.I)


def _join_verb(m: re.Match[str]) -> str:
    """"shut the web app down" -> "shut down the web app" when "shut down" is a phrase."""
    verb = f"{m.group(1)} {m.group(3)}"
    last = f"{m.group(2).split()[-1]} {m.group(3)}".lower()
    # "start backing up users-db": the particle belongs to the word before it, a phrase of its own.
    return f"{verb} {m.group(2).strip()}" if verb.lower() in PHRASES and last not in PHRASES else m.group(0)


def join_split_verbs(text: str) -> str:
    """A request with each two-word verb said around its object put together ("turn the worker off" -> "turn off
    the worker"). Only for requests: an intent's example keeps its own first word as a verb ("take ...")."""
    return _SPLIT_VERB.sub(_join_verb, text)


def apply_phrases(text: str) -> str:
    """Lower-case ``text`` and rewrite the multi-word :data:`PHRASES` (longest first) and "mark X as Y"."""
    out = " " + text.lower().replace("\u2019", "'") + " "
    return spell_phrases(_MARK_AS.sub(lambda m: f"{m.group(2)} {m.group(1)}", out))


def spell_phrases(text: str) -> str:
    """``text`` (lower case, spaced at both ends) with each of :data:`PHRASES` in its one-word spelling."""
    return _PHRASE_RE.sub(lambda m: f" {PHRASES[m.group(1)]} ", text)


_CONTRACTION = re.compile(r"['’](s|re|ll|ve|d|t|m)\b")


def raw_tokens(text: str) -> list[str]:
    """Lower-case word tokens (keeps ``-``, ``.``, ``/`` inside words: ``nginx-error``, ``/var``)."""
    text = _CONTRACTION.sub("", text.lower())
    return [t.rstrip(".-") or t for t in _TOKEN.findall(text)]


def normalize(text: str, vocabulary: Iterable[str] = (), *, keep_stopwords: bool = False,
              distinct: frozenset[str] = frozenset()) -> list[str]:
    """Tokens for matching: phrases, stemming, synonyms, stopwords dropped, typos fixed against ``vocabulary``;
    a word of ``distinct`` means itself (see :func:`distinct_words`)."""
    vocab = vocabulary if isinstance(vocabulary, (set, frozenset, dict)) else set(vocabulary)
    out: list[str] = []
    for token in raw_tokens(apply_phrases(text)):
        if not keep_stopwords and (token in STOPWORDS or (vocab and token not in vocab and _stopword_typo(token))):
            continue
        out.append(canonical(token, vocab, distinct))
    return out


_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve dozen fifteen twenty thirty "
                          "forty fifty hundred".split())


@functools.lru_cache(maxsize=4096)
def _stopword_typo(token: str) -> bool:
    """``token`` is a stopword with two neighbouring letters after the first swapped ("teh", "adn")."""
    if len(token) < 3 or not token.isalpha() or token in _NUMBER_WORDS:
        return False  # ("three" is a number, not "there" misspelt)
    for word in STOPWORDS:
        if len(word) == len(token) and word != token and word[0] == token[0] and sorted(word) == sorted(token):
            diff = [i for i, (a, b) in enumerate(zip(word, token, strict=True)) if a != b]
            if len(diff) == 2 and diff[1] == diff[0] + 1:
                return True
    return False


def distinct_words(tools: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Synonyms that would merge two things this node tells apart, so they mean themselves here.

    "alert" is "notify" in general speech ("alert the team"), but on a node with ``list_alerts`` and
    ``simple_http_notify`` an alert and a notification are different things: a word that is a noun of
    one intent's name while its synonym is a word of another intent's name keeps its own meaning."""
    name_words = {stem(tok) for tool in tools for tok in str(tool["name"]).split("_")}
    return frozenset(word for word, synonym in SYNONYMS.items()
                     if stem(word) in name_words and synonym in name_words and synonym != stem(word))


def canonical(token: str, vocabulary: Any = frozenset(), distinct: frozenset[str] = frozenset()) -> str:
    """One token's normal form: synonym of its stem, else its closest vocabulary word when it looks like a typo."""
    if distinct and (token in distinct or stem(token) in distinct):
        return stem(token)
    if token in SYNONYMS:
        return SYNONYMS[token]
    base = stem(token)
    if base in SYNONYMS:
        return SYNONYMS[base]
    if not vocabulary or base in vocabulary or token in vocabulary or len(base) < 4 or not base.isalpha():
        return base
    # "stauts" is a typo of "status" as said, not of its stem; "renewing" is "renew" with an ending;
    # "backpus" a typo of "backups".
    if distinct:
        # A typo of a word that means itself here ("alrets" on a node with alerts) is that word, not its synonym.
        for said in dict.fromkeys((base, token)):
            fixed = _raw_correction(said, vocabulary)
            if fixed and (fixed in distinct or stem(fixed) in distinct):
                return stem(fixed)
    inflected = uninflect(base, vocabulary)
    return (correct(base, vocabulary) or (correct(token, vocabulary) if token != base else None)
            or (SYNONYMS.get(inflected, inflected) if inflected else None)
            or (correct(base[:-1], vocabulary) if base.endswith("s") and len(base) > 4 else None) or base)


def uninflect(word: str, vocabulary: Any) -> str | None:
    """The vocabulary word ``word`` is an inflection of ("acknowledged" -> "acknowledge", "renewing" ->
    "renew", "stopped" -> "stop"), when ``word`` itself is not in the vocabulary."""
    for end in ("fully", "ful", "ing", "ed", "es", "s", "d"):
        if not word.endswith(end) or len(word) - len(end) < 3:
            continue
        root = word[:-len(end)]
        for cand in (root, root + "e", root[:-1] if len(root) > 3 and root[-1] == root[-2] else ""):
            if cand and cand in vocabulary:
                return cand
    return None


def correct(word: str, vocabulary: Iterable[str]) -> str | None:
    """The vocabulary word ``word`` is a typo of: two neighbouring letters swapped, or one letter missing or extra.

    A different letter is not a typo here ("site" is not "size", "older" is not "order")."""
    from cloudisense.assistant.extract import near_miss

    if not isinstance(vocabulary, (set, frozenset, dict)):
        return _correct(word, vocabulary, near_miss)
    return _CORRECT_MEMO.get(word, vocabulary, lambda: _correct(word, vocabulary, near_miss))


class VocabularyMemo(Generic[T]):
    """Answers by (word, vocabulary object), for the catalogue vocabularies planning asks about again and again.

    A vocabulary is told apart by identity and size; each entry holds its vocabulary, so that object
    stays alive and its id can't be reused by another one while the entry exists.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._entries: dict[tuple[str, int, int], tuple[Any, T]] = {}

    def get(self, word: str, vocabulary: Any, compute: Callable[[], T]) -> T:
        """The remembered answer for ``word`` in ``vocabulary``, else ``compute()`` (then remembered)."""
        key = (word, id(vocabulary), len(vocabulary))
        hit = self._entries.get(key)
        if hit is not None and hit[0] is vocabulary:
            return hit[1]
        if len(self._entries) > self.limit:
            self._entries.clear()
        found = compute()
        self._entries[key] = (vocabulary, found)
        return found


_CORRECT_MEMO: VocabularyMemo[str | None] = VocabularyMemo()


_RAW_MEMO: VocabularyMemo[str | None] = VocabularyMemo()


def _raw_correction(word: str, vocabulary: Any) -> str | None:
    """The vocabulary word ``word`` is a typo of, as written (not its synonym)."""
    from cloudisense.assistant.extract import near_miss

    return _RAW_MEMO.get(word, vocabulary, lambda: _correct(word, vocabulary, near_miss, synonyms=False))


def _correct(word: str, vocabulary: Iterable[str], near_miss: Any, synonyms: bool = True) -> str | None:
    candidates = difflib.get_close_matches(word, list(vocabulary), n=8, cutoff=0.75)
    # Two letters swapped is the likelier typo ("stauts" is "status", not "stats").
    candidates.sort(key=lambda c: len(c) != len(word))
    for cand in candidates:
        if near_miss(word, cand):
            return SYNONYMS.get(cand, cand) if synonyms else cand
    return None


def tools_for_role(registry: IntentRegistry, role: Role | str) -> list[dict[str, Any]]:
    """``Intent.describe()`` of every intent ``role`` may run (viewer: read-risk only; admin-only ones for admins)."""
    role = Role(role)
    return [intent.describe() for intent in registry.all() if may_run(role, intent)]


def plannable(tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools a planner may propose (``agent_use`` ``tool``: not the assistant's own entry points)."""
    return [t for t in tools if t.get("agent_use", "tool") == "tool"]


def refused_tools(registry: IntentRegistry, role: Role | str) -> list[dict[str, Any]]:
    """Plannable tools ``role`` may NOT run, each with ``"refusal"`` (why), so a planner can say so."""
    role = Role(role)
    out = []
    for intent in registry.all():
        why = refusal(role, intent)
        if why is not None and intent.plannable:
            tool = {**intent.describe(), "refusal": why}
            if intent.read_when and refusal(role, intent, Risk.READ) is None:
                # The role may run it as a read ("check": true): the planner plans that run, and only that one.
                tool["allowed_when"] = dict(intent.read_when)
            out.append(tool)
    return out


def planning_context(registry: IntentRegistry, role: Role | str, entities: dict[str, list[str]], *,
                     aliases: dict[str, str] | None = None,
                     history: list[dict[str, str]] | None = None) -> PlanningContext:
    """What a planner sees for a caller of ``role``: the tools it may run, those it may not, names, aliases."""
    from cloudisense.assistant.plan import PlanningContext

    role = Role(role)
    return PlanningContext(tools=plannable(tools_for_role(registry, role)), refused=refused_tools(registry, role),
                           entities=entities, aliases=dict(aliases or {}), history=list(history or []),
                           role=role.value)


def tool_defaults(tool: dict[str, Any]) -> dict[str, Any]:
    """The default value of every param of ``tool`` that has one (from its JSON-schema)."""
    props = (tool.get("params") or {}).get("properties") or {}
    return {name: spec["default"] for name, spec in props.items() if isinstance(spec, dict) and "default" in spec}


def tool_required(tool: dict[str, Any]) -> list[str]:
    """Names of ``tool``'s required params."""
    return list((tool.get("params") or {}).get("required") or [])


@dataclass
class _Doc:
    tool: dict[str, Any]
    terms: Counter[str]
    length: int


@dataclass
class Catalog:
    """Tools plus a BM25 index over name, description, examples and the params' descriptions."""

    tools: list[dict[str, Any]]
    k1: float = 1.2
    b: float = 0.6
    #: Configured entity names: in an example they are an instance ("restart *nginx*"), not words of the intent.
    names: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.by_name = {t["name"]: t for t in self.tools}
        self._names_re = _names_pattern(self.names)
        self.distinct = distinct_words(self.tools)
        self.vocabulary: set[str] = set()
        docs_tokens: list[list[str]] = []
        for tool in self.tools:
            words = self._doc_words(tool)
            docs_tokens.append(words)
            self.vocabulary.update(words)
        #: The words of the documents alone (the vocabulary adds the synonym table's words).
        self.doc_words = frozenset(self.vocabulary)
        self.vocabulary.update(v for v in SYNONYMS.values())
        # Typos of a synonym are corrected too ("runing" is "running", which is "status").
        self.vocabulary.update(SYNONYMS)
        self._docs = [_Doc(t, Counter(w), len(w)) for t, w in zip(self.tools, docs_tokens, strict=True)]
        self._terms = {d.tool["name"]: d.terms for d in self._docs}
        self._avg = (sum(d.length for d in self._docs) / len(self._docs)) if self._docs else 1.0
        df: Counter[str] = Counter()
        for doc in self._docs:
            df.update(doc.terms.keys())
        n = len(self._docs)
        self._idf = {term: math.log(1 + (n - c + 0.5) / (c + 0.5)) for term, c in df.items()}

    def _doc_words(self, tool: dict[str, Any]) -> list[str]:
        name = tool["name"].replace("_", " ")
        parts = [name, name, tool.get("description", "")]
        examples = [str(e) for e in tool.get("examples") or ()]
        parts += [self._names_re.sub(" ", e.lower()) for e in examples] if self._names_re else examples
        props = (tool.get("params") or {}).get("properties") or {}
        # What each param is for says what the intent is about ("the backup's id" -> backups).
        parts += [str(spec.get("description", "")).split(",")[0] for spec in props.values() if isinstance(spec, dict)]
        # What its result tells ("hours since the last backup finished") is what a question about it asks.
        from cloudisense.assistant.conditions import result_fields
        from cloudisense.assistant.extract import enum_of, specific_pattern

        parts += [f"{f.path.replace('.', ' ').replace('_', ' ')} {f.description}"
                  for f in result_fields(tool.get("result"))]
        # A param's listed values ("warning alerts", "sorted by memory") are words of what the intent is about.
        parts += [v for spec in props.values() if isinstance(spec, dict)
                  for v in enum_of(spec) if isinstance(v, str) and len(v) >= 4 and v.isalpha()]
        # A number in an example is a value ("last 10 audit entries"), never a word of what the intent does; so is
        # an id of a shape its params declare ("remove the backup b-9").
        shapes = [re.compile(p) for spec in props.values() if isinstance(spec, dict)
                  and (p := spec.get("pattern") or next((a.get("pattern") for a in spec.get("anyOf") or []
                                                          if isinstance(a, dict) and a.get("pattern")), None))
                  and specific_pattern(p)]
        return [w for part in parts for w in normalize(part, distinct=self.distinct)
                if not w.isdigit() and not any(s.fullmatch(w) for s in shapes)]

    @classmethod
    def from_registry(cls, registry: IntentRegistry, role: Role | str = Role.OPERATOR) -> Catalog:
        """The catalogue of what ``role`` may run on this node."""
        return cls(tools_for_role(registry, role))

    def terms(self, name: str) -> set[str]:
        """The words of tool ``name``'s document."""
        return set(self._terms[name])

    def coverage(self, name: str, terms: set[str], explained: set[str] = frozenset()) -> float:  # type: ignore[assignment]
        """The share of ``terms`` (weighted by rarity) that tool ``name``'s document contains (or ``explained``)."""
        total = sum(self._idf.get(t, 1.0) for t in terms)
        have = sum(self._idf.get(t, 1.0) for t in terms if t in self._terms[name] or t in explained)
        return have / total if total else 0.0

    def tokens(self, text: str) -> list[str]:
        """``text`` normalised against this catalogue's vocabulary (typos fixed)."""
        return normalize(text, self.vocabulary, distinct=self.distinct)

    def scores(self, query: Sequence[str]) -> dict[str, float]:
        """BM25 score of every tool for already-normalised ``query`` tokens."""
        out: dict[str, float] = {}
        terms = Counter(query)
        for doc in self._docs:
            score = 0.0
            for term, qtf in terms.items():
                tf = doc.terms.get(term, 0)
                if not tf:
                    continue
                norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * doc.length / self._avg))
                score += self._idf.get(term, 0.0) * norm * (1 + 0.2 * (qtf - 1))
            out[doc.tool["name"]] = score
        return out

    def search(self, text: str, k: int = 8) -> list[tuple[dict[str, Any], float]]:
        """The ``k`` tools most relevant to ``text``, best first, with their scores (zero-score tools left out)."""
        ranked = sorted(self.scores(self.tokens(text)).items(), key=lambda kv: (-kv[1], kv[0]))
        return [(self.by_name[name], score) for name, score in ranked[:k] if score > 0]

    def relevant(self, text: str, k: int = 8, always: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Tools for a prompt: the top ``k`` plus any named in ``always`` that exist."""
        chosen = [tool for tool, _ in self.search(text, k)]
        names = {t["name"] for t in chosen}
        for name in always:
            if name in self.by_name and name not in names:
                chosen.append(self.by_name[name])
                names.add(name)
        return chosen


def _names_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """How configured names are written or said in a sentence ("nginx-error", "nginx error"), as one regex."""
    forms: set[str] = set()
    for name in names:
        low = name.lower()
        forms.add(re.escape(low))
        parts = [p for p in re.split(r"[-_.\s]+", low) if p]
        if len(parts) > 1 and parts[-1] in ("sh", "yml", "yaml", "py", "json", "toml", "log"):
            parts = parts[:-1]
        if parts:
            forms.add(r"\s+".join(re.escape(p) for p in parts))
    if not forms:
        return None
    return re.compile(r"(?<![\w.\-/])(?:" + "|".join(sorted(forms, key=len, reverse=True)) + r")(?![\w\-/]|\.\w)")


def _tool_text(tool: dict[str, Any], with_examples: bool) -> str:
    text = tool.get("description") or tool["name"]
    risk = tool.get("risk")
    if risk and risk != Risk.READ.value:
        text += f" (risk: {risk})"
    examples = list(tool.get("examples") or [])
    if with_examples and examples:
        text += ". Examples: " + "; ".join(f'"{e}"' for e in examples[:4])
    return text


def _schema(tool: dict[str, Any]) -> dict[str, Any]:
    schema = dict(tool.get("params") or {"type": "object", "properties": {}})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema.pop("title", None)
    return schema


def to_openai_tools(tools: Iterable[dict[str, Any]], *, with_examples: bool = True) -> list[dict[str, Any]]:
    """OpenAI Chat Completions ``tools`` (``{"type": "function", "function": {...}}``)."""
    return [{"type": "function", "function": {"name": t["name"], "description": _tool_text(t, with_examples),
                                              "parameters": _schema(t)}} for t in tools]


def to_anthropic_tools(tools: Iterable[dict[str, Any]], *, with_examples: bool = True) -> list[dict[str, Any]]:
    """Anthropic Messages ``tools`` (``{"name", "description", "input_schema"}``)."""
    return [{"name": t["name"], "description": _tool_text(t, with_examples), "input_schema": _schema(t)}
            for t in tools]


def to_mcp_tools(tools: Iterable[dict[str, Any]], *, with_examples: bool = True) -> list[dict[str, Any]]:
    """MCP ``tools/list`` entries (``{"name", "description", "inputSchema", "annotations"}``)."""
    out = []
    for t in tools:
        risk = t.get("risk", Risk.READ.value)
        out.append({"name": t["name"], "description": _tool_text(t, with_examples), "inputSchema": _schema(t),
                    "annotations": {"readOnlyHint": risk == Risk.READ.value,
                                    "destructiveHint": risk == Risk.DESTRUCTIVE.value}})
    return out
