"""Per-request work of the offline planner: segments -> scored intents -> grounded, conditional steps."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloudisense.assistant import extract as ex
from cloudisense.assistant.catalog import (
    STOPWORDS,
    SYNONYMS,
    Catalog,
    apply_phrases,
    canonical,
    correct,
    join_split_verbs,
    normalize,
    raw_tokens,
    spell_phrases,
    stem,
    tool_required,
    uninflect,
)
from cloudisense.assistant.conditions import (
    COMPARISON_WORDS,
    Condition,
    compile_condition,
    or_more_as_at_least,
    reads_as_condition,
    result_fields,
    split_condition,
)
from cloudisense.assistant.offline import as_plan_steps
from cloudisense.assistant.plan import Plan, PlanningContext
from cloudisense.core.intents import reads_with

if TYPE_CHECKING:
    from cloudisense.assistant.offline import OfflinePlanner

#: Below this share of known words (and with no configured name mentioned) a request is out of scope.
MIN_COVERAGE = 0.34
#: Each param the text fills is evidence for the intent ("errors ... from the last hour" fills a search's
#: pattern and window, not a read's).
FILL_BONUS = 1.25
#: A filled required param is stronger evidence ("errors" fills a search's pattern, a read has no such need).
REQUIRED_BONUS = 1.6
#: A value only one kind of param takes ("b-40" matches a backup id's pattern; "every 6 hours" an interval).
DISTINCT_BONUS = 2.0
#: An intent that takes as an option the one text another intent requires (see :func:`_made_for`).
OPTION_OF_ANOTHER = 0.6
#: A required param the text does not fill (and the planner can't compose) makes the intent less likely.
MISSING_PENALTY = 0.6
#: An intent that takes no param of the kind of thing the request names.
NOT_TAKING_NAMED = 0.6
#: A read intent for an imperative request that asks for a change (:meth:`SegmentPlanner._asks_change`).
CHANGE_OVER_READ = 0.5
#: An intent whose declarations never mention a thing the request points at ("this box").
OTHER_OBJECT = 0.7
#: A change whose verbs (its name's and its examples' first words) are not the request's verb, when those
#: of another action on the same thing are: "cancel the cleanup run" is not ``start_script_execution``.
OTHER_VERB = 0.7
#: A word said that only one intent's name has ("on telegram" for simple_telegram_notify).
UNIQUE_NAME_WORD = 1.4
#: A change that removes nothing, for a request whose verb is one of removal (:data:`_REMOVAL`).
FOREIGN_VERB = 0.3
#: A read whose result has the field a question's comparison is over ("is memory above 90 %?").
FIGURE_BONUS = 1.5
#: How many of the best-retrieved intents are re-ranked.
RERANK_TOP = 12
#: A refused intent is only the answer when no allowed one scores at least this share of it.
REFUSE_MARGIN = 0.8
_QUESTION_START = re.compile(
    r"^\s*(when|did|does|is|are|was|were|has|have|how|what|whats|what's|which|who|why|where|whether|any|should"
    r"|shall|(?:tell|show)\s+me\s+(?:if|whether)|(?:i\s+)?wonder\s+(?:if|whether))\b", re.I)
_REQUEST_START = re.compile(r"^\s*(can|could|would|will)\s+(you|u)\b|^\s*please\b", re.I)
#: Words of time that follow "the" without naming a thing ("in the past 15 minutes").
_TIME_WORDS = {"past", "last", "next", "previous", "moment", "morning", "evening", "night", "weekend", "day", "week",
               "hour", "minute", "month", "year", "time", "end", "start",
               # ... and which one of several, by age or order ("the latest orders backup").
               "latest", "newest", "oldest", "earliest", "recent", "current", "first", "second", "final"}
_QUANTIFIERS = {"any", "all", "every", "each"}
#: "anything new?", "something wrong?": a stand-in for what is asked about, not a word of it.
_INDEFINITE = {"anything", "something"}
#: A condition that only says "the opposite of the step before" ("... and start it if not").
_NEGATED_BEFORE = {"not", "it's not", "it is not", "it isn't", "its not", "isn't", "not so", "it's not up"}
#: Words that start examples without being verbs ("last 20 lines of ...", "top processes").
_NOT_VERBS = {"top", "last", "first", "latest", "newest", "recent", "next", "previous"}
#: A diagnosis, not one action: "why is the site slow?", "what's wrong with the server?".
_WHY = re.compile(r"^\s*(why|what'?s\s+wrong|what\s+is\s+wrong|what\s+went\s+wrong)\b", re.I)
_HARD_SPLIT = re.compile(
    r"\s*(?:;|\.\s+(?=[a-z])|,?\s+and\s+then\s+|,?\s+then\s+|,?\s+after\s+that,?\s+|,?\s+afterwards,?\s+)\s*", re.I)
#: (The separator is kept, as every second piece of a split: a comma ends a condition said first.)
_SOFT_SPLIT = re.compile(r"\s*(,\s*and\s+|\s+and\s+|,\s+|\s+&\s+|,?\s+plus\s+|,?\s+as\s+well\s+as\s+"
                         r"|\s+(?:vs\.?|versus)\s+)\s*", re.I)
#: A segment that starts with its condition ("if X, ...", "should X, ..."; not "should I ...", advice asked), perhaps
#: after what it is about ("orders: if ...").
_CONDITION_FIRST = re.compile(r"^\s*(?:[^\s:,;]+:\s*)?"
                              r"(?:if|only\s+if|in\s+case|whenever|unless|should\s+(?!i\b|we\b|you\b)"
                              r"|provided|providing|as\s+long\s+as|so\s+long\s+as|assuming|in\s+the\s+event"
                              r"|(?:when|once)\s+(?!you\b|u\b|did\b|does\b|do\b|is\b|was\b|will\b|are\b|were\b|can\b)"
                              r"|as\s+soon\s+as)\b", re.I)
#: Verbs that undo each other, as groups (in their catalogue spelling: "kill" is "stop"): whatever makes a
#: thing ("add", "create") is the opposite of whatever removes one ("delete", "remove", "drop").
_UNDOING = ((("start",), ("stop",)), (("enable",), ("disable",)), (("mute",), ("unmute",)),
            (("silence",), ("unsilence",)), (("pause",), ("resume",)), (("lock",), ("unlock",)),
            (("open",), ("close",)), (("create", "add", "install", "make"),
                                      ("delete", "remove", "drop", "erase", "uninstall", "purge", "destroy", "wipe")))


def _opposite_words(groups: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]) -> dict[str, set[str]]:
    """Each verb of ``groups`` with every verb of the other side of its group."""
    out: dict[str, set[str]] = {}
    for makes, undoes in groups:
        for side, other in ((makes, undoes), (undoes, makes)):
            for word in side:
                out.setdefault(word, set()).update(other)
    return out


_OPPOSITES = _opposite_words(_UNDOING)
#: Common English verbs of doing, which say to act without naming a module's own action (a first word that is none
#: of these nor a word of the node's declarations is no reason to change anything: see ``plan_segment``).
_PLAIN_VERBS = frozenset(
    "make keep put get set take give have do push pull throw trim cut clean clear purge update change modify adjust "
    "alter edit tweak bring send fire kick roll schedule plan ensure let redo rerun retry repeat reset refresh "
    "tidy empty free force go begin launch lift lower raise turn switch flip open close shut hold wait fix handle "
    "sort arrange add create build generate write save copy post publish mail email text tell warn inform page "
    "ping alert notify ask ack acknowledge confirm approve reject cancel abort halt pause resume restart reload "
    "start stop run execute trigger kill remove delete drop erase wipe destroy prune restore recover revert renew "
    "back backup snapshot silence mute unmute snooze quiet enable disable apply deploy provision install telegram "
    "perform initiate invoke commence conduct carry complete finish prepare setup boot reboot bounce call power "
    "spin wake try attempt".split())
#: A statement about doing something ("stopping nginx is a bad idea", "restarting redis would be risky").
_ABOUT_DOING = re.compile(r"^\s*[a-z]{3,}ing\s+(?:[\w.\-']+\s+){0,4}?(?:is|was|would\s+be|will\s+be|seems|sounds"
                          r"|looks|isn't|wasn't|might\s+be|could\s+be|may\s+be|makes|made|causes|broke|did|does"
                          r"|[a-z]{3,}ed)\b", re.I)
#: Who says they did something ("I restarted redis already", "someone deleted X").
_SUBJECTS = frozenset({"i", "we", "someone", "somebody", "they", "he", "she", "ops", "nobody", "everyone", "you",
                       "it", "i've", "we've", "they've"})
#: Words between a subject and what it did ("we already stopped it", "I just ran it").
_ADVERBS_OF_DOING = frozenset({"already", "just", "accidentally", "manually", "also", "then", "have", "had", "has",
                               "finally", "recently", "earlier", "never",
                               # ... and the passive ("orders got restored by mistake", "nginx was stopped").
                               "got", "was", "were", "been"})
#: Past forms of verbs of doing that do not end in "ed".
_IRREGULAR_PAST = frozenset({"ran", "broke", "began", "took", "made", "wrote", "shut", "sent", "kept", "rebuilt",
                             "built", "undid", "redid", "reran"})
#: Verbs that only say to leave something alone ("don't touch nginx, just show me its log").
#: Past verbs of needing or trying, before "to" and a verb ("we needed to restart nginx"): a report, no order.
_PAST_NEED = frozenset({"needed", "had", "tried", "planned", "meant", "attempted", "used", "wanted"})
_HANDS_OFF = frozenset({"touch", "bother", "mess", "worry", "fiddle", "tinker"})
#: Verbs that say to remove something (plain English; "drop" is not one: "drop a line" sends one).
_REMOVAL = frozenset({"delete", "remove", "erase", "wipe", "destroy", "uninstall", "purge", "trash", "discard",
                      "scrap", "nuke", "prune", "empty"})
#: Verbs of clearing things away, and "X can go" / "has to go" / "goes": said of a destructive action.
_CLEARING = frozenset({"drop", "clear", "clean", "cleanup", "trim", "cull", "thin", "expunge", "overwrite", "force",
                       "clobber", "push", "deploy", "apply", "ship"})
_MAY_GO = re.compile(r"\b(?:can|could|may|must|should|has\s+to|have\s+to|need\s+to|needs\s+to)\s+go\b|\bgoes\b"
                     r"|\bgo(?:ne)?\s+(?:for\s+good|away)\b|\bgone\b", re.I)
#: Other ways of saying to clear things away ("throw away", "keep only the last 14 days", "get b-15 out of the
#: list").
_REMOVAL_SAID = re.compile(r"\b(?:throw(?:n)?\s+(?:away|out)|toss|bin|keep\s+only|only\s+keep|pruned|purged|erased"
                           r"|deleted|removed|(?:get|take)\s+(?:\S+\s+){1,3}?out\s+of|off\s+the\s+list|for\s+good)\b",
                           re.I)
#: Ways of saying to put a thing back as it was ("put b-41 back into orders", "bring orders back to b-318").
_PUT_BACK_SAID = re.compile(r"\b(?:(?:put|bring|take|set|turn|load)\s+(?:\S+\s+){0,3}?back|back\s+to"
                            r"|load\s+(?:\S+\s+){0,3}?into)\b", re.I)
#: Words that say something repeats by itself, without saying how often.
_REPEATED = {"regular", "regularly", "periodic", "periodically", "recurring", "routinely", "automatically",
             # ... or names how often itself ("change the backup frequency"): only what repeats has one.
             "frequency", "interval", "cadence", "often"}
#: Verbs that say to change something without saying how: plain English, not any intent's own verb.
_CHANGE_VERBS = {"change", "modify", "alter", "adjust", "edit", "tweak"}
#: "a new backup", "a fresh cert": something that does not exist yet, so no reading gives it.
_A_NEW = re.compile(r"\b(a|another)\s+(new|fresh)\b|\banother\b", re.I)
#: "before the upgrade, ...", "before I touch it, ...": what the user is about to do themselves.
_BEFORE_CLAUSE = re.compile(r"^\s*before\s+[^,;:]{2,60}[,:]\s*(?P<rest>.+)$", re.I)
#: "notify the team before you restart nginx": the first action, then the one it comes before.
_BEFORE_YOU = re.compile(r"^\s*(?P<first>[^;,]+?)\s+before\s+(?:you|we|i|u)\s+(?P<later>[^;]+?)\s*$", re.I)
#: "the alert says 'restart nginx'", "the log shows OOM kills": what a thing says is reported, never an order.
_THING_SAYS = re.compile(r"^\s*(?:the|this|that|our|an?)\s+[\w.\-]+(?:\s+[\w.\-]+)?\s+"
                         r"(?:says|said|reads|read|shows|showed|reports|reported|mentions|mentioned|claims|claimed"
                         r"|suggests|suggested|recommends)\b", re.I)
#: "delete b-2, but first take a new backup": what is said last is done first.
_BUT_FIRST = re.compile(r"^(?P<later>[^;]+?)\s*(?:,\s*but|,|;|\s+but)\s+(?:first|before\s+that|beforehand)\s*,?\s+"
                        r"(?P<first>[^;]+)$", re.I)
#: Words that only urge, said after the request ("..., go", "..., now please").
_URGING_END = re.compile(r"[,;.!]\s*(?:go|go\s+ahead|now|right\s+now|please|pls|asap|thanks|thx|ta|cheers)"
                         r"(?:\s+(?:please|pls|now))?\s*[.!]*\s*$", re.I)
#: A dash between two clauses (between words, spaced), not the hyphen of a name or a range of numbers.
_CLAUSE_DASH = re.compile(r"(?<=[a-z'])\s+(?:-{1,2}|–|—)\s+(?=[a-z])", re.I)
#: A clause that starts with a bound ("at 4 or fewer, ...", "with 10 % or less, ...").
_BOUND_FIRST = re.compile(r"(^|[;,.]\s*)(?:at|with)\s+(\d+(?:\.\d+)?\s*%?)\s+or\s+"
                          r"(fewer|less|more|lower|higher|under|over|below|above)\s*,", re.I)
#: A bound said alone, then what to do past it ("...? beyond 3 days, start one", "; over 90%, clean up").
_BARE_BOUND = re.compile(r"([?;]\s*)(beyond|over|above|under|below|past|more\s+than|less\s+than|older\s+than"
                         r"|newer\s+than|fewer\s+than)\s+(\d+(?:\.\d+)?\s*(?:%|[a-z]+)?)\s*,", re.I)
#: A word that only opens what is said ("ok, check the disk", "right, restart nginx").
_OPENING = re.compile(r"^\s*(?:ok|okay|right|alright|so|well|anyway|hmm+|um+|oh|ah)\s*[,!.:]\s*(?=\S)", re.I)
#: A question, then what to do when its answer is yes: "is redis down? then restart it", "... ? if so, ...".
_ASKED_THEN = re.compile(r"^\s*(?P<cond>[^?]{3,})\?\s*(?:,\s*)?(?:then|if\s+so|if\s+yes|and\s+if\s+so)\s*,?\s+"
                         r"(?P<action>\S.*)$", re.I)
#: A question, then what to do when its answer is no: "is haproxy running? if not, tell the webhook".
_ASKED_ELSE = re.compile(r"^\s*(?P<cond>[^?]{3,})\?\s*(?:,\s*)?(?:if\s+not|if\s+no|otherwise|else|no\?)\s*,?\s+"
                         r"(?P<action>\S.*)$", re.I)
#: Words that say how a quoted text is meant ("message, verbatim: '...'"): about the quote, not a thing.
_OF_QUOTED = {"verbatim", "exactly", "literally", "word", "wording", "text", "body", "content", "contents", "quote",
              "quoted", "as", "is"}
#: A yes/no question and then an order with nothing between: "/var over 85%? run rotate-logs.sh".
_ASKED_BARE = re.compile(r"^\s*(?P<cond>[^?]{3,})\?\s*(?P<action>[a-z]\S*(?:\s.*)?)$", re.I)
_QUOTE_SPAN = re.compile(r"""(?<!\w)'[^']*'(?!\w)|"[^"]*"|“[^”]*”""")


_QUESTION_WORDS = ("when", "did", "does", "is", "are", "was", "were", "has", "have", "how", "what", "whats", "which",
                   "who", "why", "where", "whether")


def _question_typo(text: str) -> str:
    """``text`` with a typo of a question word at its start spelt right ("hwo many ...", "whta is ...")."""
    m = re.match(r"\s*([a-z]+)\b", text, re.I)
    if not m or m.group(1).lower() in _QUESTION_WORDS:
        return text
    word = m.group(1).lower()
    fixed = next((q for q in _QUESTION_WORDS if len(q) >= 3 and (ex.near_miss(word, q) or (
        len(q) == 4 and ex.letter_missing(word, q)))), None)  # "whn" is "when" with a letter missing
    return text[:m.start(1)] + fixed + text[m.end(1):] if fixed else text


#: "check whether X ...", "can you find out if X ...": asked to find out, not to act.
_FIND_OUT = re.compile(r"^\s*(?:(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?|please\s+)?"
                       r"(?:check|see|verify|confirm|find\s+out|tell\s+me|let\s+me\s+know|look)\s+(?:if|whether)\b"
                       # "I need to know whether ...", "wondering if ...", "any idea when ...", "quick question: ..."
                       r"|^\s*(?:i\s+)?(?:need|want|would\s+like|'d\s+like|d\s+like)\s+to\s+know\s+(?:if|whether|when|how)\b"
                       r"|^\s*(?:i'?m\s+|just\s+)?(?:wondering|curious)\s+(?:if|whether|when|how|about)\b"
                       r"|^\s*any\s+idea\s+(?:if|whether|when|how|why|what)\b"
                       r"|^\s*(?:quick\s+|one\s+|a\s+)?question\s*[:,-]"
                       # "ok to delete b-4", "is it safe to restore ...": asking whether, not asking for
                       r"|^\s*(?:is\s+it\s+|would\s+it\s+be\s+)?(?:ok|okay|safe|fine|alright|wise)\s+to\b",
                       re.I)


def is_question(text: str) -> bool:
    """A question about state ("when did X run?", "is X up?"), not a request phrased politely."""
    if _FIND_OUT.search(text):
        return True
    if _REQUEST_START.search(text):
        return False
    text = _question_typo(text)
    if re.match(r"^\s*(have|get)\s+(?!you\b|we\b|they\b|i\b|it\b|there\b|any|some)", text, re.I) \
            and not text.rstrip().endswith("?") and any(q.every for q in ex.quantities(text)):
        return False  # "have X rotated every hour": a request to have it done, not a question
    if text.rstrip().endswith("?") and re.match(r"^\s*(do|can|could|would|will|might|may)\s+(?!you\b|u\b|ya\b)",
                                                text, re.I):
        return True  # "could orders be restored from b-4?", "would a restore work?": asked about, not asked for
    return bool(_QUESTION_START.search(text)) or (text.rstrip().endswith("?") and not re.match(
        r"^\s*(do|can|could|would|will)\b", text, re.I) and len(text.split()) > 1)


def action_words(catalog: Catalog) -> set[str]:
    """Words that start an action: the first word of the tools' names and examples (not the nouns of names)."""
    cached = getattr(catalog, "_action_words", None)
    if cached is not None:
        return cached
    words: set[str] = set()
    firsts: dict[str, int] = {}
    for tool in catalog.tools:
        words.add(canonical(tool["name"].split("_")[0]))
        for example in tool.get("examples") or ():
            first = _first_word(example)
            if first:
                firsts[first] = firsts.get(first, 0) + 1
    nouns = {canonical(tok) for tool in catalog.tools for tok in tool["name"].split("_")[1:]}
    out = (words | {w for w, n in firsts.items() if w not in nouns or n >= 2}) - _NOT_VERBS
    catalog._action_words = out  # type: ignore[attr-defined]
    return out


def verbs_of(catalog: Catalog) -> dict[str, set[str]]:
    """Per action word, the tools whose name or one of whose examples starts with it (cached on the catalogue)."""
    cached = getattr(catalog, "_verbs", None)
    if cached is not None:
        return cached
    out: dict[str, set[str]] = {}
    for tool in catalog.tools:
        firsts = {f for e in tool.get("examples") or () if (f := _first_word(e))}
        for word in firsts:
            out.setdefault(word, set()).add(tool["name"])
    catalog._verbs = out  # type: ignore[attr-defined]
    return out


def _first_word(text: str, vocabulary: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
    """The canonical first word of ``text`` when it is not a stopword ("back up orders" -> ``backup``)."""
    toks = normalize(text, keep_stopwords=True)[:1]
    if toks and vocabulary and toks[0] not in vocabulary:
        toks = [canonical(toks[0], vocabulary)]  # only the first word is corrected: that is all it reads
    return toks[0] if toks and toks[0].isalpha() and toks[0] not in STOPWORDS else None


def split_request(text: str, entities: dict[str, list[str]], starts: set[str],
                  aliases: dict[str, str] | None = None, verbs: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Segments of a multi-step request (quoted text is never split)."""
    quotes: list[str] = []

    def hide(m: re.Match[str]) -> str:
        quotes.append(m.group(0))
        return f"\x00{len(quotes) - 1}\x00"

    masked = _QUOTE_SPAN.sub(hide, text.strip())
    parts: list[str] = []
    hards: list[str] = []
    for hard in _HARD_SPLIT.split(masked):
        if hards and _context(hards[-1], starts) and (_starts_action(hard, starts) or _first_plain_verb(hard)):
            # "alert 23 keeps pinging us; shush it": what is so, then what to do about it, is one request.
            hards[-1] = f"{hards[-1]}, {hard}"
        else:
            hards.append(hard)
    for hard in hards:
        pieces = _SOFT_SPLIT.split(hard)
        current = pieces[0]
        #: The condition said first ("if X, renew it and tell the team"): every action after it, in the same
        #: sentence, waits for it too.
        said_first: str | None = None
        #: Pieces made of what is so and what to do about it: no longer only what is so.
        told: set[str] = set()
        for piece, sep in zip(pieces[2::2], pieces[1::2], strict=False):
            shared = _SHARED_TAIL.match(piece) if _OWNER_LAST.search(current) else None
            if shared:
                # "db1's and db2's latest backups": what follows the last owner is each one's.
                current = f"{current} {shared.group(1)}"
            if "," in sep and _CONDITION_FIRST.match(current) and "," not in current:
                # "should X happen, do a dry run": the comma ends the condition said first, whatever follows.
                current = f"{current}, {piece}"
                continue
            if (_starts_action(piece, starts) or _first_plain_verb(piece) or _misspelt_action(piece, starts)) \
                    and _context(current, starts) and current not in told:
                # "the db is damaged, roll it back to s-3": what is so, then what to do about it (once: what
                # follows that, "... and tell the team", is a step of its own).
                current = f"{current}, {piece}"
                told.add(current)
                continue
            if _starts_action(piece, starts, verbs) or _misspelt_action(piece, starts) \
                    or _only_entities(piece, entities, aliases) or _asks_again(
                    piece, sep) or _another_of_kind(
                    piece, current, entities, aliases) or _another_object(piece, current, starts):
                if _CONDITION_FIRST.match(current) and "," in current:
                    said_first = current.split(",", 1)[0]
                parts.append(current)
                current = f"{said_first}, {piece}" if said_first and _starts_action(piece, starts, verbs) \
                    and not re.search(r"\b(?:if|unless|when|whenever)\b", piece, re.I) else piece
            else:
                current = f"{current} and {piece}"
        parts.append(current)
    # "... and email the team afterwards", "restart nginx first and the worker second": a closing word of order
    # says when, and the order is the split's.
    parts = [_AFTERWARDS.sub("", p) for p in parts]
    restored = [re.sub(r"\x00(\d+)\x00", lambda m: quotes[int(m.group(1))], p).strip(" ,.") for p in parts]
    return [p for p in restored if p]


#: A piece that ends with an owner ("check db1's"), and one that starts with another and then what is
#: owned ("db2's latest backup results"): what is owned is said once, for both.
_OWNER_LAST = re.compile(r"[\w.\-]['’]s?\s*$")
_SHARED_TAIL = re.compile(r"^\s*[\w.\-]+['’]s?\s+(\S.*)$")

#: "..., and which processes eat the most memory?": a question of its own after "and".
_QUESTION_PIECE = re.compile(r"^\s*(?:which|what|how|where|who|when|whether|is|are|does|do|did|has|have)\s+\w+\s+\w+",
                             re.I)


def _asks_again(piece: str, sep: str) -> bool:
    """A piece after "and" that is a question of its own (a question word, then at least two words)."""
    return bool(re.search(r"\band\b", sep)) and bool(_QUESTION_PIECE.match(piece)) \
        and not re.search(r"\b(?:each|them|they|it|its|those|these|their)\b", piece, re.I)  # ("how large is each")


_AFTERWARDS = re.compile(r"(?<!\bthe)[,\s]+(?:afterwards?|after\s+that|after\s+this|then|too|as\s+well|after|first"
                         r"|second|third|next|last|finally|lastly)\s*[.!]*\s*$", re.I)


#: An action, then "when" / "once" / "as soon as" and what it waits for ("run X when things calm down"); not
#: "when you ...", nor "from / since when ..." (a time: "the errors from when it ran").
#: Nor "once a day" (how often), nor "when it's done" (after the step before it: the order of the steps).
_LATER = re.compile(r"^(?P<action>.+?)(?<!\bfrom)(?<!\bsince)(?<!\beven)\s+(?:when|whenever|once|as\s+soon\s+as)\s+"
                    r"(?P<cond>(?!you\b|u\b|i\b|possible\b|convenient\b|an?\b|per\b|every\b|each\b|more\b|again\b"
                    r"|(?:done|finished|complete|completed|ready|over)\s*$)"
                    r"(?!(?:it|it's|its|that|this|they|they're|we're|everything)\b[^,;]*\b(?:done|finish\w*|complete\w*"
                    r"|start\w*|over|through|ready)\b)\S+(?:\s+\S+)*)$"
                    # "renew X as needed": only when some need is met, which no result says.
                    r"|^(?P<action2>.+?)\s+(?P<cond2>as\s+(?:needed|necessary|required|appropriate))$", re.I)

#: "it" said in a condition ("... if it is older than 30 days").
_IT = re.compile(r"\b(it|its|it's|itself)\b", re.I)

#: A request not to do something ("don't restart it", "never delete ...").
_DONT = re.compile(r"^\s*(?:(?:but|and|so|please|just)\s+)*(?:don'?t|do\s+not|never|dont|no\s+need\s+to"
                   r"|there'?s\s+no\s+need\s+to"
                   # "..., skip the full bodies": what to leave out.
                   r"|skip|leave\s+out|omit"
                   # "api.example.com renewal: hold off, not today": not now.
                   r"|hold\s+off|not\s+today|not\s+now|not\s+yet"
                   # "can you not restart nginx?": asked not to.
                   r"|(?:can|could|would|will)\s+(?:you|u)\s+(?:please\s+)?not)\b", re.I)
#: A statement, then an action "in that case" / "if so": the statement is the action's condition (what it
#: "means" is a remark). Either order: "X; do Y in that case", "X; in that case, do Y".
_THAT_CASE = r"(?:in\s+that\s+case|if\s+so|if\s+that['’]?s\s+(?:the\s+case|so|true)|should\s+that\s+happen" \
             r"|when\s+that\s+happens|if\s+it\s+does)"
_IN_THAT_CASE = re.compile(
    r"^\s*(?P<cond>[^;.!?]+?)(?:\s+(?:means|would\s+mean|indicates|suggests)\b[^;,.!?]*)?\s*[;,.]\s*"
    rf"(?:(?P<action>[^;?]+?)\s*,?\s+{_THAT_CASE}|{_THAT_CASE}\s*,?\s*(?P<action_after>[^;?]+?))\s*[.!]*\s*$", re.I)
#: "once you've confirmed X", "after checking that X": X is a condition of what follows.
_ONCE_CONFIRMED = re.compile(r"(^|[,;:]\s*)(?:once|after|when)\s+"
                             r"(?:you['’]ve|you\s+have|you|we['’]ve|we\s+have|i['’]ve)?\s*"
                             r"(?:confirmed|checked|verified|made\s+sure|checking|confirming|verifying)\s+(?:that\s+)?",
                             re.I)
#: "<a state> means <an action>" ("under 45 days left means a renewal"): the action waits for the state.
_MEANS_ACTION = re.compile(r"^\s*(?P<label>[\w.\-]+\s*:\s*)?(?P<cond>[^;,.]+?)\s+(?:means|should\s+mean|calls\s+for)\s+"
                           r"(?P<action>[^;]+?)\s*[.!]*\s*$", re.I)
#: Politeness said as a condition ("if you can", "if possible", "when you get a chance").
_COURTESY = re.compile(r"(?:^|,|\s)\s*(?:if\s+(?:you\s+)?(?:can|could|possible|you\s+get\s+a\s+chance"
                       r"|you\s+have\s+(?:a\s+)?(?:moment|minute|sec(?:ond)?|time)|you\s+don['’]?t\s+mind"
                       r"|it['’]?s\s+not\s+too\s+much\s+trouble)"
                       r"|when\s+you\s+(?:get|have)\s+(?:a\s+)?(?:chance|moment|minute|sec(?:ond)?|time))\b\s*,?",
                       re.I)
#: A wish not to do something ("I'd rather not restart nginx", "let's not", "we shouldn't", "I don't want to"):
#: said as "don't" before anything else reads the request.
_WISH_NOT = re.compile(r"\b(?:(?:i|we)(?:['’]d|\s+would)\s+(?:rather|prefer\s+to|prefer)\s+not"
                       r"|(?:i|we)\s+(?:prefer|want|need)\s+not\s+to|let['’]?s\s+not|better\s+not|hold\s+off\s+on"
                       r"|(?:i|we|you)\s+(?:should\s+not|shouldn['’]?t|must\s+not|mustn['’]?t|shall\s+not)"
                       r"|(?:i|we)\s+(?:don['’]?t|do\s+not)\s+(?:want|need|wish)\s+to"
                       # "nobody should delete b-41": nobody is to do it, the assistant included.
                       r"|(?:nobody|no\s+one|noone)\s+(?:should|must|may|can|is\s+to|ever))\b", re.I)
#: A clause asking not to do something, anywhere in a segment, with its verb ("..., but never delete it").
_DONT_CLAUSE = re.compile(r"(?:^|[,;]|\band\b|\bbut\b|\bso\b)\s*(?:please\s+)?(?:don'?t|do\s+not|never|dont)\s+"
                          # ... up to the next clause ("don't restart it and just tell me if it's up").
                          r"([a-z]+)(?:(?!\s+(?:and|but|so|just|instead)\s)[^,;])*", re.I)
#: A statement of what is so ("s-9 is stale", "we keep a month of snapshots"): a verb of being or needing.
_STATEMENT = re.compile(r"\b(is|are|was|were|got|gets|has|have|had|need|needs|seems|looks|keeps|went)\b"
                        # ... or its negation ("nginx isn't running", "redis doesn't answer").
                        r"|\b(?:is|are|was|were|does|do|did|has|have|had)n['’]?t\b"
                        # ... or what happened to a thing, or what it does ("the worker crashed", "b-41 takes space").
                        r"|\b(?:came|died|crashed|failed|broke|hung|froze|exited|takes|took|uses|holds|eats|wastes"
                        r"|occupies|fills|filled|stays|stayed|remains|remained)\b"
                        # ... or what we are doing ("we're draining the queue by hand, so stop the worker").
                        r"|^\s*(?:we|i|they)(?:['’]re|['’]m|\s+are|\s+am)\s+[a-z]+ing\b"
                        # "b-4 and b-5 can go": what may be done, said of the things (not "can you ...").
                        r"|(?<!^)(?<!\bi\s)(?<!\bwe\s)\bcan\s+(?:go|be)\b", re.I)


#: A condition that says a state, not an event: "if it is down", "if it's still crashed", "isn't running".
_STATE_SAID = re.compile(r"\b(?:is|are|was|were|still|stays?|remains?)\b|\b(?:it|they)['’](?:s|re)\b"
                         r"|\b(?:is|are|was|were)n['’]?t\b", re.I)


#: An order to do a thing ("do the cleanup", "..., then perform a backup"): its verb, at the start of a clause.
_DO_THE = re.compile(r"(^\s*|[,;.!?]\s*|\b(?:and|then|now|please|just|so)\s+)(?:do|perform|carry\s+out|conduct)\s+"
                     r"(?=(?:the|a|an|another|one|our|my)\s)", re.I)
#: Absolute paths listed with "and" or commas ("/ and /var", "/tmp, /var and /home").
_LISTED_PATHS = re.compile(r"(?<![\w.])/[\w./\-]*(?:\s*(?:,|\band\b|&)\s*/[\w./\-]*)+")
#: A statement about a thing, then a condition on "it" ("ram keeps creeping up. once it's past 90 percent, ...").
_SUBJECT_THEN_CONDITION = re.compile(
    r"^\s*(?P<subject>(?:the\s+|our\s+|my\s+)?[a-z][\w/.\-]*(?:\s+[a-z][\w/.\-]*)?)\s+(?:is|are|keeps|kept|has\s+been"
    r"|have\s+been|was|were|seems|looks|goes|went)\b[^,.;!?]*[,.;!?]+\s*"
    r"(?P<rest>(?:once|if|when|whenever|as\s+soon\s+as|should)\s+(?:it|it['’]s)\b.*)$", re.I)
#: A name, a colon, then what to do ("users-db: show the latest backup").
_TOPIC_FIRST = re.compile(r"^\s*([\w.\-]+(?:\s+[\w.\-]+)?)\s*:\s+(?!if\b|when\b|unless\b|once\b)(\S.*)$", re.I)
#: Words before an action named as a thing that happened ("the restore ...", "last night's cleanup ...").
_DETERMINERS_OF_PAST = {"the", "that", "this", "our", "my", "last", "yesterday's", "yesterdays", "today's", "todays",
                        "tonight's", "last night's", "nightly", "earlier"}
#: How an action went ("... failed", "... went through", "... timed out").
_OUTCOME_PAST = {"failed", "broke", "crashed", "worked", "succeeded", "finished", "completed", "ran", "errored",
                 "hung", "stalled", "timed", "died", "went", "aborted", "stopped", "blew", "choked", "bombed",
                 "passed", "happened", "started", "ended", "failing", "fails", "crashing", "erroring", "hanging",
                 "stalling", "timing"}
#: A thing named only by what it did ("whichever one was flapping", "whatever service is broken").
_WHICHEVER = re.compile(r"\bwhichever\b[^,;.?!]*|\bwhatever\s+(?:one|of\s+them)\b[^,;.?!]*"
                        r"|\bwhatever(?:\s+[a-z]+)?\s+(?:was|is|has\s+been|keeps|kept)\s+[a-z]+", re.I)
#: "no renewal for X", "no restarts today": no action of a kind (checked: the word names an action).
_NO_ACTION = re.compile(r"(^\s*|[,;.!?]\s*|\b(?:and|but|so)\s+)no\s+([a-z]{4,})\b", re.I)
#: "try restarting nginx", "attempt to renewing": trying a verb.
_TRY_DOING = re.compile(r"\b(?:try|attempt)\s+(?:to\s+)?([a-z]{4,}ing)\b", re.I)
#: "..., I just want to look", "- we only need to see it": the request is a look, and says so again.
_ONLY_LOOKING = re.compile(r"\s*[,;.\-–—]+\s*(?:i|we)\s+(?:just|only|simply)?\s*"
                           r"(?:want|wanna|need|would\s+like|'d\s+like)\s+to\s+(?:look|see|check|know|peek|have\s+a\s+look)(?:\s+(?:at\s+)?(?:it|them|things))?"
                           r"(?:\s+(?:for\s+now|first))?\s*[.!]*\s*$", re.I)
#: The text said before, pointed back at ("the same text", "that message").
_SAME_TEXT = re.compile(r"\b(?:the\s+same|that\s+same|that|this)\s+(?:text|message|words|wording|note|line)\b", re.I)
#: Where a sentence ends: ". " / "! " before the next (not the dot of "demo/a.txt" or "api.example.com").
_SENTENCE_END = re.compile(r"(?<=[.!])\s+(?=\S)")
#: First words of a sentence about the speaker or the day ("I haven't even had dinner.", "long night here."),
#: never of an order.
_REMARK_START = {"i", "i'm", "im", "i've", "ive", "i'd", "we", "we're", "we've", "been", "long", "today", "tonight",
                 "yesterday", "ugh", "phew", "man", "wow", "oh", "sorry", "busy", "rough", "crazy", "another"}
#: A piece about what was just named, by a pronoun and a verb of being ("it's down after the reboot", "both are
#: stuck", "they went down").
_SAID_OF_THEM = re.compile(r"^\s*(?:it|they|both|both\s+of\s+them|all\s+of\s+them|each\s+of\s+them|these|those)"
                           r"(?:['’]s|['’]re|\s+(?:is|are|was|were|went|got|have\s+been|has\s+been|keeps?|kept|seems?"
                           r"|looks?|crashed|died|failed|hung|froze|stopped))\b", re.I)


def _said_of_them(piece: str) -> bool:
    """``piece`` says what is so of the things just named, and asks or orders nothing ("it's down after the reboot")."""
    return _SAID_OF_THEM.match(piece) is not None and not is_question(piece) \
        and not re.search(r"\b(?:if|unless|when|whenever|so|then|please)\b", piece, re.I)


def _context(piece: str, starts: set[str]) -> bool:
    """A piece that only says what is so, before what to do about it: no action of its own, no question."""
    ordered = _starts_action(piece, starts) and _NUMBERED_THING.match(piece) is None
    return bool(_STATEMENT.search(piece)) and not ordered and not is_question(piece) \
        and not re.search(r"\b(if|unless|when|whenever)\b", piece, re.I)


#: "... and confirm it came back", "..., then make sure it's healthy": a check of what was acted on.
_THEN_JOIN = r"(?:\s*,\s*(?:and\s+|then\s+|and\s+then\s+)?|\s+(?:and|then|and\s+then)\s+)"
_VERIFY_AFTER = re.compile(
    rf"{_THEN_JOIN}(?:confirm|verify|make\s+sure|ensure|check)\s+(?:that\s+)?"
    r"(?P<what>it|they|the\s+[a-z][\w.-]*|[a-z][\w.-]*)\s+(?:has\s+|have\s+)?(?:came|comes|come)\s+back(?:\s+up)?"
    rf"|{_THEN_JOIN}(?:confirm|verify|make\s+sure|ensure)\s+(?:that\s+)?(?P<what2>it|they)(?:\s+is|\s+are|'s|'re)\s+"
    r"(?:back(?:\s+up)?|up|healthy|running|ok|okay|fine)\b"
    # "..., then confirm it actually went down": that a stop took.
    rf"|{_THEN_JOIN}(?:confirm|verify|make\s+sure|ensure|check)\s+(?:that\s+)?(?P<down>it|they)\s+(?:really\s+|actually\s+)?"
    r"(?:went\s+down|is\s+down|are\s+down|stopped|is\s+stopped|are\s+stopped|is\s+off|shut\s+down)\b"
    rf"|{_THEN_JOIN}(?:confirm|verify|make\s+sure|ensure|check)\s+(?:that\s+)?(?P<done>it|they)\s+"
    r"(?:went\s+through|worked|succeeded|completed|finished|went\s+ok|went\s+fine)\b", re.I)


#: "which targets do we supervise here?", "what playbooks can you run?": asking which things of a kind there are.
_WHICH_WE_HAVE = re.compile(r"^\s*(which|what)\s+([a-z]+s)\s+(?:do|does|did|can|are)\s+(?:we|you|i|they)\s+[a-z]+"
                            r"(?:\s+(?:after|over|into|on|up|out|for))?"
                            r"(?:\s+(?:here|now|currently|today|on\s+this\s+(?:node|box|host|machine|server)))?\s*\??\s*$",
                            re.I)


#: A piece that only bounds how many ("only 3", "just four", "max 10 entries"): a detail of the step before.
_ONLY_A_COUNT = re.compile(r"^\s*(?:only|just|max|maximum|at\s+most|up\s+to|no\s+more\s+than|limit(?:\s+it)?\s+to"
                           r"|cap(?:\s+it)?\s+at)\s+(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|a\s+dozen)"
                           r"(?:\s+(?:entries|items|rows|records|results|lines|ones|of\s+them))?\s*[.!]*\s*$", re.I)


#: "alert 23 is noisy": a thing by its number, then what it is (its first word is a noun, not an order).
_NUMBERED_THING = re.compile(r"^\s*[a-z]+\s+#?(?:\d+|(?=[a-z0-9\-]*\d)[a-z0-9][a-z0-9\-]{5,})\s+"
                             r"(?:is|are|was|were|keeps|has|have|got|looks|seems)\b", re.I)


#: A request that is a noun phrase naming a state ("renewal status of X", "backup state of Y").
_STATUS_NOUN = re.compile(r"^\s*(?:the\s+)?(?:[\w.\-']+\s+){0,2}?(?:status|state|health|progress)"
                          r"(?:\s+(?:of|for|on)\b|\s*\??\s*$)", re.I)
#: What is left out, with the things named after it ("except redis", "all targets but nginx", "other than X").
_EXCLUSION = re.compile(r"\b(?:except(?:\s+for)?|excluding|other\s+than|apart\s+from|besides|save\s+for|but\s+not"
                        r"|(?<=\ball\s)(?:[\w-]+\s+)?but|(?<=\beverything\s)but|(?<=\bevery\s)(?:[\w-]+\s+)?but)"
                        r"\s+(?:the\s+)?[\w.\-]+(?:\s*(?:,|and|or)\s*(?:the\s+)?[\w.\-]+)*", re.I)
#: A thing pointed at as one said before ("that file", "the same script").
_POINTED = re.compile(r"^\s*(?:please\s+)?(?:[a-z']+\s+)?(?:me\s+)?(that|those|the\s+same)\s+([a-z]{3,})\b", re.I)
#: What "this / that" box is: the node itself, always known.
_HERE_WORDS = {"box", "machine", "server", "host", "node", "system", "one", "way", "much", "many", "is", "was"}
#: Words that say a change is only a maybe.
_HEDGE = re.compile(r"\b(?:maybe|perhaps|possibly|probably|we\s+could|we\s+might|one\s+could|might\s+be\s+worth"
                    r"|could\s+be\s+worth|or\s+not)\b", re.I)
_DAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend)"
_NUMBER_WORD = r"(?:\d+|a|an|one|two|three|four|five|six|ten|fifteen|twenty|thirty|a\s+few|a\s+couple\s+of)"
#: A time later than now ("at midnight", "tomorrow", "in 5 minutes", "after the backup finishes").
_LATER_TIME = re.compile(
    r"\b(?:at\s+(?:\d{1,2}(?::\d{2})?\s*(?:am|pm|h)?|midnight|noon|night|the\s+end\s+of\s+the\s+day)(?![\w.%/-])"
    r"|tonight|tomorrow|later\s+(?:today|tonight|on)|later(?=\s*[.!?]*\s*$)|this\s+(?:evening|afternoon|weekend)"
    rf"|next\s+(?:week|month|{_DAYS})|on\s+{_DAYS}"
    rf"|in\s+{_NUMBER_WORD}\s+(?:minutes?|mins?|hours?|hrs?|days?|weeks?)"
    r"|after\s+(?:the|it|that|this|my|our)\s+(?:\w+\s+){0,3}?(?:finish\w*|complete\w*|is\s+(?:done|over)|end\w*|ran|runs))\b",
    re.I)

#: A verb of being: what follows says how a thing is ("b-41 is corrupt"), not what to do.
_BEING = re.compile(r"\b(?:is|are|was|were|got|gets|seems|seem|looks|look|went|has\s+been|have\s+been)\b", re.I)
#: Words a subject starts with.
_SUBJECT_START = {"the", "a", "an", "our", "my", "this", "that", "these", "those", "its", "their", "his", "her"}

#: Who or what follows a verb ("email *the* team", "mail *everyone*"): the word before them acts.
_OBJECT_START = {"the", "a", "an", "my", "our", "your", "everyone", "everybody", "me", "us", "them", "all", "ops"}


#: Words before an order that say nothing of it ("so stop the worker", "and then restart it").
_LEAD_WORDS = frozenset({"please", "pls", "also", "then", "and", "so"})


def _starts_action(piece: str, starts: set[str], verbs: set[str] | frozenset[str] = frozenset()) -> bool:
    """``piece`` starts with an action word, or with a word some example starts with and then its object
    ("email the team": "email" also names the intent, so it is no action word by itself)."""
    words = [w for w in re.findall(r"[a-z'\-]+", piece.lower()) if w not in _LEAD_WORDS]
    if not words:
        return False
    if len(words) > 1 and words[1] in _OBJECT_START and canonical(words[0]) in verbs:
        return True
    if canonical(words[0]) in verbs and re.match(rf"^\W*{re.escape(words[0])}\s+(?:\x00|['\"“‘])", piece.lower()):
        return True  # "... and telegram 'hello'": the verb, then what it says (a quoted text) as its object
    return words[0] in ("if", "only") or canonical(words[0]) in starts


def _misspelt_action(piece: str, starts: set[str]) -> bool:
    """``piece`` starts with an action word misspelt ("restatr it"): an order of its own, for the typo check."""
    words = re.findall(r"[a-z]+", piece.lower())[:1]
    return bool(words) and len(words[0]) >= 5 and words[0] not in starts and canonical(words[0]) not in starts \
        and any(len(w) >= 5 and ex.near_miss(words[0], w) for w in starts)


def _said_again_whole(drafts: list[StepDraft], draft: StepDraft) -> bool:
    """``draft`` is the step before said again with all it needs: that step asked for a missing param, and this
    one has it, and every param the first had."""
    earlier = drafts[-1] if drafts else None
    return earlier is not None and earlier.intent is not None and earlier.intent == draft.intent \
        and earlier.missing is not None and earlier.when is None and not draft.question and not draft.refusal \
        and earlier.missing in draft.params and all(draft.params.get(k) == v for k, v in earlier.params.items())


def _first_plain_verb(piece: str) -> bool:
    """``piece`` starts with a common English verb of doing and then its object ("fire it up", "bounce it")."""
    words = [w for w in re.findall(r"[a-z']+", piece.lower()) if w not in _PARTICLES]  # "fire up it"
    return len(words) > 1 and words[0] in _PLAIN_VERBS and (words[1] in _OBJECT_START or words[1] in _PRONOUNS)


_PARTICLES = {"up", "down", "off", "on", "out", "back", "over"}


#: A request that starts with a verb and then its object ("encrypt the orders database").
_VERB_THEN_OBJECT = re.compile(r"^\s*(?:please\s+)?([a-z]{3,})\s+(?:the|a|an|all|our|my|every|each|this|that|those)\b",
                               re.I)
#: Words of an amount said in words ("a day and a half", "a couple of hours"): about how much, not what.
_AMOUNT_WORDS = {"half", "quarter", "couple", "few", "several", "dozen"}
#: Words that point back at a thing said before.
_PRONOUNS = {"it", "them", "this", "that", "those", "these"}


def _another_object(piece: str, current: str, starts: set[str]) -> bool:
    """"show the top processes and the disk usage": a verb and its object, then a second object of that verb.
    Not "their ...": "list the certs and their expiry" asks for more of the same things, one listing."""
    first = re.findall(r"[a-z']+", piece.lower())[:1]
    if not first or first[0] not in ("the", "my", "our", "its"):
        return False
    if re.search(r"\b(the|my|our)\s+\w+", current.lower()):
        return _starts_action(current, starts)
    # "disk usage on / and the memory figures": a thing asked for by its name alone, then another.
    return _NAMED_ONLY.match(current) is not None and not _STATEMENT.search(current) and not is_question(current)


#: A request that is only a name of what it asks for ("disk usage on /"): words, no punctuation but a path's.
_NAMED_ONLY = re.compile(r"^\s*(?:[a-z][\w\-]*|/[\w./\-]*)(?:\s+[\w./\-]+){1,4}\s*$", re.I)


def _another_of_kind(piece: str, current: str, entities: dict[str, list[str]],
                     aliases: dict[str, str] | None) -> bool:
    """"show the web service status and the worker status": each side names its own thing of one kind; or
    "the last users-db backup and api.example.com's expiry": each side names a thing of its own kind."""
    here = {(m.kind, m.names[0]) for m in ex.find_mentions(ex.Segment.of(piece), entities, aliases)
            if not m.ambiguous}
    if not here:
        return False
    before = {(m.kind, m.names[0]) for m in ex.find_mentions(ex.Segment.of(current), entities, aliases)
              if not m.ambiguous}
    if any(k == kind and n != name for kind, name in here for k, n in before):
        return True
    kinds_here, kinds_before = {k for k, _ in here}, {k for k, _ in before}
    return bool(kinds_before) and not kinds_here & kinds_before and not ex.has_pronoun(ex.Segment.of(piece))


def _only_entities(piece: str, entities: dict[str, list[str]], aliases: dict[str, str] | None) -> bool:
    seg = ex.Segment.of(piece)
    if not seg.stems:
        return False
    mentions = ex.find_mentions(seg, entities, aliases)
    covered = {i for m in mentions for i in range(m.start, m.end)}
    kinds = ex.kind_words(entities)
    rest = [w for i, w in enumerate(seg.stems) if i not in covered and w not in kinds and w != "?"]
    return bool(mentions) and not rest


@dataclass
class StepDraft:
    """One segment's outcome before it becomes a plan step or a question."""

    intent: str | None
    params: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    question: str | None = None
    unknown: bool = False
    reason: str = ""
    #: Set when the caller's role may not run the intent: what to tell them.
    refusal: str | None = None
    #: A condition over an earlier draft's result: (that draft, condition).
    when: tuple[StepDraft, Condition] | None = None
    question_asked: bool = False
    #: The question asks for what only the operator can give (see ``Plan.held``).
    held: bool = False
    #: The required param the text did not give, when that is why there is a question.
    missing: str | None = None
    #: The segment it was planned from.
    text: str = ""
    #: What the user said not to do ("don't restart it"): no step, and no question when something else was asked.
    declined: bool = False
    #: The question asks to confirm a destructive intent whose verb was not said ("keep ten weeks of backups").
    unsaid: bool = False


class SegmentPlanner:
    """Plans one request, segment by segment, remembering entities for "it"."""

    def __init__(self, owner: OfflinePlanner, catalog: Catalog, context: PlanningContext) -> None:
        self.owner = owner
        self.catalog = catalog
        self.context = context
        self.entities = {k: list(v) for k, v in context.entities.items()}
        self.aliases = dict(context.aliases)
        self.kinds = ex.kind_words(self.entities)
        #: Last entity named per kind, in this request (for "restart it"), and the kind named last.
        self.last: dict[str, str] = {}
        self.last_kind: str | None = None
        self.starts = action_words(catalog)
        #: Whether the segment being planned is a question about state.
        self._question = False
        #: Whether the segment last re-ranked asks for a change (:meth:`_asks_change`).
        self._change = False
        #: The steps before the segment being planned (what "it" may point back at: :meth:`_said_before`).
        self._before: list[StepDraft] = []
        #: Whether the request ends by urging it on ("rotate-logs.sh, go"): a bare name is to be acted on.
        self._go = False

    def _reports_done(self, seg: ex.Segment, mentions: list[ex.Mention]) -> bool:
        """``seg`` says what somebody or something did: a subject (a person, "someone", a named thing) and then
        a verb of doing in the past ("restarted", "ran"), not an order."""
        words = seg.raw
        if self._action_reported(words):
            return True
        start = 1 if words[:1] == ["the"] else 0
        if not words[start:] or re.match(r"^\s*(?:the\s+)?[\w.\-]+\s*:", seg.text):
            return False  # "db1: forced restore from s-4": a label, then an order
        named = next((m for m in mentions if m.start == start), None)
        if words[start] in _SUBJECTS:
            after = start + 1
        elif named is not None:
            after = named.end
        else:
            return False
        while after < len(words):
            if words[after] in _PAST_NEED and words[after + 1:after + 2] == ["to"]:
                return True  # "we needed to restart nginx yesterday", "we had to stop it": what was so then
            if words[after] not in _ADVERBS_OF_DOING:
                break
            after += 1
        return after < len(words) and self._past_of_doing(words[after])

    def _action_reported(self, words: list[str]) -> bool:
        """"the restore of orders from b-40 failed yesterday", "last night's cleanup crashed": an action named as a
        thing, then how it went: a report (which only ever reads), never the action asked for again."""
        plural = next((i for i, w in enumerate(words[:3]) if w.endswith("s") and w[:-1] in self.starts), None)
        if plural is not None and len(words) >= 3 and (plural == 0 or words[0] not in self.starts) \
                and any(w in _OUTCOME_PAST for w in words[plural + 1:]):
            return True  # "restarts of nginx keep failing", "nginx restarts keep failing": a plural is no order
        # "b-40 restore worked fine last week": a thing, the action on it as a noun, then how it went.
        first = words[0] if words else ""
        if len(words) >= 3 and first not in self.starts | _PLAIN_VERBS | _DETERMINERS_OF_PAST \
                and (canonical(words[1]) in self.starts or words[1] in self.starts) \
                and any(w in _OUTCOME_PAST for w in words[2:]):
            return True
        if len(words) < 3 or words[0] not in _DETERMINERS_OF_PAST:
            return False
        noun = words[1]
        if not (canonical(noun) in self.starts or uninflect(noun, self.starts) or noun in _PLAIN_VERBS):
            return False
        return any(w in _OUTCOME_PAST for w in words[2:])

    def _past_of_doing(self, word: str) -> bool:
        """Whether ``word`` is the past form of a verb of doing ("restarted", "stopped", "ran")."""
        if word in _IRREGULAR_PAST:
            return True
        if not word.endswith("ed") or len(word) < 5:
            return False
        verbs = self.starts | _PLAIN_VERBS
        stems = {word[:-2], word[:-1], word[:-3] if word[-3:-2] == word[-4:-3] else word[:-2]}
        return any(canonical(v) in verbs or v in verbs for v in stems)

    def _asked_bare(self, text: str) -> re.Match[str] | None:
        """"X over 85%? do Y" with no "then": the question is Y's condition when it can only be one
        (:func:`reads_as_condition`) and Y starts with a verb of doing."""
        m = _ASKED_BARE.match(text)
        if m is None or not reads_as_condition(m.group("cond")):
            return None
        first = _first_word(m.group("action"))
        # An action word of the node's, or a plain English verb of doing ("email the team").
        return m if first is not None and (first in self.starts or first in _PLAIN_VERBS) else None

    def run(self, text: str) -> Plan:
        """The plan for ``text``."""
        drafts: list[StepDraft] = []
        pending: str | None = None
        text = _OPENING.sub("", join_split_verbs(text), count=1)
        text = self._without_remarks(text)
        # "users-db: show the latest backup": a name said first, as the topic of the order after it, is what the
        # order is about (its words are no verb: "backup" had read as the verb, starting a backup).
        topic = _TOPIC_FIRST.match(text)
        if topic and _only_entities(topic.group(1), self.entities, self.aliases) \
                and _starts_action(topic.group(2), self.starts) and not is_question(topic.group(2)):
            text = f"{topic.group(2).rstrip(' .!')} {topic.group(1)}"
        # "restart whichever one was flapping": which one is not said, so it is asked (never guessed or escalated).
        text = _WHICHEVER.sub("the one", text)
        # "show whatever logs you have": all of them.
        text = re.sub(r"\bwhatever\s+([a-z]+s)\s+(?:you|we)\s+(?:have|got|can\s+[a-z]+|know(?:\s+of)?)\b", r"all \1",
                      text, flags=re.I)
        # "no renewal for api.example.com this month": no action of that kind is wanted.
        text = _NO_ACTION.sub(self._not_wanted, text)
        # "restart redis; once that's done, the web app too": after the step before, in order, no condition.
        text = re.sub(r"\s*[,;.]?\s*\b(?:once|when|after)\s+(?:that|this|it)(?:['’]s|\s+is|\s+has\s+been|\s+has)?\s+"
                      r"(?:done|finished|complete|completed|over|through)\s*,?\s*", " then ", text, flags=re.I)
        # "so it has to be restarted": what must be done to a thing, as "should be" says it.
        text = re.sub(r"\b(?:has|have|needs?|got|must)\s+to\s+be\s+(?=[a-z]+ed\b)", "should be ", text, flags=re.I)
        # "try restarting nginx": the verb tried is the verb.
        text = _TRY_DOING.sub(lambda m: uninflect(m.group(1).lower(), self.starts) or m.group(0), text)
        # "list its backups, I just want to look": that only looking is wanted, said of what was asked.
        text = _ONLY_LOOKING.sub("", text).strip() or text
        # "do the log rotation", "perform a backup of orders": doing a named thing is running it.
        text = _DO_THE.sub(r"\1run ", text)
        # "restart redis and confirm it came back": the check is a read of the same thing after the action.
        text = _VERIFY_AFTER.sub(lambda m: f", then did {m.group('done')} succeed?" if m.group("done")
                                 else f", then is {m.group('down')} down?" if m.group("down")
                                 else f", then is {m.group('what') or m.group('what2')} up?", text)
        # "what kinds of logs are there?": which logs there are.
        text = re.sub(r"\b(what|which)\s+(?:kinds?|sorts?|types?)\s+of\s+", r"\1 ", text, flags=re.I)
        # "which targets do we supervise here?": which of a kind there are, whatever the verb.
        text = _WHICH_WE_HAVE.sub(lambda m: f"{m.group(1)} {m.group(2)} are there?", text)
        text = _WISH_NOT.sub("don't", text)
        # "restart nginx if you can", "when you get a chance, ...": politeness, no condition to check.
        text = _COURTESY.sub(" ", text).strip(" ,") or text
        # "leave the certs alone, just list them": what not to touch.
        text = re.sub(r"\bleave\s+((?:the|our|my|that|those|this)?\s*[\w.\-]+(?:\s+[\w.\-]+)?)\s+alone\b",
                      r"don't touch \1", text, flags=re.I)
        # "..., after that list what's left": what remains of the things acted on.
        text = re.sub(r"\b(list|show|display|read|give\s+me)\s+(?:me\s+)?(?:what's|what\s+is|whatever\s+is|whatever's"
                      r"|what)\s+(?:left|remaining|remains)\b", r"\1 them", text, flags=re.I)
        # "worker + redis": and.
        text = re.sub(r"(?<=\w)\s+\+\s+(?=\w)", " and ", text)
        # "88%+ full?": the amount or more.
        text = or_more_as_at_least(text)
        # "the web app is off - fire it up": a dash between clauses is a comma.
        text = _CLAUSE_DASH.sub(", ", text)
        # "ram keeps creeping up, once it's past 90 percent, recycle the cache": the condition's "it" is what the
        # statement before it is about; the statement is said for the condition.
        about = _SUBJECT_THEN_CONDITION.match(text)
        if about:
            subject = about.group("subject")
            text = re.sub(r"\bit(?:['’]s|\s+is)\b", f"{subject} is", about.group("rest"), count=1, flags=re.I)
            text = re.sub(r"\bit\b", subject, text, count=1, flags=re.I) if subject not in text else text
        # "check X's days left; at 4 or fewer, renew it": a bound said first is a condition on what was read.
        text = _BOUND_FIRST.sub(lambda m: f"{m.group(1)}if it is {m.group(2)} or {m.group(3)},", text)
        # "how stale is X's backup? beyond 3 days, kick off a full one": a bound said alone after a question.
        text = _BARE_BOUND.sub(lambda m: f"{m.group(1).strip()}; if it is {m.group(2)} {m.group(3)},", text)
        done_first = _BEFORE_YOU.match(text)
        if done_first and _starts_action(done_first.group("later"), self.starts):
            # "notify the team before you restart nginx": both, the one said first done first (the notice was lost).
            text = f"{done_first.group('first').strip()}, then {done_first.group('later').strip()}"
        ahead = _BEFORE_CLAUSE.match(text)
        if ahead and ahead.group("rest").strip():
            # "before the upgrade, snapshot db1": when the user will act, not a step of the plan.
            text = ahead.group("rest")
        while (urged := _URGING_END.search(text)) and urged.start() > 0:
            self._go = self._go or re.search(r"\b(?:go|now|asap)\b", urged.group(0), re.I) is not None
            text = text[:urged.start()]
        reordered = _BUT_FIRST.match(text)
        if reordered:
            text = f"{reordered.group('first').strip()}, then {reordered.group('later').strip()}"
            self._remember(reordered.group("later"))  # "restart redis, but first check its status": its = redis
        # "once you've confirmed the latest backup is ok, drop ...": what is to be confirmed first is a condition.
        text = _ONCE_CONFIRMED.sub(lambda m: m.group(1) + "if ", text)
        means = _MEANS_ACTION.match(text)
        if means and reads_as_condition(means.group("cond")):
            # "X: under 45 days left means a dry-run renewal, nothing more": what a state means to do is done
            # only in that state (it had renewed at once).
            text = f"{means.group('label') or ''}if {means.group('cond').strip()}, {means.group('action').strip()}"
        in_that_case = _IN_THAT_CASE.match(text)
        if in_that_case:
            # "worker uptime under 10 min means it just crashed; email the team in that case": the statement is
            # the action's condition (it had emailed unconditionally).
            action = in_that_case.group("action") or in_that_case.group("action_after") or ""
            text = f"if {in_that_case.group('cond').strip()}, {action.strip()}"
        asked_else = _ASKED_ELSE.match(text)
        asked = _ASKED_THEN.match(text) or self._asked_bare(text)
        if asked_else:
            # "is haproxy running? if not, tell the webhook": the question is read, the action waits for a no.
            # (The question keeps its mark: what it reads is only ever read, never acted on.)
            text = f"{asked_else.group('cond').strip()}?, and {asked_else.group('action').strip()} if not"
        elif asked:
            # "is the disk over 90 %? if so, clean up": the question is the action's condition, said first so that
            # it holds for every action after it ("... ? email the team and run rotate-logs.sh": both wait for it).
            text = f"if {asked.group('cond').strip()}, {asked.group('action').strip()}"
        for segment in split_request(text, self.entities, self.starts, self.aliases, set(verbs_of(self.catalog))):
            action, condition = split_condition(segment, self.starts, verbs=_PLAIN_VERBS)
            if condition and condition.strip().lower() in _NEGATED_BEFORE and drafts and drafts[-1].text:
                # "check whether redis is up and start it if not": the opposite of what was checked.
                condition = f"not {drafts[-1].text.rstrip(' ?')}"
            if not action:
                pending = condition
                self._remember(condition or "")
                continue
            condition = condition or pending
            pending = None
            if condition:
                self._remember(condition)
            negated = _DONT_CLAUSE.search(action)
            if negated and (canonical(negated.group(1)) in self.starts or negated.group(1).lower() in _HANDS_OFF):
                # "X is fine and don't restart it": the negated clause is no step; what is left may be one.
                rest = (action[:negated.start()] + " " + action[negated.end():]).strip(" ,;")
                rest = re.sub(r"\s+(?:and|but|so)$", "", rest).strip(" ,;")
                # "..., just tell me whether it's up": what to do instead.
                rest = re.sub(r"^(?:(?:but|and|so)\s+)?(?:just|only|simply|instead)\b,?\s*", "", rest, flags=re.I)
                if negated.start() == 0 and rest:
                    self._remember(action[:negated.end()])  # "it" in what is left is what not to touch
                    untouched = action[:negated.end()].split(None, 2)[2:]  # "don't touch the certs": the certs
                    if untouched and not ex.find_mentions(ex.Segment.of(untouched[0]), self.entities, self.aliases):
                        # ... and so is "them", when what not to touch is a kind of thing, not a named one.
                        rest = re.sub(r"\b(?:them|it|those)\b", untouched[0].strip(), rest, count=1, flags=re.I)
                if rest and (_starts_action(rest, self.starts) or is_question(rest) or not _STATEMENT.search(rest)):
                    action = rest
                else:
                    action = "don't " + negated.group(1)
            order, _, why = action.rpartition(" and ")
            ordered = order and (_starts_action(order, self.starts)
                                 or (drafts and _only_entities(order, self.entities, self.aliases)))
            if not condition and ordered and _said_of_them(why):
                # "start nginx, it's down after the reboot" (split as "start nginx and it's down ..."): why, said
                # after the order, is no step, and its words ("reboot") choose nothing.
                action = order
            elif not condition and drafts and drafts[-1].intent and not drafts[-1].question and _said_of_them(action):
                continue
            acted = action.rpartition(",")[2] if _context(action.rpartition(",")[0], self.starts) else action
            labelled = re.match(r"^[^:]{1,60}:\s*(\S.*)$", action)
            if _DONT.match(acted) or (labelled and _DONT.match(labelled.group(1))):
                # ("api.example.com renewal: hold off": a label, then not to do it.)
                # "do not stop the worker", "X is fine, don't restart it": what not to do is no step to run.
                drafts.append(StepDraft(None, question="You asked me not to do that, so there is nothing to run. "
                                                       "What should I do instead?", confidence=0.3, held=True,
                                        reason="a negated request: nothing to do", text=action, declined=True))
                self._remember(action)  # "don't restart the worker, just tell me if it's up": "it" is the worker
                continue
            said_before = self._text_said_before(drafts)
            if said_before and _SAME_TEXT.search(action) and not ex.quoted(action):
                # "write 'maintenance until 16:00' to demo/motd.txt, then broadcast the same text on /team".
                action = _SAME_TEXT.sub(f"'{said_before}'", action, count=1)
            draft = self.plan_segment(action, drafts)
            draft.text = action
            joined = self._joined(drafts, action, draft) if not condition else None
            if joined is not None:
                drafts.pop()
                draft = joined
            elif not condition and _said_again_whole(drafts, draft):
                # "prune orders, remove anything older than two weeks": the same action said again with what it
                # lacked is that one action.
                drafts.pop()
            later = None if condition else _LATER.match(action)
            waits = (later.group("cond") or later.group("cond2")) if later else ""
            if later and draft.intent and not draft.question and not draft.refusal \
                    and self.catalog.by_name[draft.intent].get("risk") != "read" \
                    and not any(q.every for q in ex.quantities(waits)):
                # "run the cleanup when things calm down": a change said to wait for some state is conditional on
                # it; when no result can tell that state, it is a question, never a change now.
                condition = waits.strip(" ,.?!")
                acting = later.group("action") or later.group("action2")
                draft = self.plan_segment(acting, drafts)
                draft.text = acting
                self._remember(condition)
            if condition:
                if ex.has_pronoun(ex.Segment.of(condition)) and drafts and drafts[-1].text and not ex.find_mentions(
                        ex.Segment.of(drafts[-1].text), self.entities, self.aliases):
                    # "check memory and notify the team if it's above 90%": "it" is what was checked.
                    condition = f"{condition} ({drafts[-1].text})"
                drafts.extend(self._conditional(draft, condition, drafts))
            else:
                drafts.extend(d for listed in self._each_listed_id(draft, action)
                              for d in self._each_listed_path(listed, action))
        if pending:
            # "restart web, and if it fails ...": a condition whose action was not understood is never dropped.
            return Plan(outcome="clarify", confidence=0.3, strategy=self.owner.strategy,
                        reason="a condition without an action", question=f"What should I do if {pending}?")
        return self._combine(text, drafts)

    def _not_wanted(self, m: re.Match[str]) -> str:
        """"no renewal" -> "don't renew", when the word after "no" names an action; else as said."""
        verb = self._verb_of_noun(m.group(2))
        return f"{m.group(1)}don't {verb}" if verb else m.group(0)

    def _verb_of_noun(self, noun: str) -> str | None:
        """The action verb a noun names ("renewal" -> renew, "restart" -> restart, "restarts" -> restart), or None."""
        low = noun.lower()
        if low in self.starts or canonical(low) in self.starts:
            return low
        if low.endswith("s") and low[:-1] in self.starts:
            return low[:-1]
        return next((v for v in sorted(self.starts, key=len, reverse=True)
                     if len(v) >= 4 and low.startswith(v) and len(low) - len(v) <= 3 and low[len(v):] in ("al", "als")),
                    None)

    def _text_said_before(self, drafts: list[StepDraft]) -> str | None:
        """The last free text an earlier step took (a message, a file's content: of its params, the string that may
        be longest): what "the same text" is."""
        for draft in reversed(drafts):
            if draft.intent is None or draft.question:
                continue
            props = (self.catalog.by_name[draft.intent].get("params") or {}).get("properties") or {}
            texts = []
            for param, value in draft.params.items():
                spec = ex.non_null(props.get(param) or {})
                if isinstance(value, str) and value and "'" not in value and ex.json_type(spec) == "string" \
                        and ex.free_text(spec):
                    texts.append((int(spec.get("maxLength") or 0), value))
            if texts:
                return max(texts)[1]
        return None

    def _without_remarks(self, text: str) -> str:
        """``text`` without its sentences that only say how the speaker is or was doing ("long night here.",
        "been paged three times tonight about latency."), when another sentence asks or orders something."""
        sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
        if len(sentences) < 2:
            return text
        kept = [s for s in sentences if not self._remark(s)]
        if not kept or len(kept) == len(sentences):
            return text
        return " ".join(kept)

    def _remark(self, sentence: str) -> bool:
        words = re.findall(r"[a-z']+", sentence.lower())
        return bool(words) and words[0] in _REMARK_START and not is_question(sentence) \
            and not _starts_action(sentence, self.starts) and not _CONDITION_FIRST.match(sentence) \
            and not re.search(r"\b(?:if|unless|when|whenever|so|then|please|it|them|that|need|needs|want|wants|like"
                              r"|wish|hope|should|must|got\s+to|have\s+to|has\s+to|gotta)\b", sentence, re.I) \
            and not ex.find_mentions(ex.Segment.of(sentence), self.entities, self.aliases)

    def _topic_then_order(self, earlier: StepDraft, piece: str) -> bool:
        """``earlier`` was only a topic (a few words naming a thing, no verb, no question) and ``piece`` an
        order that names no thing of its own."""
        topic = earlier.text.strip()
        shown = earlier.intent is not None and self.catalog.by_name[earlier.intent].get("risk") == "read"
        return (shown and len(topic.split()) <= 4 and not is_question(topic) and not _starts_action(topic, self.starts)
                and not _STATEMENT.search(topic)
                and bool(ex.find_mentions(ex.Segment.of(topic), self.entities, self.aliases))
                and _starts_action(piece, self.starts)
                and not ex.find_mentions(ex.Segment.of(piece), self.entities, self.aliases)
                # ("orders - list its backups": "its" is the topic when the topic is only a name.)
                and (not ex.has_pronoun(ex.Segment.of(piece)) or _only_entities(topic, self.entities, self.aliases)))

    def _joined(self, drafts: list[StepDraft], piece: str, alone: StepDraft) -> StepDraft | None:
        """The previous segment and ``piece`` planned as one, when ``piece`` only completes it: the thing it
        lacked ("full backup, db1") or a detail that means nothing alone ("list backups, only
        db1"). ``None`` when they stay two steps."""
        earlier = drafts[-1] if drafts else None
        if earlier is None or earlier.intent is None or earlier.when is not None or earlier.refusal \
                or not earlier.text:
            return None
        completes = earlier.question is not None and _only_entities(piece, self.entities, self.aliases)
        if self._topic_then_order(earlier, piece):
            # "db1 snapshots - show me the newest 20": the first piece names what the order is about.
            topical = self.plan_segment(f"{piece} {earlier.text}", drafts[:-1])
            if topical.intent == earlier.intent and not topical.question and not topical.refusal:
                topical.text = f"{piece} {earlier.text}"
                return topical
        detail = alone.intent is None and (alone.question is not None or _ONLY_A_COUNT.match(piece) is not None)
        # "keep ten weeks of orders backups, prune everything older": what to keep said first, the verb after.
        verb_after = earlier.unsaid and alone.intent == earlier.intent
        if not completes and not verb_after and not (detail and earlier.question is None):
            return None
        text = f"{earlier.text}, {piece}"
        joined = self.plan_segment(text, drafts[:-1])
        if joined.intent != earlier.intent or joined.question or joined.refusal:
            return None
        joined.text = text
        return joined

    def _each_listed_path(self, draft: StepDraft, text: str) -> list[StepDraft]:
        """"disk usage of / and /var": one step per absolute path listed, for a draft that took one of them."""
        if draft.intent is None or draft.question or draft.refusal:
            return [draft]
        paths = [(p, v) for p, v in draft.params.items() if isinstance(v, str) and v.startswith("/")]
        listed = _LISTED_PATHS.search(text)
        if len(paths) != 1 or not listed:
            return [draft]
        said = re.findall(r"(?<![\w.])/[\w./\-]*", listed.group(0))
        param, value = paths[0]
        if value not in said or len(set(said)) < 2:
            return [draft]
        return [StepDraft(draft.intent, params={**draft.params, param: path}, confidence=draft.confidence,
                          reason=draft.reason, text=draft.text) for path in dict.fromkeys(said)]

    def _each_listed_id(self, draft: StepDraft, text: str) -> list[StepDraft]:
        """"delete b-4 and b-5": one step per id listed for the draft's one required param, an id (each said, in
        order), not a step for the first id only."""
        if draft.intent is None or draft.question or draft.refusal:
            return [draft]
        tool = self.catalog.by_name[draft.intent]
        props = (tool.get("params") or {}).get("properties") or {}
        ids = {p: shape for p in tool_required(tool) if p in draft.params and (shape := _id_shape(p, props.get(p)))}
        if len(ids) != 1:
            return [draft]
        param, shape = next(iter(ids.items()))
        either = _listed_ids(text, shape, "or")
        if len(either) >= 2 and str(draft.params[param]) in either:
            # "delete b-41 or b-42": one of them, and which one is a question, never the first.
            return [StepDraft(draft.intent, question=f"Which {param.replace('_', ' ')} for "
                              f"{draft.intent.replace('_', ' ')}: {_either(either)}?", confidence=0.4, held=True,
                              reason=f"{draft.intent}: a choice of values for {param}", missing=param)]
        listed = _listed_ids(text, shape)
        if len(listed) < 2 or str(draft.params[param]) not in listed:
            return [draft]
        if tool_required(tool) != [param]:
            # "restore X from b-4 and b-5": one run takes one of them, so which is a question, never the first.
            return [StepDraft(draft.intent, question=f"Which {param.replace('_', ' ')} for "
                              f"{draft.intent.replace('_', ' ')}: {_either(listed)}?", confidence=0.4, held=True,
                              reason=f"{draft.intent}: several values listed for {param}", missing=param)]
        number = ex.json_type(props[param]) == "integer"
        return [StepDraft(draft.intent, {**draft.params, param: int(value) if number else value}, draft.confidence,
                          reason=draft.reason, text=draft.text) for value in listed]

    def _remember(self, text: str) -> None:
        for m in ex.find_mentions(ex.Segment.of(text), self.entities, self.aliases):
            if not m.ambiguous:
                self.last[m.kind] = m.names[0]

    # --- combining ---------------------------------------------------------------------------

    def _combine(self, text: str, drafts: list[StepDraft]) -> Plan:
        strategy = self.owner.strategy
        refused = [d for d in drafts if d.refusal]
        if refused:
            return Plan(outcome="refuse", message=refused[0].refusal, confidence=0.9, strategy=strategy,
                        reason=f"not allowed for role {self.context.role}: {refused[0].intent}")
        if all(d.unknown for d in drafts):
            content = [t for t in self.catalog.tokens(text) if t != "?"]
            if (is_question(text) and any(t in self.catalog.vocabulary for t in content)) or _WHY.search(text):
                return Plan(outcome="clarify", confidence=0.3, strategy=strategy, held=True,
                            reason="no action answers that question", question=self._unclear_question(text))
            typo = self._typo_of_action_word(text)
            if typo is not None:
                # "delte demo/a.txt": a misspelt verb of the node's is a question, never an escalation nor an act.
                return Plan(outcome="clarify", confidence=0.3, strategy=strategy, held=True,
                            reason=f"the first word looks like a typo of {typo!r}",
                            question=f"Did you mean \"{typo}\"? Please say it again with the word spelt out.")
            return Plan(outcome="escalate", confidence=0.6, strategy=strategy,
                        reason="escalated: nothing this node can do matches the request")
        unknown = [d for d in drafts if d.unknown]
        if unknown:
            return Plan(outcome="clarify", confidence=0.3, strategy=strategy,
                        reason="part of the request matches no action",
                        question="I can only do part of that. Which of the node's actions did you mean for the rest?")
        declined = [d for d in drafts if d.declined]
        if declined and len(declined) < len(drafts) and not any(d.question for d in drafts if not d.declined):
            # "don't restart the worker, just tell me whether it's running": what not to do is no step, and the
            # rest is the request.
            drafts = [d for d in drafts if not d.declined]
        questions = [d for d in drafts if d.question]
        if questions:
            first = questions[0]
            return Plan(outcome="clarify", question=first.question, confidence=min(0.4, first.confidence),
                        reason=first.reason or "a required detail is missing", strategy=strategy,
                        held=first.held)
        kept: list[StepDraft] = []
        for d in drafts:
            if kept and kept[-1].intent == d.intent and d.when is None and (kept[-1].params == d.params or (
                    self.catalog.by_name[d.intent or ""].get("risk") == "read"
                    and all(kept[-1].params.get(k) == v for k, v in d.params.items()))):
                # "cpu and memory" twice is one call; so is a read asked again with nothing new ("... with its pid
                # and health"), but not a change ("dry run X, then apply it" is two runs).
                continue
            if kept and kept[-1].intent == d.intent and d.when is None and kept[-1].when is None \
                    and self.catalog.by_name[d.intent or ""].get("risk") == "read" \
                    and all(d.params.get(k) == v for k, v in kept[-1].params.items()) \
                    and not any(o.when is not None and o.when[0] is kept[-1] for o in drafts):
                # "syslog, tail -n 15", "audit log, only the denied ones": the read named, then narrowed, is the
                # narrowed read once.
                kept[-1] = d
                continue
            kept.append(d)
        ids = {id(d): f"s{i}" for i, d in enumerate(kept, 1)}
        for i, d in enumerate(kept):
            tool = self.catalog.by_name[d.intent or ""]
            for param in tool_required(tool):
                if param not in d.params and _composable(param, tool):
                    if i == 0:
                        # Nothing ran before it to report on: the text to send must be said.
                        return Plan(outcome="clarify", confidence=0.3, strategy=strategy, held=True,
                                    reason=f"{d.intent}: {param} is missing",
                                    question=f"What should the {(d.intent or '').replace('_', ' ')} say? "
                                             "(e.g. notify the team saying the deploy is done)")
                    d.params[param] = _compose_message(text, [(k.intent or "", k.params) for k in kept[:i]])
        whens: list[str | None] = []
        for d in kept:
            if d.when is None:
                whens.append(None)
            else:
                source, cond = d.when
                whens.append(cond.when(ids.get(id(source), "s1")))
        steps = [(d.intent or "", d.params) for d in kept]
        confidence = min(d.confidence for d in kept)
        why = "; ".join(d.reason for d in kept if d.reason)
        plan_steps = as_plan_steps(steps, whens)
        if len(plan_steps) == 1 and whens[0] is not None:
            plan_steps[0].id = "s1"
        return Plan(steps=plan_steps, outcome="execute", confidence=round(confidence, 3), reason=why or None,
                    strategy=strategy)

    def _typo_of_action_word(self, text: str) -> str | None:
        """The action word that a word of the request is a typo of ("delte X" -> delete, "X can be deelted" ->
        deleted), if exactly one: the first word as the verb, any other as its past form."""
        verbs = self.starts | _PLAIN_VERBS
        for i, word in enumerate(re.findall(r"[a-z]+", text.lower())):
            if word in self.catalog.vocabulary or word in STOPWORDS or word in verbs or len(word) < 4:
                continue
            forms = verbs if i == 0 else {v + "d" if v.endswith("e") else v + "ed" for v in verbs}
            near = sorted(f for f in forms if ex.near_miss(word, f))
            if len(near) == 1:
                return near[0]
        return None

    def _unclear_question(self, text: str) -> str:
        """What to ask when no single action answers a question: the nearest things that can be checked."""
        usable = [t for t in self.catalog.tools if t.get("risk") == "read" and not t.get("refusal")]
        near = [t for t, _ in self.catalog.search(text, 12) if t in usable]
        if not near:
            # One read from each module, the modules with the most to read first.
            by_module: dict[str, list[dict[str, Any]]] = {}
            for t in usable:
                by_module.setdefault(str(t.get("module", "")), []).append(t)
            near = [tools[0] for tools in sorted(by_module.values(), key=len, reverse=True)]
        reads = near
        said = [str((t.get("examples") or [t["name"].replace("_", " ")])[0]) for t in reads[:4]]
        return ("I can't tell that by myself. I can check things such as: " + "; ".join(f'"{e}"' for e in said)
                + ". What should I look at?")

    # --- conditions -----------------------------------------------------------------------------

    def _conditional(self, draft: StepDraft, condition: str, before: list[StepDraft]) -> list[StepDraft]:
        """``draft`` guarded by ``condition`` over a real result, or a question when that can't be checked."""
        if draft.intent is None or draft.question or draft.refusal:
            return [draft]
        for earlier in reversed(before):
            if earlier.intent is None:
                continue
            fields = result_fields(self.catalog.by_name[earlier.intent].get("result"))
            cond = compile_condition(condition, fields)
            if cond is None and earlier.text and ex.has_pronoun(ex.Segment.of(condition)):
                # "check X's days left; at 4 or fewer, renew it": "it" is what that step read.
                cond = compile_condition(f"{condition} ({earlier.text})", fields)
            if cond is not None:
                draft.when = (earlier, cond)
                return [draft]
        check = self._check_step(draft, condition, self._referred(condition, before))
        if check is None:
            draft.question = (f"I can only {draft.intent.replace('_', ' ')} on a condition I can check. "
                              f"How should I tell whether {condition}? (Or say it without the condition.)")
            draft.reason = f"{draft.intent}: condition {condition!r} matches no result field"
            return [draft]
        check_draft, cond = check
        draft.when = (check_draft, cond)
        last = before[-1] if before else None
        if last is not None and last.intent and last.when is None and last.text and f"({last.text})" in condition \
                and self.catalog.by_name[last.intent].get("risk") == "read" \
                and not self.catalog.by_name[last.intent].get("result"):
            # "check memory and notify the team if it's above 90%": the read asked for is the one whose result
            # the condition tests; a read that has no such field is not a second step.
            before.pop()
        return [check_draft, draft]

    def _referred(self, condition: str, before: list[StepDraft]) -> dict[str, Any]:
        """What "it" of a condition that names nothing is: the things the latest step before it acts on
        ("restart nginx, then if it still isn't running, ..."), as kind -> name; else ``{}``. Only a state said
        ("is", "still", "it's") is checked now: "if it crashes" speaks of a later event, which no read can test."""
        if not _IT.search(condition) or not _STATE_SAID.search(condition) \
                or ex.find_mentions(ex.Segment.of(condition), self.entities, self.aliases):
            return {}
        for earlier in reversed(before):
            if earlier.intent is None:
                continue
            ents = self.catalog.by_name[earlier.intent].get("entities") or {}
            named = {kind: earlier.params[p] for p, kind in ents.items() if isinstance(earlier.params.get(p), str)}
            if named:
                return named
        return {}

    def _check_step(self, draft: StepDraft, condition: str,
                    referred: dict[str, Any] | None = None) -> tuple[StepDraft, Condition] | None:
        """A read step whose result the condition can test, grounded like ``draft`` ("renew X if X expires soon")
        or on ``referred``, what the condition's "it" is (:meth:`_referred`)."""
        tool = self.catalog.by_name[draft.intent or ""]
        kinds = {kind: draft.params.get(p) for p, kind in (tool.get("entities") or {}).items() if draft.params.get(p)}
        # What the condition names is what to check ("notify the team if the worker is down").
        about_kinds: set[str] = set()
        said = ex.Segment.of(condition)
        found = ex.find_mentions(said, self.entities, self.aliases)
        weak = self._weak(said, found)
        for m in found:
            if not m.ambiguous:
                kinds.setdefault(m.kind, m.names[0])
                if id(m) not in weak:
                    about_kinds.add(m.kind)
        for kind, name in (referred or {}).items():
            kinds.setdefault(kind, name)
            about_kinds.add(kind)
        best: tuple[float, StepDraft, Condition] | None = None
        said_words = {canonical(t) for t in said.raw} | set(said.stems)
        # "delete backup b-40 if it is older than 30 days": "it" is what the action acts on, so the read must be
        # about that thing (its kind, or its name's noun), never some other figure (the machine's uptime).
        acts_on = [p for p in tool_required(tool) if not _composable(p, tool)]
        # (Not when "it" was found to be what an earlier step read: "check memory; if it is over 90 %, restart X".)
        resolved = re.search(r"\([^()]+\)\s*$", condition) is not None
        own = self._about_action(tool) if acts_on and not about_kinds and _IT.search(condition) and not resolved \
            else None
        for cand in self.catalog.tools:
            if cand.get("risk") != "read" or cand.get("refusal") or not cand.get("result"):
                continue
            if about_kinds and not about_kinds & set((cand.get("entities") or {}).values()):
                continue  # the condition is about a thing this read does not take ("if the X cert ...")
            if own is not None and not own & self._about_action(cand):
                continue
            cond = compile_condition(condition, result_fields(cand.get("result")))
            if cond is None:
                continue
            params: dict[str, Any] = {}
            fits = True
            for param, kind in (cand.get("entities") or {}).items():
                if kind in kinds:
                    params[param] = kinds[kind]
                elif param in tool_required(cand):
                    fits = False
            named = self._condition_values(cand, condition, params) if fits else {}
            named.update(self._condition_paths(cand, condition) if fits else {})
            missing = [p for p in tool_required(cand) if p not in params and p not in named]
            params.update(named)
            if not fits or missing:
                continue
            score = cond.score + (1.0 if params else 0.0)
            if cond.field.words & said_words:
                score += 0.5  # "if pg_dump isn't running": a field the condition names (running), not another flag
            if best is None or score > best[0]:
                best = (score, StepDraft(cand["name"], params, draft.confidence, reason=f"{cand['name']} to check "
                                                                                          f"the condition"), cond)
        return (best[1], best[2]) if best else None

    @staticmethod
    def _about_action(tool: dict[str, Any]) -> set[str]:
        """What an intent is about: the kinds of thing it takes and its name's nouns."""
        return set((tool.get("entities") or {}).values()) | _name_nouns(tool["name"])

    def _condition_values(self, tool: dict[str, Any], condition: str, given: dict[str, Any]) -> dict[str, Any]:
        """The required plain params of a check step read from the condition's own words ("if there's no
        postgres process": the process ``postgres``); a word of the catalogue is never such a value."""
        props = (tool.get("params") or {}).get("properties") or {}
        ents = tool.get("entities") or {}
        seg = ex.Segment.of(condition)
        said = {canonical(t) for t in seg.raw}
        # The condition must say what the check is about ("... no postgres *process*"), or the state its result
        # flags ("if haproxy is not *running*": check_process's ``running``).
        flagged = {canonical(w) for f in result_fields(tool.get("result")) if f.type == "boolean" for w in f.words}
        if not (_name_nouns(tool["name"]) | flagged) & said:
            return {}
        reading = self._reading(seg, ex.find_mentions(seg, self.entities, self.aliases))
        out: dict[str, Any] = {}
        for param in tool_required(tool):
            if param in given or param in ents or not isinstance(props.get(param), dict):
                continue
            value = ex.read_value(param, props[param], reading, required=True,
                                  known_words=self._known(tool) | COMPARISON_WORDS)
            if value is not None:
                out[param] = value
        return out

    def _condition_paths(self, tool: dict[str, Any], condition: str) -> dict[str, Any]:
        """Optional path params of a check step said in the condition ("if /var has less than 20 % free")."""
        props = (tool.get("params") or {}).get("properties") or {}
        seg = ex.Segment.of(condition)
        reading = self._reading(seg, ex.find_mentions(seg, self.entities, self.aliases))
        out: dict[str, Any] = {}
        for param, spec in props.items():
            if param in tool_required(tool) or not isinstance(spec, dict) or ex.json_type(spec) != "string" \
                    or ("path" not in ex.field_words(param, spec) and spec.get("default") != "/"):
                continue
            value = ex.read_value(param, spec, reading, required=False, known_words=self._known(tool))
            if value is not None and value != spec.get("default"):
                out[param] = value
        return out

    # --- one segment ---------------------------------------------------------------------------

    def plan_segment(self, text: str, before: list[StepDraft]) -> StepDraft:
        """Choose the intent of one segment and ground its params."""
        self._before = before
        seg = ex.Segment.of(text)
        mentions = ex.find_mentions(seg, self.entities, self.aliases)
        # "someone deleted demo/a.txt", "cleanup.sh ran twice yesterday": a report of what was done is read about,
        # never done again.
        question = self._question = is_question(text) or self._reports_done(seg, mentions) \
            or _ABOUT_DOING.match(text) is not None \
            or _THING_SAYS.match(text) is not None  # "stopping nginx is a bad idea", "the alert says ...": said
        excluded = self._excluded(seg, mentions)
        if excluded:
            # "restart everything except redis": what is left out is never what is acted on (main restarted redis).
            mentions = [m for m in mentions if id(m) not in excluded]
            seg = ex.Segment.of(_EXCLUSION.sub(" ", text))
            text = seg.text
            mentions = ex.find_mentions(seg, self.entities, self.aliases)
        weak = self._weak(seg, mentions)
        for m in mentions:
            # A weak mention ("backup" for backup.sh on a node with backup intents) is a word, not a thing
            # "it" or "a new one" could later refer to.
            if not m.ambiguous and id(m) not in weak:
                self.last[m.kind] = m.names[0]
                self.last_kind = m.kind
        if _WHY.search(text):
            return StepDraft(None, unknown=True, reason="a why question: a diagnosis, not one action")
        so, _, then = text.rpartition(",")
        named_before = ex.find_mentions(ex.Segment.of(so), self.entities, self.aliases) if so else []
        then = re.sub(r"^\s*(?:so|and\s+so)\s+", "", then, flags=re.I)
        names_then = bool(ex.find_mentions(ex.Segment.of(then), self.entities, self.aliases)) if so else False
        if so and not question and _context(so, self.starts) and (_IT.search(then) or names_then) \
                and not _IT.search(so) \
                and not re.search(r"\d", so) and not re.search(r"\b(?:if|unless|when|whenever|once|in\s+case)\b",
                                                               text, re.I) \
                and not re.match(r"\s*(?:please\s+)?(?:do|go|make|get|try|check|show|see|look|tell)\b", then, re.I) \
                and (_starts_action(then.strip(), self.starts) or _first_plain_verb(then.strip())) \
                and (named_before or names_then) \
                and all(m.how in ("exact", "alias") and not m.ambiguous for m in named_before):
            # "redis never came back after the reboot, launch it": what is so names what "it" is (noted above),
            # what to do is said after it; the statement's words ("reboot") choose no action.
            return self.plan_segment(then.strip(), before)
        pointed = _POINTED.search(text)
        if pointed and not mentions and not self.last and not self.context.history and not before \
                and pointed.group(2).lower() not in _TIME_WORDS | _HERE_WORDS \
                and stem(pointed.group(2).lower()) in self.catalog.vocabulary:
            # "open that file" with nothing said before: which one is a question, never a guess.
            return StepDraft(None, question=f"Which {pointed.group(2).lower()} do you mean? Nothing was named before.",
                             confidence=0.3, held=True,
                             reason=f"'{pointed.group(1)} {pointed.group(2)}' refers to nothing said")
        # "can you find out if X ...": the words of asking say nothing of what is asked about.
        asked = ex.strip_message(_FIND_OUT.sub(" ", text) if _FIND_OUT.match(text) else text, self._names)
        for kind in {k for k in set(self.kinds.values()) if not self.entities.get(k)}:
            unlisted = self._unlisted_name(kind, seg, "", "")
            if unlisted:
                asked = re.sub(rf"(?<![\w-]){re.escape(unlisted)}(?![\w-])", " ", asked, flags=re.I)
        query, typos = self._query_tokens(asked, [m for m in mentions if id(m) not in weak])
        content = [t for t in query if t != "?"]
        if not content and mentions:
            inherited = self._inherit(before, mentions)
            if inherited:
                return inherited
            for m in mentions:
                default = self._default_for(m.kind)
                if default:
                    return self._ground(default, seg, mentions, 0.55, typos)
            for m in mentions:
                action = self._said_as_action(m, seg)
                if action:
                    return self._ground(action, seg, mentions, 0.55, typos)
            bare = next((m for m in mentions if not m.ambiguous), None)
            if bare is not None:
                of_kind = [t for t in self.catalog.tools if bare.kind in set((t.get("entities") or {}).values())]
                changes = [t["name"] for t in of_kind if t.get("risk") != "read"]
                if self._go and len(changes) == 1:
                    # "rotate-logs.sh, go": the one thing this node does to such a thing (a choice of several is
                    # asked); refused as any other request for it when the role may not.
                    return self._ground(changes[0], seg, mentions, 0.6, typos)
                # A bare name with nothing to read about it ("backup.sh"): what to do with it is a question.
                acting = [t for t in of_kind if not t.get("refusal")]
                said = [str((t.get("examples") or [t["name"].replace("_", " ")])[0]) for t in acting[:4]]
                return StepDraft(None, question=f"What should I do with {bare.names[0]}?"
                                 + (" For example: " + "; ".join(f'"{e}"' for e in said) + "." if said else ""),
                                 confidence=0.3, reason=f"{bare.names[0]} named with nothing to do", held=True)
        # An id of a declared shape ("s-7") is a known word: a param of some intent takes it.
        known = [t for t in content if t in self.catalog.vocabulary or t.isdigit()
                 or any(p.fullmatch(t) for p in self._id_patterns()) or "/" in t  # ... and so is a path
                 or (question and t in self._name_words)]  # ... and, asked about, a configured name's word
        # A hyphenated name ("node-agent") is one unknown word, not one per part.
        joined = sum(len(w.split("-")) - 1 for w in raw_tokens(asked) if "-" in w.strip("-")
                     and not re.search(r"\d", w) and not any(canonical(p) in self.catalog.vocabulary
                                                              for p in w.split("-")))
        # Words that say how a quoted text is meant are neither known nor unknown ("email body, exactly: '...'").
        quoted = _QUOTE_SPAN.search(text) is not None
        of_quote = sum(1 for t in content if t in _OF_QUOTED) if quoted else 0
        if not mentions and (not content or len(known) / max(1, len(content) - joined - of_quote) < MIN_COVERAGE):
            return StepDraft(None, unknown=True, reason="no matching action")
        # "the cut-off" of a thing named by its exact name ("X: when is the cut-off?") is a fact about that
        # thing, not an unknown thing.
        exact = any(not m.ambiguous and m.how == "exact" for m in mentions)
        unknown_ref = self._unknown_reference(seg, mentions) if question and not exact else None
        if unknown_ref:
            kinds = ", ".join(f"{k} ({_either(v)})" for k, v in self.entities.items() if v)
            return StepDraft(None, question=f"I don't know what \"the {unknown_ref}\" is on this node. Which one do "
                                             f"you mean? Configured here: {kinds}.",
                             confidence=0.3, reason=f"'the {unknown_ref}' names nothing configured", held=True)
        scores = self._rerank(self.catalog.scores(query), seg, mentions, weak, query)
        if question:
            about = self._state_of_action(scores, mentions, query)
            if about:
                return self._ground(about, seg, mentions, 0.6, typos)
            scores = {n: s for n, s in scores.items() if self.catalog.by_name[n].get("risk") == "read"}
            scores = self._figure_asked(text, scores)
        elif seg.raw and (canonical(raw_tokens(apply_phrases(text))[0]) in ("show", "list") or _STATUS_NOUN.match(text)
                          or self._noun_phrase(text, mentions)) and not _A_NEW.search(text):
            # ("latest orders backup": a thing named with no verb asks to see it, never to make one.)
            # ("renewal status of X", "restore progress for Y": a noun phrase that names a state asks to see it.)
            # ("check mode run of nginx.yml" starts with a phrase, "check mode", not with the verb "check".)
            # "show alert 4" asks to see something: it never plans a write when a read fits at all ("give me
            # a new cert" asks for one that does not exist yet: no read gives it).
            reads = {n: s for n, s in scores.items() if self.catalog.by_name[n].get("risk") == "read" and s > 0}
            kinds_named = {m.kind for m in mentions if not m.ambiguous and id(m) not in weak}
            of_named = {n: s for n, s in reads.items()
                        if kinds_named & set((self.catalog.by_name[n].get("entities") or {}).values())}
            if _STATUS_NOUN.match(text) and of_named:
                reads = of_named  # the state of the thing named ("renewal status of X" reads X's state)
            scores = reads or scores
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked or ranked[0][1] <= 0:
            kind_tools = [(t["name"], 1.0) for m in mentions if not m.ambiguous for t in self.catalog.tools
                          if m.kind in set((t.get("entities") or {}).values()) and not t.get("refusal")]
            # The intents of the kind the name has most of first ("nginx" is a target before a playbook).
            kind_tools.sort(key=lambda nt: -sum(1 for n, _ in kind_tools if _name_nouns(n) & _name_nouns(nt[0])))
            vague = self._vague(content, kind_tools, question, typos, True) if kind_tools else None
            if vague:
                return vague
            for m in mentions:
                default = self._default_for(m.kind)
                if default:
                    return self._ground(default, seg, mentions, 0.5, typos)
            return StepDraft(None, unknown=True, reason="no matching action")
        if len(ranked) > 1 and ranked[1][1] >= 0.97 * ranked[0][1]:
            # A near tie: the intent whose name's verb is just "show" reads what was asked ("what's in the app log"
            # reads it), unless the request says the other intent's own verb ("download").
            asked_words = set(query)
            first, second = ranked[0][0], ranked[1][0]
            if (canonical(second.split("_")[0]) == "show" and canonical(first.split("_")[0]) not in asked_words
                    and self.catalog.by_name[first].get("risk") == "read"
                    and self.catalog.by_name[second].get("risk") == "read"):
                ranked[0], ranked[1] = ranked[1], ranked[0]
        named_kinds = {m.kind for m in mentions if not m.ambiguous and id(m) not in weak}
        if len(ranked) > 1 and named_kinds and not ex.has_pronoun(seg):
            # "run rotate-logs.sh --dry-run": the best match needs a thing of a kind not named (a playbook), while
            # another nearly as good takes every thing it needs from what is named (the script): that one.
            def needs(name: str) -> set[str]:
                tool = self.catalog.by_name[name]
                return {k for p, k in (tool.get("entities") or {}).items() if p in tool_required(tool)}
            if needs(ranked[0][0]) and not needs(ranked[0][0]) & named_kinds:
                fit = next(((n, sc) for n, sc in ranked[1:] if sc >= 0.5 * ranked[0][1] and needs(n)
                            and needs(n) <= named_kinds), None)
                if fit is not None:
                    ranked = [fit] + [r for r in ranked if r != fit]
        if question and len(ranked) > 1 and not named_kinds and not re.search(r"\b(?:it|its|them|they)\b", text, re.I) \
                and (set(seg.raw) & _QUANTIFIERS or any(_is_plural(t) and self.kinds.get(stem(t)) is None
                                                        and canonical(t) in _name_nouns(ranked[1][0])
                                                        for t in seg.raw)):
            # "any of our certificates expiring this week?": a question about many, where the best match needs one
            # thing nobody named, is answered by the listing nearly as good that needs nothing.
            tool = self.catalog.by_name[ranked[0][0]]
            if any(p in (tool.get("entities") or {}) for p in tool_required(tool)):
                listing = next(((n, sc) for n, sc in ranked[1:4] if sc >= 0.5 * ranked[0][1]
                                and not tool_required(self.catalog.by_name[n])), None)
                if listing is not None:
                    ranked = [listing] + [r for r in ranked if r != listing]
        spoken_words = {canonical(t) for t in raw_tokens(apply_phrases(seg.text))}
        def named_by(name: str) -> bool:
            return any(self._unique_name_word(canonical(t)) and canonical(t) in spoken_words for t in name.split("_"))
        if len(ranked) > 1 and not named_by(ranked[0][0]):
            # "let everyone know by email": among intents of one family (their names share a noun), the one whose
            # own name word is said is meant, however many words the others' examples share.
            sibling = next(((n, sc) for n, sc in ranked[1:6] if sc > 0 and named_by(n)
                            and _name_nouns(n) & _name_nouns(ranked[0][0])), None)
            if sibling is not None:
                ranked = [sibling] + [r for r in ranked if r != sibling]
        verb = _first_word(seg.text, self.catalog.vocabulary)
        if verb == "drop" and not re.match(r"^\s*(?:please\s+)?drop\s+(?:[\w.@-]+\s+){0,2}?(?:a|an|me|us)\b",
                                           seg.text, re.I):
            verb = "delete"  # "drop the orders database" removes it ("drop a line" sends one)
        if not question and verb in _REMOVAL and not self._removes(ranked[0][0]):
            # "remove one of the X backups": a verb of removal asks for a removal (which one is then asked),
            # never for a reading or another change that happens to share more words.
            removal = [(n, s) for n, s in ranked if s > 0 and self._removes(n)]
            if removal:
                ranked = removal + [(n, s) for n, s in ranked if (n, s) not in removal]
        best, s1 = ranked[0]
        refused = self._refused(best)
        if refused:
            allowed = [(n, s) for n, s in ranked if not self._refused(n)]
            # A viewer's "run a backup of orders" is refused, not answered with a reading of the last one.
            reading_for_change = self._change and allowed and self.catalog.by_name[allowed[0][0]].get("risk") == "read"
            if allowed and allowed[0][1] >= REFUSE_MARGIN * s1 and not reading_for_change:
                best, s1 = allowed[0]
                ranked = allowed
            else:
                return StepDraft(best, refusal=self._refusal_message(best), confidence=0.9)
        s2 = next((s for n, s in ranked if n != best), 0.0)
        margin = (s1 - s2) / s1 if s1 > 0 else 0.0
        retrieval = 0.35 + 0.35 * min(1.0, margin / 0.4)
        if len(known) < len(content):
            retrieval -= 0.1 * (len(content) - len(known)) / len(content)
        # "fix nginx": a thing named, and nothing but an unknown verb to say what to do with it.
        named = any(not m.ambiguous for m in mentions)
        said = [t for t in content if t not in self.kinds]
        vague = None if named and len(said) > 1 else self._vague(content, ranked, question, typos, named)
        unsure_verb: str | None = None
        if vague:
            return vague
        if not question and content and content[0].isalpha() and content[0] not in self.catalog.vocabulary \
                and not ex.near_miss_any(content[0], self.catalog.vocabulary) and not typos:
            kinds_said = {m.kind for m in mentions if not m.ambiguous and id(m) not in weak}
            if kinds_said and not kinds_said & set((self.catalog.by_name[best].get("entities") or {}).values()):
                # "clone X onto another box": a verb no intent knows, over a thing the best match does not take.
                return StepDraft(None, unknown=True, reason=f"'{content[0]}' is nothing this node does with that")
            ordered = _VERB_THEN_OBJECT.match(text)
            if self.catalog.by_name[best].get("risk") == "read" and content[0] not in _PLAIN_VERBS \
                    and content[0] not in self.starts and ordered and canonical(ordered.group(1)) == content[0]:
                # "encrypt the orders database", "shard the db": an order no intent carries out; showing the thing
                # instead is not what was asked.
                return StepDraft(None, unknown=True, reason=f"'{content[0]}' is nothing this node does")
        # The verb of what to do: after a statement of what is so ("X got corrupted, restore it ..."), its own.
        head, _, tail = text.rpartition(",")
        said_then = [t for t in self.catalog.tokens(tail) if t != "?"] if head and _context(head, self.starts) \
            else content
        verb_said = said_then[0] if said_then else ""
        if not question and not typos and verb_said.isalpha() and verb_said not in self.catalog.vocabulary \
                and not ex.near_miss_any(verb_said, self.catalog.vocabulary) \
                and self.catalog.by_name[best].get("risk") != "read" and (
                    _substituted(verb_said, self.starts) or not self._plain_verb(verb_said)):
            # "ptune X, keep 9 days", "reissue X": a first word no action knows (an action word with one letter
            # changed, which the corrector leaves alone as "site" is no "size"; or a verb neither the node's
            # declarations nor plain English use for doing) is no reason to change anything: the change is asked,
            # never guessed.
            unsure_verb = verb_said
        if self._sweeping(seg, best):
            return StepDraft(None, unknown=True, reason="a destructive action over every thing of its kind")
        draft = self._ground(best, seg, mentions, retrieval, typos)
        if unsure_verb and draft.intent and not draft.question and not draft.refusal:
            listed = ", ".join(f"{k}={v}" for k, v in draft.params.items())
            return StepDraft(draft.intent, question=f"I don't know the word '{unsure_verb}'. Did you mean "
                             f"{draft.intent.replace('_', ' ')}{' (' + listed + ')' if listed else ''}? Please confirm "
                             "or rephrase.", confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: the verb '{unsure_verb}' is unknown; a "
                                    f"{self.catalog.by_name[best].get('risk')} action is never guessed")
        if not question and not typos and draft.intent and not draft.question and not draft.refusal \
                and self.catalog.by_name[draft.intent].get("risk") == "destructive" \
                and not any(v is True for v in draft.params.values()) \
                and not self._says_destroying(text, draft.intent):
            # "give the db1 backups a 7-year legal hold" planned prune_backups (older_than_days 2555): an
            # action that can't be undone is planned only when the request says a verb of it, never because a
            # figure fits one of its params.
            listed = ", ".join(f"{k}={v}" for k, v in draft.params.items())
            return StepDraft(draft.intent, question=f"Did you mean {draft.intent.replace('_', ' ')}"
                             f"{' (' + listed + ')' if listed else ''}? It can't be undone, so say so in words "
                             f"(\"{draft.intent.split('_')[0]} ...\") and I'll plan it.",
                             confidence=min(draft.confidence, 0.4), held=True, unsaid=True,
                             reason=f"{draft.intent}: destructive, and no verb of it was said")
        so, _, acted = text.rpartition(",")
        if so and _context(so, self.starts):
            # "s-7 is stale, remove it": what is so says what the action is about; its words need not be
            # words of the node, the action's words do.
            content = [t for t in self.catalog.tokens(acted) if t != "?"] or content
        change = bool(draft.intent) and not draft.question and not draft.refusal and not question \
            and self.catalog.by_name[draft.intent or ""].get("risk") != "read"
        spelt = spell_phrases(f" {text.lower()} ")
        if change and "dryrun" in raw_tokens(spelt) and not self._said_inside(draft, "dry") \
                and not any(v is True for v in draft.params.values()) and not self._has_dry_run(draft.intent) \
                and not re.search(r"(?:\bnot|\bno|\bwithout|\bskip\w*|n't)\s+(?:\w+\s+){0,2}?dryrun\b", spelt):
            # "dry run a restore of orders from b-42": an intent with no dry run of its own set is never run for real
            # when only a rehearsal was asked.
            return StepDraft(draft.intent, question=f"{(draft.intent or '').replace('_', ' ').capitalize()} has no dry "
                             "run here: it would really run. Should I run it for real?",
                             confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: a dry run asked, and it has none")
        unused = [t for t in self._shaped_tokens(text) if not self._takes_shape(draft.intent, t)] if change else []
        if unused:
            # "bring orders back to b-9" planned a new backup: an id said that the change does not take means the
            # change is not what was asked; which action is a question.
            return StepDraft(draft.intent, question=f"What should I do with {unused[0]}? "
                             f"{(draft.intent or '').replace('_', ' ').capitalize()} does not take it.",
                             confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: {unused[0]} said, and it takes no such value")
        hedge = _HEDGE.search(text) if change else None
        if hedge and not self._said_inside(draft, hedge.group(0)):
            # "restart redis maybe": a change said as a maybe is asked, never done on a guess.
            return StepDraft(draft.intent, question=f"You said \"{hedge.group(0)}\": should I really "
                             f"{(draft.intent or '').replace('_', ' ')}? Say so and I'll plan it.",
                             confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: a change said as a maybe")
        later = _LATER_TIME.search(text) if change else None
        if later and not self._time_taken(draft, later.group(0)) and not self._said_inside(draft, later.group(0)):
            # "restart nginx at midnight", "... after the backup finishes": a change asked for later, and no param
            # of it takes when: doing it now is not what was asked.
            return StepDraft(draft.intent, question=f"I can only {(draft.intent or '').replace('_', ' ')} now, not "
                             f"{later.group(0).strip()}. Should I do it now? (Or say it without the time.)",
                             confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: asked for later ({later.group(0).strip()}), not now")
        if change and draft.intent \
                and self._only_so(acted if so and _context(so, self.starts) else text, mentions):
            # "the orders backup b-41 is corrupt": only what is so, with no action said; what to do about it is
            # asked, never guessed as a change ("X needs a renewal" asks for one).
            return StepDraft(draft.intent, question=f"What should I do about it? For example "
                             f"\"{draft.intent.replace('_', ' ')}\" — say so and I'll plan it.",
                             confidence=min(draft.confidence, 0.4), held=True,
                             reason=f"{draft.intent}: a statement with no action said")
        if not mentions and self._out_of_scope(content, draft, quoted):
            return StepDraft(None, unknown=True, reason="what the request is about is nothing this node has")
        if draft.missing and draft.missing not in (self.catalog.by_name[best].get("entities") or {}):
            # "is there an nginx process": the name said is a configured thing, so ask about that thing.
            for m in mentions:
                default = self._default_for(m.kind) if not m.ambiguous and id(m) not in weak else None
                if default and default != best and (question or self.catalog.by_name[best].get("risk") == "read"):
                    return self._ground(default, seg, mentions, 0.55, typos)
        return draft

    def _figure_asked(self, text: str, scores: dict[str, float]) -> dict[str, float]:
        """"is memory above 90 % right now?" compares a figure: the reads whose declared result has the field that
        comparison fits best answer it better than the others."""
        if not re.search(r"\d", text) or not COMPARISON_WORDS & set(re.findall(r"[a-z]+", text.lower())):
            return scores
        fits: dict[str, float] = {}
        for name, score in scores.items():
            fields = result_fields(self.catalog.by_name[name].get("result"))
            cond = compile_condition(text, fields) if score > 0 and fields else None
            if cond is not None:
                fits[name] = cond.score
        best = max(fits.values(), default=None)
        return {n: s * FIGURE_BONUS if best is not None and fits.get(n) == best else s for n, s in scores.items()}

    @functools.cached_property
    def _name_words(self) -> frozenset[str]:
        """The stemmed words of every configured name."""
        return frozenset(stem(tok) for names in self.entities.values() for n in names for tok in ex.entity_tokens(n))

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        """Every configured name and alias, lower case."""
        return frozenset(n.lower() for names in self.entities.values() for n in names) | frozenset(
            a.lower() for a in self.aliases)

    def _said_as_action(self, mention: ex.Mention, seg: ex.Segment) -> str | None:
        """A name that is itself a verb phrase, said alone ("rotate the logs" is script ``rotate-logs.sh``):
        the one intent that acts on that kind of thing, when there is exactly one."""
        if mention.ambiguous or mention.start >= len(seg.stems):
            return None
        if canonical(seg.stems[mention.start]) not in self.starts:
            return None
        acting = [t["name"] for t in self.catalog.tools if t.get("risk") != "read" and not t.get("refusal")
                  and any(self.catalog.by_name[t["name"]]["entities"].get(p) == mention.kind
                          for p in tool_required(t) if p in (t.get("entities") or {}))]
        return acting[0] if len(acting) == 1 else None

    def _out_of_scope(self, content: list[str], draft: StepDraft, quoted: bool) -> bool:
        """Most of what the request is about (its words after the verb) is unknown to every intent and is
        no value of the chosen one's params ("play some music", "create a new aws account"); ``quoted``: the
        request quotes a text (words that say how it is meant are about the quote)."""
        # After the verb; a question's verb is not its first word ("which backups failed?").
        # (A number is neither known nor unknown: "open port 22 to the world" is about the port and the world.)
        about = [t for t in (content if self._question else content[1:]) if t not in self.starts and t != "?"
                 and not t.isdigit() and t not in ex.TIME_UNITS and t not in _AMOUNT_WORDS
                 and not (quoted and t in _OF_QUOTED)]
        explained = {canonical(w) for v in draft.params.values() if isinstance(v, str)
                     for w in [*re.findall(r"[a-z0-9]+", v.lower()), *raw_tokens(v)]}
        # ... and so do the words that describe a param it filled ("from the target monitor": source is described
        # as "stats, target, log (this node's monitor) ...").
        props = ((self.catalog.by_name.get(draft.intent or "") or {}).get("params") or {}).get("properties") or {}
        explained |= {w for p in draft.params if isinstance(props.get(p), dict)
                      for w in _text_words(str(props[p].get("description", "")))}
        # Only the declarations' own words count: a word of the synonym table ("cert") is not a thing this node has.
        values = [v.lower() for v in draft.params.values() if isinstance(v, str)]
        unknown = [t for t in about if t not in self.catalog.doc_words and not t.isdigit() and t not in explained
                   # a part of a value read ("x.txt" of a path), or a path whose parts are values ("docs/old")
                   and not (len(t) > 2 and any(t in v or (len(v) > 2 and v in t.split("/")) for v in values))
                   and not any(p.fullmatch(t) for p in self._id_patterns())
                   and not ex.near_miss_any(t, self.catalog.vocabulary)]
        return bool(unknown) and 2 * len(unknown) > len(about)

    def _vague(self, content: list[str], ranked: list[tuple[str, float]], question: bool,
               typos: bool, named: bool = False) -> StepDraft | None:
        """A verb no intent knows ("handle the certificates") over a thing that has both reads and changes:
        which one is meant is a question, never a guess."""
        if question or typos or not content or not content[0].isalpha() or (
                content[0] in self.catalog.vocabulary and content[0] != "handle") or (
                # "unacknowledged alerts": a known word said as not so, not a verb
                content[0].startswith("un") and canonical(content[0][2:], self.catalog.vocabulary)
                in self.catalog.vocabulary):
            return None
        best, _ = ranked[0]
        if any(best in verbs_of(self.catalog).get(t, ()) for t in content[1:]):
            return None  # "keep the thing hushed": the best intent's own verb is said, after another word
        nouns = _name_nouns(best)
        kinds = set((self.catalog.by_name[best].get("entities") or {}).values())
        options = [n for n, sc in ranked[:6] if sc > 0 and (n == best or nouns & _name_nouns(n) or (
            named and kinds & set((self.catalog.by_name[n].get("entities") or {}).values())))]
        if named and len(options) < 2:
            options = [n for n, _ in ranked[:6]]
        # "handle" is how the catalogue spells every verb that says to do *something* ("take care of").
        if content[0] != "handle" and not any(self.catalog.by_name[n].get("risk") != "read" for n in options):
            return None
        said = [str((self.catalog.by_name[n].get("examples") or [n.replace("_", " ")])[0]) for n in options[:4]]
        return StepDraft(None, question="What should I do? For example: " + "; ".join(f'"{e}"' for e in said) + ".",
                         confidence=0.3, reason=f"'{content[0]}' says no action of this node", held=True)

    def _state_of_action(self, scores: dict[str, float], mentions: list[ex.Mention],
                         query: list[str] = ()) -> str | None:  # type: ignore[assignment]
        """A question about an action ("did the restore of orders work?") asks for the state of the thing it
        acts on: the read intent for the named thing's kind, never the action."""
        best = max(scores.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        if best is None or best[1] <= 0 or self.catalog.by_name[best[0]].get("risk") == "read":
            return None
        kinds = set((self.catalog.by_name[best[0]].get("entities") or {}).values())
        for m in mentions:
            if m.kind in kinds and not m.ambiguous:
                if "who" in query:
                    return self._action_record()  # "did anyone restart redis?" asks who did what
                # No state to read for that kind ("did the cleanup script run?"): the record of actions run.
                return self._default_for(m.kind) or self._action_record()
        return None

    def _action_record(self) -> str | None:
        """The read intent that lists the actions run on the node, found by its params: it filters by intent."""
        for tool in self.catalog.tools:
            props = (tool.get("params") or {}).get("properties") or {}
            if tool.get("risk") == "read" and not tool.get("refusal") and any(
                    "intent" in ex.field_words(p, s) for p, s in props.items() if isinstance(s, dict)):
                return str(tool["name"])
        return None

    def _unknown_reference(self, seg: ex.Segment, mentions: list[ex.Mention]) -> str | None:
        """A thing named with "the" that neither the catalogue nor the configuration knows ("the site")."""
        covered = self._busy(seg, mentions)
        # "the high-cpu rule": the first part of a hyphenated word said before a kind word is a name of that kind.
        whole = raw_tokens(seg.text)
        named = {w.split("-")[0] for j, w in enumerate(whole[:-1])
                 if "-" in w.strip("-") and whole[j + 1] in self.kinds}
        for i, tok in enumerate(seg.raw[1:], 1):
            if seg.raw[i - 1] != "the" or i in covered or tok in STOPWORDS or not tok.isalpha() or tok in _TIME_WORDS \
                    or tok in named or ex.word_number(tok) != tok:  # "the five largest": a count, no name
                continue
            if stem(tok) in self.catalog.vocabulary or canonical(tok) in self.catalog.vocabulary or tok in self.kinds:
                continue
            if ex.near_miss_any(tok, self.catalog.vocabulary):
                continue
            return tok
        return None

    def _weak(self, seg: ex.Segment, mentions: list[ex.Mention]) -> set[int]:
        """Mentions that are also plain words of the catalogue ("backup" for ``backup.sh`` on a node with
        backup intents): they stay in the query and count less."""
        out = set()
        for m in mentions:
            if m.end - m.start != 1 or m.how not in ("exact", "fuzzy") or m.start >= len(seg.keep):
                continue
            raw = seg.raw[seg.keep[m.start]]
            if raw in {n.lower() for n in m.names}:
                continue
            word = seg.stems[m.start]
            if word in self.catalog.vocabulary or (m.how == "fuzzy" and correct(word, self.catalog.vocabulary)):
                # "bakup orders" is a typo of the verb "backup", not a fuzzy name of a script backup.sh.
                out.add(id(m))
        return out

    def _refusal_message(self, name: str) -> str:
        tool = self.catalog.by_name[name]
        what = tool.get("description", name).split("(")[0].strip().rstrip(".")
        who = "an admin" if "admin" in str(tool.get("refusal")) else "an operator"
        role = self.context.role
        allowed = tool.get("allowed_when")
        if allowed:
            only = ", ".join(f"{k}={json.dumps(v)}" for k, v in allowed.items())
            return (f"{role.capitalize()}s can't do that: {name} ({what[0].lower() + what[1:]}) is a "
                    f"{tool.get('risk')} action, which your role ({role}) may run only as a read ({only}). "
                    f"Ask for that, or ask {who} to do it.")
        return (f"{role.capitalize()}s can't do that: {name} ({what[0].lower() + what[1:]}) is a {tool.get('risk')} "
                f"action, which your role ({role}) may not run. Ask {who} to do it.")

    def _default_for(self, kind: str) -> str | None:
        """The read intent a bare name of ``kind`` means ("nginx?" is its status): it needs only that name."""
        best: tuple[int, int, str] | None = None
        for tool in self.catalog.tools:
            if tool.get("risk") != "read" or tool.get("refusal"):
                continue
            ents = tool.get("entities") or {}
            required = tool_required(tool)
            if any(ents.get(p) == kind for p in required) and all(p in ents for p in required):
                # An intent whose verb is "show" ("read_log") shows the thing; another ("download_log") does
                # something else with it; then the simplest.
                shows = 0 if canonical(tool["name"].split("_")[0]) == "show" else 1
                size = len((tool.get("params") or {}).get("properties") or {})
                if best is None or (shows, size) < best[:2]:
                    best = (shows, size, tool["name"])
        return best[2] if best else None

    def _query_tokens(self, text: str, mentions: list[ex.Mention]) -> tuple[list[str], bool]:
        """Catalogue tokens of ``text`` without the names mentioned, and whether a typo was corrected."""
        seg = ex.Segment.of(text)
        names = {tok for m in mentions for n in m.names for tok in ex.entity_tokens(n)}
        names |= {n.lower() for m in mentions for n in m.names}
        # A word of a name said apart from it ("errors in the nginx error log") is a word of the request.
        dropped = {seg.keep[i] for i, s in enumerate(seg.stems) if s in names and seg.raw[seg.keep[i]] in names}
        # The kind word of an alias ("the application log") still says what kind of thing is asked about.
        covered = {seg.keep[i] for m in mentions for i in range(m.start, m.end) if i < len(seg.keep)
                   and not (m.how == "alias" and self.kinds.get(seg.stems[i]) == m.kind)}
        here = self._here(seg, covered)
        rest = " ".join(t for i, t in enumerate(seg.raw) if i not in dropped and i not in covered and i not in here)
        # A number said in words ("a dozen", "twelve") is a number, as its digits are ("one" may be a pronoun).
        fixed = [ex.word_number(t) for t in self.catalog.tokens(rest)]
        if fixed and not self._question and fixed[0] not in self.starts:
            # A request's first word is its verb: "acknowledged alert 12" (from "mark alert 12 as
            # acknowledged") asks to acknowledge, even though "acknowledged" is a word of another description.
            fixed[0] = uninflect(fixed[0], self.starts) or _short_verb_typo(fixed[0], self.starts) or fixed[0]
        if fixed and not self._question and fixed[0] in self.catalog.distinct \
                and SYNONYMS.get(fixed[0]) in self.starts and not (len(fixed) > 1 and fixed[1].isdigit()) \
                and not _said_plural(rest, fixed[0]):
            # A word kept apart from its synonym on this node ("alert" is not "notify" here) is still that
            # synonym as the verb of a request: "alert the team" notifies; "alert 12 ..." names an alert.
            fixed[0] = SYNONYMS[fixed[0]]
        if self._question:
            # "anything new in syslog?" asks for its latest state: how recent says which lines, not which intent.
            plainer = [t for t in fixed if t not in ex.RECENCY and t not in _INDEFINITE]
            fixed = plainer if plainer or mentions else fixed
        plain = [ex.word_number(t) for t in normalize(rest)]
        vocab = self.catalog.vocabulary
        typo = any(f != p and p not in vocab and not _inflected(p, f) and not _inflected(f, p)
                   for f, p in zip(fixed, plain, strict=False))
        typo = typo or any(m.how == "fuzzy" for m in mentions) or self._alias_slip(plain, mentions)
        return fixed, typo

    def _alias_slip(self, words: list[str], mentions: list[ex.Mention]) -> bool:
        """A word typed near a word of the alias of a thing named ("the kv stroe": "kv" names redis, "stroe" is
        "store" of "kv store" mistyped)."""
        named = {n for m in mentions for n in m.names}
        alias_words = {w for phrase, name in (self.aliases or {}).items() if name in named for w in raw_tokens(phrase)}
        return any(w not in alias_words and w not in self.catalog.vocabulary and correct(w, alias_words) is not None
                   for w in words if len(w) > 3 and w.isalpha())

    @staticmethod
    def _here(seg: ex.Segment, covered: set[int]) -> set[int]:
        """The words of "on this host" / "on this machine": every action runs on this node, so where says
        nothing about which one ("is mysqld running on this host" is not about the playbooks' hosts)."""
        raw = seg.raw
        end = len(raw) - 1 if raw and raw[-1] == "?" else len(raw)
        # Only at the end of the request: "on this host" closes it; "on this disk ..." may go on to say more.
        i = end - 3
        if i >= 0 and raw[i] in ("on", "at") and raw[i + 1] == "this" and i + 2 not in covered:
            return {i, i + 1, i + 2}
        return set()

    def _inherit(self, before: list[StepDraft], mentions: list[ex.Mention]) -> StepDraft | None:
        """"restart web and nginx": a bare name after a step repeats that step for the name."""
        prev = next((d for d in reversed(before) if d.intent and not d.question), None)
        if prev is None or prev.intent is None:
            return None
        tool = self.catalog.by_name[prev.intent]
        for param, kind in (tool.get("entities") or {}).items():
            hit = next((m for m in mentions if m.kind == kind and not m.ambiguous), None)
            if hit:
                params = dict(prev.params)
                params[param] = hit.names[0]
                return StepDraft(prev.intent, params, prev.confidence, reason=f"{prev.intent} again for {hit.names[0]}")
        return None

    def _rerank(self, scores: dict[str, float], seg: ex.Segment, mentions: list[ex.Mention],
                weak: set[int] = frozenset(), query: list[str] = ()) -> dict[str, float]:  # type: ignore[assignment]
        """Favour intents whose entity kinds the request names, and whose params the text fills;
        one-vs-many nouns pick a listing or one item."""
        kinds_named = {m.kind for m in mentions if id(m) not in weak}
        kinds_named |= {k for k in set(self.kinds.values()) if not self.entities.get(k)
                        and self._unlisted_name(k, seg, "", "")}
        weak_kinds = {m.kind for m in mentions if id(m) in weak}
        if ex.has_pronoun(seg) and self.last_kind:
            kinds_named.add(self.last_kind)
        singular, plural = ex.kind_nouns(seg, self.kinds)
        spoken = raw_tokens(apply_phrases(seg.text))
        # "any backup" speaks of the backups, and so does "each recent users-db backup" (a quantifier, then
        # words that say which ones).
        said = {(canonical(t), _is_plural(t) or any(w in _QUANTIFIERS for w in spoken[max(0, i - 3):i]))
                for i, t in enumerate(spoken) if t not in STOPWORDS}
        verb = _first_word(seg.text, self.catalog.vocabulary)
        verbs = verbs_of(self.catalog)
        if verb and verb not in verbs:
            # "acknowledged alert 12" (from "mark alert 12 as acknowledged") says the verb "acknowledge".
            verb = uninflect(verb, verbs) or verb
        # Only a verb few tools start with says which one ("back up" does, "show" and "check" don't).
        verb_tools = verbs.get(verb or "", set())
        if len(verb_tools) > 2:
            verb_tools = set()
        verb_is_noun = any(verb in _name_nouns(t["name"]) for t in self.catalog.tools)
        change = self._change = self._asks_change(seg, verb, verbs, verb_is_noun)
        objects = self._objects(seg, mentions)
        distinct = {t for t in query if t != "?"}
        # "every 6 hours", or a repetition said without how often ("periodic snapshots": which interval is asked).
        repeated = any(q.every for q in ex.quantities(seg.text)) or bool(set(seg.raw) & _REPEATED)
        words = set(seg.raw)
        about_many = bool(words & _QUANTIFIERS) or any(
            p for n, p in said if p and any(n in _name_nouns(t["name"]) for t in self.catalog.tools))
        out: dict[str, float] = {}
        #: Per candidate, the texts its required params read, and those its options read when it read nothing else.
        texts: dict[str, tuple[set[str], set[str]]] = {}
        # Only the best candidates are re-ranked (reading every tool's params costs time, not accuracy).
        top = sorted((kv for kv in scores.items() if kv[1] > 0), key=lambda kv: (-kv[1], kv[0]))[:RERANK_TOP]
        # The intents that take a thing the request names are candidates however few of its words they share.
        chosen = {n for n, _ in top}
        floor = 0.1 * top[0][1] if top else 0.0
        top += [(t["name"], max(scores.get(t["name"], 0.0), floor)) for t in self.catalog.tools
                if t["name"] not in chosen and kinds_named & set((t.get("entities") or {}).values())]
        # ... and so are those a value of a declared id shape said ("wipe b-700": only a backup id looks so).
        chosen = {n for n, _ in top}
        shaped = self._shaped_values(seg.text)
        top += [(name, max(scores.get(name, 0.0), floor, 0.5)) for name in shaped if name not in chosen]
        for name, score in top:
            tool = self.catalog.by_name[name]
            props = (tool.get("params") or {}).get("properties") or {}
            ents = tool.get("entities") or {}
            required = tool_required(tool)
            takes_interval = any(ex.is_interval(p, s) for p, s in props.items() if isinstance(s, dict))
            values = {p: v for p in props if p not in ents
                      and (v := self._fill_value(tool, p, seg, mentions, p in required)) is not None}
            values.update(_inside(props, seg.text, ents))
            for p in _read_twice(values, required):
                del values[p]  # one word read as two things fills neither ("delete the folder tmp")
            filled = set(values)
            options = {v for p, v in values.items() if isinstance(v, str) and p not in required}
            # Only a candidate that read nothing but such options ("the last 100 lines ... containing x" is a read).
            texts[name] = ({v for p, v in values.items() if isinstance(v, str) and p in required},
                           options if len(options) == len(values) else set())
            if distinct:
                # A tool that covers every word asked ("disk and memory") beats one that covers a part; a
                # word one of its params takes ("warnings" as the text to look for) is covered by it.
                explained = {canonical(w) for v in values.values() if isinstance(v, str)
                             for w in re.findall(r"[a-z0-9]+", v.lower())}
                score *= 0.6 + 0.4 * self.catalog.coverage(name, distinct, explained)
            kinds = set(ents.values())
            req_kinds = {k for p, k in ents.items() if p in required}
            if kinds & kinds_named:
                score *= 1.6
            elif kinds & weak_kinds:
                score *= 1.15
            elif req_kinds and kinds_named:
                score *= 0.5
            elif kinds_named and not kinds:
                score *= NOT_TAKING_NAMED  # it can't take the thing the request names
            if req_kinds & plural and not req_kinds & kinds_named and not req_kinds & singular:
                score *= 0.6
            elif req_kinds & singular and not kinds_named:
                score *= 1.3  # "the log": one thing of the kind it takes (which one is then asked)
            # "the backups" wants list_backups, "the backup" wants one backup's intent; a tool that
            # can take one such thing as a param ("search_logs" over the app log) is not a listing.
            for tok in tool["name"].split("_"):
                norm, many = canonical(tok), _is_plural(tok)
                if (norm, many) in said:
                    score *= 1.5 if many else 1.1
                    if self._unique_name_word(norm):
                        score *= UNIQUE_NAME_WORD  # "on telegram": a word only this intent's name has
                elif (norm, not many) in said and not (many and norm in kinds):
                    score *= 0.6 if many else 0.8
            if name in verb_tools:
                score *= 1.3
            elif tool.get("risk") != "read" and verb in _REMOVAL and not self._removes(name):
                # A verb of removal for a change that removes nothing: "remove one of the X backups" is never a new
                # backup, whatever else fits.
                score *= FOREIGN_VERB
            elif tool.get("risk") != "read" and not verb_is_noun and not (repeated and takes_interval) and any(
                    _name_nouns(other) & _name_nouns(name) for other in verb_tools) and not any(
                    (canonical(t), False) in said and self._unique_name_word(canonical(t)) for t in name.split("_")):
                # The verb of another action on the same thing: "cancel the cleanup run" is never the run itself
                # (a frequency said still picks the one that repeats: "take a backup of orders once a day").
                score *= OTHER_VERB
            other_object = bool(objects - self.catalog.terms(name))
            if other_object:
                score *= OTHER_OBJECT  # "how long has this box been up": the box is no managed service
            if tool.get("risk") != "read" and self._opposite(verb, name):
                continue  # "stop backing up orders" never starts a backup, whatever else fits
            if change and tool.get("risk") == "read":
                score *= CHANGE_OVER_READ  # "run a backup of orders" starts one; it does not read the last one
            if any(p not in ents and p not in filled and not _composable(p, tool) for p in required):
                score *= MISSING_PENALTY
            elif req_kinds and not req_kinds & (kinds_named | weak_kinds) and not ex.has_pronoun(seg):
                # The one thing it needs is not named; "any backup" / "our certificates" asks about many.
                # Nor is it when the request points at something else ("the server").
                score *= 0.5 if about_many or other_object else 0.8
            if repeated and not takes_interval:
                # "once a day" asks for something repeated: an intent with no interval can't, and a change that
                # happens once is the least likely ("back it up periodically" is no backup now).
                score *= 0.3 if tool.get("risk") != "read" else 0.5
            for p in filled:
                spec = props[p] if isinstance(props.get(p), dict) else {}
                if p not in required and ex.enum_of(spec) and "default" in spec:
                    continue  # "memory" as a sort order is a word of the request already counted, not more evidence
                score *= DISTINCT_BONUS if ex.distinctive(p, spec) else REQUIRED_BONUS if p in required else FILL_BONUS
            out[name] = score
        return _made_for(out, texts)

    def _objects(self, seg: ex.Segment, mentions: list[ex.Mention]) -> set[str]:
        """The things the request points at with "this" / "the" ("this box", "the server"), as catalogue
        words: not a configured name, a kind of configured thing, a time ("the last hour") or a stopword."""
        busy = self._busy(seg, mentions)
        out = set()
        for i, tok in enumerate(seg.raw[1:], 1):
            if seg.raw[i - 1] not in ("this", "the", "that") or i in busy or tok in STOPWORDS or not tok.isalpha() \
                    or tok in _TIME_WORDS or tok in self.kinds or stem(tok) in self.kinds:
                continue
            word = canonical(tok, self.catalog.vocabulary, self.catalog.distinct)
            if word in self.catalog.vocabulary and word not in self.kinds:
                out.add(word)
        return out

    def _sweeping(self, seg: ex.Segment, name: str) -> bool:
        """A destructive intent asked for over every thing it acts on ("restore every database from last
        week"): each of its runs acts on one thing, and doing them all is for a person to decide."""
        tool = self.catalog.by_name[name]
        if tool.get("risk") != "destructive":
            return False
        things = set((tool.get("entities") or {}).values()) | _name_nouns(name)
        raw = seg.raw
        for i, tok in enumerate(raw):
            if tok in ("every", "all", "each"):
                after = [w for w in raw[i + 1:i + 3] if w not in ("the", "of", "our", "my")][:1]
                if after and (self.kinds.get(after[0]) in things or canonical(after[0]) in things):
                    return True
        return False

    def _has_dry_run(self, intent: str | None) -> bool:
        """Whether ``intent`` has a flag for a run that changes nothing (its name or description says dry run)."""
        props = (self.catalog.by_name.get(intent or "", {}).get("params") or {}).get("properties") or {}
        return any(isinstance(spec, dict) and ex.json_type(spec) == "boolean" and "dryrun" in raw_tokens(spell_phrases(
            f" {p.replace('_', ' ')} {spec.get('description', '')} ".lower())) for p, spec in props.items())

    @staticmethod
    def _said_inside(draft: StepDraft, said: str) -> bool:
        """Whether ``said`` is part of a text param's value ("post 'maintenance at 5'"): text to send."""
        return any(said.lower() in v.lower() for value in draft.params.values()
                   for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))

    def _time_taken(self, draft: StepDraft, said: str) -> bool:
        """Whether a param of the draft's intent takes the time ``said`` (a number of minutes read from it)."""
        props = (self.catalog.by_name[draft.intent or ""].get("params") or {}).get("properties") or {}
        timed = [p for p, spec in props.items() if isinstance(spec, dict) and ex.field_unit(p, spec) is not None]
        return bool(timed) and any(q.minutes is not None for q in ex.quantities(said)) \
            and any(p in draft.params for p in timed)

    def _only_so(self, text: str, mentions: list[ex.Mention]) -> bool:
        """``text`` only says what is so: it starts with its subject (a determiner, a configured name or an id),
        then a verb of being ("the orders backup b-41 is corrupt"); no verb of its own says to act."""
        words = raw_tokens(text)
        if not words or not _BEING.search(text):
            return False
        first = words[0]
        named = {t for m in mentions for n in m.names for t in (n.lower(), *ex.entity_tokens(n))}
        return first in _SUBJECT_START or first in named or any(p.fullmatch(first) for p in self._id_patterns())

    def _unique_name_word(self, word: str) -> bool:
        """Whether ``word`` is a word of exactly one intent's name and names no kind of thing ("telegram")."""
        counts = self.catalog.__dict__.get("_name_word_counts")
        if counts is None:
            counts = {}
            for t in self.catalog.tools:
                for w in {canonical(tok) for tok in t["name"].split("_")}:
                    counts[w] = counts.get(w, 0) + 1
            self.catalog.__dict__["_name_word_counts"] = counts
        return counts.get(word) == 1 and word not in self.kinds and len(word) > 3

    @staticmethod
    def _plain_verb(word: str) -> bool:
        """A common English verb of doing (or an adverb in -ly before one): said first, it asks for an action even
        when no intent's declarations use it ("make a fresh backup", "keep only the last 14 days")."""
        return word in _PLAIN_VERBS or uninflect(word, _PLAIN_VERBS) is not None or word.endswith("ly")

    def _says_destroying(self, text: str, name: str) -> bool:
        """Whether ``text`` says a verb of what destructive intent ``name`` does: its name's or an example's first
        word, a verb of clearing or of putting back, and a verb of removal only if ``name`` removes (each as the
        phrase and synonym tables spell it): "b-42 can be deleted" is no reason to restore b-42."""
        tool = self.catalog.by_name[name]
        own = {canonical(name.split("_")[0])} | {canonical(f) for e in tool.get("examples") or ()
                                                 if (f := _first_word(e))}
        said = {canonical(t) for t in raw_tokens(apply_phrases(text))} | {
            canonical(root) for t in raw_tokens(text) for root in (t, stem(t), t[:-1], t[:-2], t[:-3]) if len(root) > 2}
        if said & (own | _CLEARING) or _PUT_BACK_SAID.search(text) is not None:
            return True
        return self._removes(name) and (bool(said & {canonical(w) for w in _REMOVAL} | said & _REMOVAL)
                                        or _MAY_GO.search(text) is not None or _REMOVAL_SAID.search(text) is not None)

    def _removes(self, name: str) -> bool:
        """Whether intent ``name`` removes something: a verb of removal is its name's or an example's first word, or
        its description's."""
        tool = self.catalog.by_name[name]
        own = {canonical(name.split("_")[0]), _first_word(str(tool.get("description", "")))} | {
            f for e in tool.get("examples") or () if (f := _first_word(e))}
        return bool(own & _REMOVAL)

    def _noun_phrase(self, text: str, mentions: list[ex.Mention]) -> bool:
        """``text`` names a thing and says no verb: it starts with a determiner, a word of time or order, or a
        configured name, and no later word is an action word that is not also a noun of an intent's name."""
        if re.search(r"[,:;]", text) or _BEING.search(text) or re.search(
                r"\b(?:needs?|can\s+go|should|must|every|each|now|asap|immediately)\b", text, re.I) or any(
                q.every for q in ex.quantities(text)):
            return False  # ("X needs renewing", "X every 10 minutes", "X backup now": what is wanted of it)
        words = raw_tokens(text)
        if not words:
            return False
        named = {t for m in mentions for n in m.names for t in (n.lower(), *ex.entity_tokens(n))}
        first = words[0]
        if canonical(first) in self.starts and first not in named:
            return False
        if not (first in _SUBJECT_START or first in _TIME_WORDS or first in _NOT_VERBS or first in named):
            return False
        nouns = self.catalog.__dict__.get("_all_name_nouns")
        if nouns is None:
            nouns = self.catalog.__dict__["_all_name_nouns"] = {w for t in self.catalog.tools
                                                                 for w in _name_nouns(t["name"])}
        return not any(canonical(w) in self.starts and canonical(w) not in nouns and w not in named
                       for w in words[1:])

    def _excluded(self, seg: ex.Segment, mentions: list[ex.Mention]) -> set[int]:
        """The mentions said right after a word of exclusion ("except redis", "all but nginx")."""
        out: set[int] = set()
        for m in _EXCLUSION.finditer(seg.text):
            left_out = ex.find_mentions(ex.Segment.of(m.group(0)), self.entities, self.aliases)
            names = {n for lm in left_out for n in lm.names}
            out |= {id(x) for x in mentions if set(x.names) & names}
        return out

    def _takes_shape(self, intent: str | None, token: str) -> bool:
        """Whether a param of ``intent`` has a declared pattern ``token`` matches."""
        props = (self.catalog.by_name.get(intent or "", {}).get("params") or {}).get("properties") or {}
        for spec in props.values():
            pattern = ex.pattern_of(spec) if isinstance(spec, dict) else None
            try:
                if pattern and re.fullmatch(pattern, token):
                    return True
            except re.error:
                continue
        return False

    def _shaped_tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` of a specific id shape some param declares ("b-9")."""
        return [t for t in re.findall(r"[\w][\w.\-]*", text) if any(p.fullmatch(t) for p in self._id_patterns())]

    def _shaped_values(self, text: str) -> list[str]:
        """The intents with a param of a specific declared shape ("b-42") that a token of ``text`` has."""
        shapes = self.catalog.__dict__.get("_shapes")
        if shapes is None:
            shapes = []
            for tool in self.catalog.tools:
                for param, spec in ((tool.get("params") or {}).get("properties") or {}).items():
                    if isinstance(spec, dict) and ex.json_type(spec) == "string" and ex.distinctive(param, spec):
                        pattern = ex.pattern_of(spec)
                        try:
                            shapes.append((tool["name"], re.compile(pattern or "")))
                        except re.error:
                            continue
            self.catalog.__dict__["_shapes"] = shapes
        if not shapes:
            return []
        tokens = set(re.findall(r"[\w][\w.\-]*", text))
        return list(dict.fromkeys(name for name, rx in shapes if any(rx.fullmatch(t) for t in tokens)))

    def _opposite(self, verb: str | None, name: str) -> bool:
        """Whether the request's verb is the opposite of one of intent ``name``'s own verbs (its name's
        and its examples' first words) and not one of them: "stop" for ``start_backup``."""
        opposite = _OPPOSITES.get(verb or "")
        if not opposite:
            return False
        tool = self.catalog.by_name[name]
        own = {canonical(name.split("_")[0])} | {f for e in tool.get("examples") or () if (f := _first_word(e))}
        return bool(opposite & own) and verb not in own

    def _asks_change(self, seg: ex.Segment, verb: str | None, verbs: dict[str, set[str]], verb_is_noun: bool) -> bool:
        """Whether an imperative request asks for a change rather than a reading: its verb is one that only
        changes start with in the examples ("run", "start"), or it asks for "a new" / "a fresh" thing
        ("get a fresh cert for ..."), which no reading gives. ``verb_is_noun``: the verb is also a noun of an
        intent's name ("backup" of list_backups), so it may name the thing rather than act on it."""
        if self._question:
            return False
        if verb in _CHANGE_VERBS:
            return True  # "change the backup frequency": what it changes is a setting, never a reading
        tools = [self.catalog.by_name[n] for n in verbs.get(verb or "", ()) if n in self.catalog.by_name]
        if tools and not verb_is_noun and all(t.get("risk") != "read" for t in tools):
            return True
        return bool(_A_NEW.search(seg.text))

    def _fill_value(self, tool: dict[str, Any], param: str, seg: ex.Segment, mentions: list[ex.Mention],
                    required: bool = True) -> Any:
        """The value the text gives ``param`` of ``tool`` (``None``: none, or only its default)."""
        spec = ((tool.get("params") or {}).get("properties") or {}).get(param) or {}
        reading = self._reading(seg, mentions)
        value = ex.read_value(param, spec if isinstance(spec, dict) else {}, reading, required=required,
                              known_words=self._known(tool))
        return None if value == (spec or {}).get("default", object()) else value

    def _reading(self, seg: ex.Segment, mentions: list[ex.Mention]) -> ex.Reading:
        return ex.Reading(seg, self._busy(seg, mentions), vocabulary=self._described(),
                          id_patterns=self._id_patterns(), intent_names=self.catalog.by_name.keys())

    def _described(self) -> set[str]:
        """Words of the tools' names and descriptions (not their examples, which name instances such as
        "python"): what the node's actions are about (cached on the catalogue)."""
        cached = self.catalog.__dict__.get("_described")
        if cached is None:
            cached = self.catalog.__dict__["_described"] = {
                w for t in self.catalog.tools
                for w in normalize(f"{t['name'].replace('_', ' ')} {t.get('description', '')}")} | set(SYNONYMS)
        return cached

    def _id_patterns(self) -> tuple[re.Pattern[str], ...]:
        """The specific id patterns the catalogue's params declare (cached on the catalogue)."""
        cached = self.catalog.__dict__.get("_id_patterns")
        if cached is None:
            found: set[str] = {pattern for t in self.catalog.tools
                     for p, spec in ((t.get("params") or {}).get("properties") or {}).items()
                     if isinstance(spec, dict) and ex.distinctive(p, spec) and ex.json_type(spec) == "string"
                     and (pattern := ex.pattern_of(spec))}
            cached = self.catalog.__dict__["_id_patterns"] = tuple(re.compile(p) for p in sorted(found))
        return cached

    def _busy(self, seg: ex.Segment, mentions: list[ex.Mention]) -> set[int]:
        return {seg.keep[i] for m in mentions for i in range(m.start, m.end) if i < len(seg.keep)}

    def _known(self, tool: dict[str, Any]) -> set[str]:
        """Words that say which intent (never a free-text value): the tool's own words and action verbs."""
        cache: dict[tuple[str, frozenset[str]], set[str]] = self.catalog.__dict__.setdefault("_known_words", {})
        key = (tool["name"], frozenset(self.kinds))
        known = cache.get(key)
        if known is None:
            # ... and its params' names: "by user carol" names the param ``user``, whose value is carol (a
            # flag's name is a modifier said, so it stays a word the text may use as one).
            props = (tool.get("params") or {}).get("properties") or {}
            named = [p.replace("_", " ") for p, spec in props.items()
                     if isinstance(spec, dict) and ex.json_type(spec) != "boolean"]
            said = " ".join([tool["name"].replace("_", " "), tool.get("description", ""), *named]).lower()
            words = {stem(w) for w in re.findall(r"[a-z]+", said)}
            # ... and plain English verbs of doing ("clean it up" names no process "clean"), but for the tool's
            # flags ("force restore ...": the flag ``force`` is said).
            flags = {w for p, spec in props.items() if isinstance(spec, dict) and ex.json_type(spec) == "boolean"
                     for w in p.split("_")}
            known = cache[key] = words | self.starts | set(self.kinds) | {canonical(w) for w in words} | (
                _PLAIN_VERBS - flags)
        return known

    # --- params ----------------------------------------------------------------------------

    def _said_before(self, param: str, spec: Any, seg: ex.Segment) -> Any:
        """The value an earlier step of this request gave ``param`` (of the same type), when ``seg`` points back
        at it with a pronoun; else ``None``."""
        if not isinstance(spec, dict) or not ex.has_pronoun(seg):
            return None
        for earlier in reversed(self._before):
            if earlier.intent is None or param not in earlier.params:
                continue
            earlier_spec = ((self.catalog.by_name[earlier.intent].get("params") or {}).get("properties") or {}).get(
                param)
            if isinstance(earlier_spec, dict) and ex.json_type(earlier_spec) == ex.json_type(spec):
                return earlier.params[param]
            return None
        return None

    def _refused(self, name: str) -> bool:
        """Whether the caller's role may not run ``name`` with any params (not even as a read)."""
        tool = self.catalog.by_name[name]
        return bool(tool.get("refusal")) and not tool.get("allowed_when")

    def _ground(self, intent: str, seg: ex.Segment, mentions: list[ex.Mention], retrieval: float,
                typos: bool) -> StepDraft:
        """Fill ``intent``'s params from the segment; a question when a required one is missing; a refusal when
        the caller's role may not run it (or may, but only with params the request does not give)."""
        tool = self.catalog.by_name[intent]
        if self._refused(intent):
            return StepDraft(intent, refusal=self._refusal_message(intent), confidence=0.9)
        draft = self._ground_params(intent, seg, mentions, retrieval, typos)
        allowed = tool.get("allowed_when") if tool.get("refusal") else None
        if allowed and not reads_with(allowed, draft.params):
            # "run users.yml" from a viewer, who may run it only as a dry run: refused, never quietly a dry run.
            return StepDraft(intent, refusal=self._refusal_message(intent), confidence=0.9)
        return draft

    def _ground_params(self, intent: str, seg: ex.Segment, mentions: list[ex.Mention], retrieval: float,
                       typos: bool) -> StepDraft:
        tool = self.catalog.by_name[intent]
        props = (tool.get("params") or {}).get("properties") or {}
        required = tool_required(tool)
        entity_params = tool.get("entities") or {}
        params: dict[str, Any] = {}
        grounded = 1.0
        reasons = []
        reading = self._reading(seg, mentions)
        known = self._known(tool)
        for param, spec in props.items():
            if param in entity_params:
                kind = entity_params[param]
                value, how, question = self._entity(kind, seg, mentions, intent, param in required, param)
                if question:
                    return StepDraft(intent, question=question, confidence=retrieval, reason=f"{intent}: {how}",
                                     held=True)
                if value is not None:
                    params[param] = value
                    if how != "named":
                        grounded = min(grounded, 0.8)
                        reasons.append(f"{param}={value} ({how})")
                continue
            value = ex.read_value(param, spec if isinstance(spec, dict) else {}, reading,
                                  required=param in required, known_words=known)
            if value is not None:
                params[param] = value
        params.update(_inside(props, seg.text, entity_params))
        twice = _read_twice(params, required, entity_params)
        if twice:
            # One word read as two different things ("delete the folder tmp": root and folder both "tmp"):
            # the text does not say them apart, so which is which is a question, never a guess.
            return StepDraft(intent, question=_question(tool, twice[0], self.entities), confidence=retrieval,
                             reason=f"{intent}: one word read as several params", missing=twice[0], held=True)
        for param in required:
            inherited = self._said_before(param, props.get(param), seg) if param not in params else None
            if inherited is not None:
                # "ack alert 8 and silence it for 20 minutes": "it" is alert 8, the id of the step before.
                params[param] = inherited
                grounded = min(grounded, 0.8)
                reasons.append(f"{param}={inherited} (as the step before)")
        for param in required:
            if param not in params and not _composable(param, tool):
                return StepDraft(intent, question=_question(tool, param, self.entities),
                                 confidence=retrieval, reason=f"{intent}: {param} is missing", missing=param,
                                 held=True)
        confidence = max(0.0, min(1.0, retrieval + 0.3 * grounded))
        if typos and tool.get("risk") != "read":
            said = ", ".join(f"{k}={v}" for k, v in params.items())
            return StepDraft(intent, question=f"Did you mean {intent.replace('_', ' ')}"
                                              f"{' (' + said + ')' if said else ''}? Please confirm or rephrase.",
                             confidence=min(confidence, 0.4), held=True,
                             reason=f"{intent}: a typo led to a {tool.get('risk')} action")
        return StepDraft(intent, params, confidence, reason="; ".join(reasons))

    def _entity(self, kind: str, seg: ex.Segment, mentions: list[ex.Mention], intent: str,
                required: bool, param: str = "") -> tuple[str | None, str, str | None]:
        """(value, how it was found, question) for an entity-kind param."""
        if not self.entities.get(kind):
            said = self._unlisted_name(kind, seg, intent, param)
            if said:
                return said, "named", None
        of_kind = [m for m in mentions if m.kind == kind]
        names: list[str] = []
        for m in of_kind:
            for n in m.names:
                if n not in names:
                    names.append(n)
        if len(names) == 1:
            return names[0], "named" if of_kind[0].how != "alias" else "alias", None
        if len(names) > 1:
            return None, "ambiguous", f"Which {kind} do you mean: {_either(names)}?"
        if kind in self.last and (ex.has_pronoun(seg) or (required and self._is_followup(seg, kind))):
            return self.last[kind], "from earlier in the request", None
        if ex.has_pronoun(seg):
            earlier = self._from_history(kind)
            if earlier:
                return earlier, "from the conversation", None
        if required:
            return None, "missing", _question(self.catalog.by_name[intent], None, self.entities, kind)
        return None, "not given", None

    def _unlisted_name(self, kind: str, seg: ex.Segment, intent: str, param: str) -> str | None:
        """The name of a thing of a kind the configuration lists none of ("the high-cpu rule" on a node whose
        rules are files): a token right before or after the kind word that fits the param's pattern."""
        tool = self.catalog.by_name.get(intent) or {}
        spec = ((tool.get("params") or {}).get("properties") or {}).get(param) or {}
        pattern = ex.pattern_of(spec) if isinstance(spec, dict) else None
        described = self._described()
        raw = raw_tokens(seg.text)  # unsplit: "high-cpu" is one name
        for i, tok in enumerate(raw):
            if self.kinds.get(tok) != kind:
                continue
            for j in (i - 1, i + 1):
                if not 0 <= j < len(raw):
                    continue
                cand = raw[j]
                if cand in STOPWORDS or cand in self.kinds or canonical(cand) in described:
                    continue
                if not re.search(r"[-\d]", cand):
                    continue  # an id has a hyphen or a digit ("high-cpu", "r2"); a plain word is a word
                try:
                    if pattern and not re.fullmatch(pattern, cand):
                        continue
                except re.error:
                    continue
                return cand
        return None

    def _is_followup(self, seg: ex.Segment, kind: str | None = None) -> bool:
        """A continuation such as "tell me when healthy" that names nothing of its own (of ``kind``, when given:
        "if X was not rotated in a day, rotate it" names another kind's word, not another X)."""
        found = ex.find_mentions(seg, self.entities, self.aliases)
        if kind is not None:
            found = [m for m in found if m.kind == kind]
        return not found and bool(self.last)

    def _from_history(self, kind: str) -> str | None:
        for turn in reversed(self.context.history[-6:]):
            found = ex.find_mentions(ex.Segment.of(turn.get("content", "")), {kind: self.entities.get(kind, [])},
                                     self.aliases)
            names = [m.names[0] for m in found if not m.ambiguous]
            if names:
                return names[-1]
        return None


def _made_for(scores: dict[str, float], texts: dict[str, tuple[set[str], set[str]]]) -> dict[str, float]:
    """``scores`` with an intent that takes the request's only text as an option made less likely when
    another requires exactly that text: the one made for it ("lines of the app log that mention 'checkout'"
    searches for it; reading the log's last lines with a filter is the other's option)."""
    required = {v for needs, _ in texts.values() for v in needs}
    for name, (needs, options) in texts.items():
        if name in scores and not needs and options and options <= required:
            scores[name] *= OPTION_OF_ANOTHER
    return scores


def _inside(props: dict[str, Any], text: str, entity_params: dict[str, str]) -> dict[str, Any]:
    """A relative path said for two params, one described as inside the other ("folder inside the root"):
    "what is in docs/old" is the root ``docs`` and the folder ``old`` in it."""
    for inner, spec in props.items():
        if not isinstance(spec, dict) or ex.json_type(spec) != "string" or inner in entity_params:
            continue
        desc = str(spec.get("description", "")).lower()
        outer = next((p for p in props if p != inner and p not in entity_params and isinstance(props[p], dict)
                      and ex.json_type(props[p]) == "string" and re.search(rf"\binside\s+(?:the\s+)?{p}\b", desc)),
                     None)
        if outer is None:
            continue
        said = re.search(r"(?<![\w./\-])([A-Za-z0-9_][\w.\-]*)/([\w.\-][\w.\-/]*)", text)
        if said is None:
            continue
        rest = said.group(2).rstrip("/.,?!")
        if re.search(r"\.[a-z0-9]{1,5}$", rest, re.I) or re.search(r"(?<![\w/])[\w\-]+\.[a-z0-9]{1,5}(?![\w/])",
                                                                  text[:said.start()] + text[said.end():], re.I):
            return {}  # a file is named ("x.csv under a/b", "a/b/x.txt"): no folder inside a root is meant
        return {outer: said.group(1), inner: rest}
    return {}


def _id_shape(param: str, spec: Any) -> str | None:
    """The pattern of a param that is an id: a declared id pattern ("b-42"), or a number named as an id."""
    if not isinstance(spec, dict):
        return None
    if ex.json_type(spec) == "string" and ex.distinctive(param, spec):
        return ex.pattern_of(spec)
    if ex.json_type(spec) == "integer" and "id" in ex.field_words(param, spec):
        return r"\d+"
    return None


def _listed_ids(text: str, pattern: str, joiner: str = "and") -> list[str]:
    """The distinct values of ``pattern`` said as a list from the first one on ("b-4 and b-5", "b-4, b-5 & b-6"),
    in order; ``[]`` when fewer than two are listed so (two ids said apart, "restore X from b-4, not b-5")."""
    try:
        found = [m for m in re.finditer(r"[\w][\w.\-]*", text) if re.fullmatch(pattern, m.group(0))]
    except re.error:
        return []
    out: list[str] = []
    for i, m in enumerate(found):
        between = text[found[i - 1].end():m.start()] if i > 0 else ""
        joined = i > 0 and (re.fullmatch(r"\s*(?:,\s*and|,|and|&|plus)\s*", between, re.I) if joiner == "and"
                            else re.fullmatch(r"\s*(?:,\s*or|,|or)\s*(?:[a-z]+\s+)?", between, re.I))
        if i > 0 and not joined:
            break  # the list ends ("alerts 5 and 6 for 30 minutes")
        if m.group(0) not in out:
            out.append(m.group(0))
    return out if len(out) >= 2 else []


def _read_twice(params: dict[str, Any], required: Iterable[str], skip: Container[str] = ()) -> list[str]:
    """The required params (in ``required``'s order, leaving out ``skip``) read as a text some other
    required param was read as too."""
    read = [p for p in required if p in params and p not in skip and isinstance(params[p], str)]
    texts = [params[p] for p in read]
    return [p for p in read if texts.count(params[p]) > 1]


def _short_verb_typo(word: str, starts: set[str]) -> str | None:
    """A three-letter first word that is an action verb of four with a letter missing ("lok for ..." is "look
    for ..."): the one such verb, in its catalogue spelling."""
    if len(word) != 3 or not word.isalpha():
        return None
    verbs = {w for w in starts if len(w) == 4} | {w for w, syn in SYNONYMS.items() if len(w) == 4 and syn in starts}
    found = {SYNONYMS.get(v, v) for v in verbs if ex.letter_missing(word, v)}
    return found.pop() if len(found) == 1 else None


def _substituted(word: str, words: Iterable[str]) -> str | None:
    """The word of ``words`` that ``word`` is with one letter after the first changed ("ptune" for "prune")."""
    if len(word) < 4 or not word.isalpha():
        return None
    for cand in words:
        if len(cand) == len(word) and cand[0] == word[0] and cand != word \
                and sum(a != b for a, b in zip(cand, word, strict=True)) == 1:
            return cand
    return None


def _name_nouns(name: str) -> set[str]:
    """What an intent's name is about (``renew_cert`` -> ``{"certificate"}``)."""
    return set(_name_nouns_of(name))


@functools.lru_cache(maxsize=1024)
def _name_nouns_of(name: str) -> frozenset[str]:
    return frozenset(canonical(tok) for tok in name.split("_")[1:])


def _inflected(said: str, word: str) -> bool:
    """``said`` is ``word`` with an ending ("renewing" is "renew"), not a typo of it."""
    if not word:
        return False
    stems = {word, word[:-1] if word.endswith("e") else word}
    forms = {s + end for s in stems for end in ("ing", "ed", "es", "s", "er", "d")}
    forms |= {word + word[-1] + end for end in ("ed", "ing", "er")}  # "stopped", "running": the consonant doubled
    if word.endswith("y"):
        forms |= {word[:-1] + "ied", word[:-1] + "ies"}  # "retried"
    return said in forms


@functools.lru_cache(maxsize=1024)
def _text_words(text: str) -> frozenset[str]:
    """The normalised words of a declaration's text (cached: the same descriptions are read for every request)."""
    return frozenset(normalize(text))


def _said_plural(text: str, word: str) -> bool:
    """The first word of ``text`` that is no stopword is ``word`` said in the plural ("alerts from ..." names
    alerts; only "alert the team" is the verb)."""
    first = [t for t in raw_tokens(text) if t not in STOPWORDS][:1]
    return bool(first) and first[0] != word and _is_plural(first[0]) and stem(first[0]) == word


def _is_plural(word: str) -> bool:
    return len(word) > 3 and word.endswith("s") and stem(word) != word


def _composable(param: str, tool: dict[str, Any]) -> bool:
    """A required text the planner may write itself: the message a notification sends."""
    spec = ((tool.get("params") or {}).get("properties") or {}).get(param) or {}
    words = ex.field_words(param, spec)
    return ex.json_type(spec) == "string" and "send" in words and tool.get("risk") != "destructive"


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _question(tool: dict[str, Any], param: str | None, entities: dict[str, list[str]], kind: str | None = None) -> str:
    """A concrete question for a missing param, listing the configured choices when there are some."""
    if kind:
        names = entities.get(kind) or []
        choices = f": {_either(names)}" if names else ""
        return f"Which {kind} for {tool['name'].replace('_', ' ')}{choices}?"
    spec = ((tool.get("params") or {}).get("properties") or {}).get(param or "") or {}
    what = str(spec.get("description") or (param or "").replace("_", " "))
    return f"{tool['name'].replace('_', ' ').capitalize()} needs {what}: what should I use?"


def _compose_message(text: str, earlier: list[tuple[str, dict[str, Any]]]) -> str:
    """A notification text when the user gave none: what was asked, and what ran before it."""
    if earlier:
        done = ", ".join(name + "".join(f" {v}" for v in p.values() if isinstance(v, str)) for name, p in earlier)
        return f"CloudiSENSE: {done} done (requested: {text.strip()[:200]})"
    return f"CloudiSENSE: {text.strip()[:300]}"


__all__ = ["SegmentPlanner", "StepDraft", "is_question", "split_request"]
