"""The offline planner: no model at all.

Its knowledge comes only from the registry (each intent's description, examples, params
JSON-schema, entity kinds, result shape and risk) and the configuration (entity names, aliases).
How a request becomes a plan (deterministic, about a millisecond):

1. **Small talk** ("help", "thanks", "hello", "quit"): ``answer``, never an action or an escalation.
2. **Escalation rules** (:func:`danger`) on the whole request: shell commands (``rm -rf``,
   ``mkfs``, ``sudo``, ``DROP TABLE``...), a destructive verb with a sweeping object
   ("delete *all* the servers"), restarting the whole machine ("reboot the whole server"), or
   privilege/guard-rail changes ("give the intern root"): ``escalate``.
3. **Split** into segments on sequencing words ("then", ";", "after that") and on "and" / ","
   when what follows starts with an action verb (the first words of the intents' examples) or
   is only an entity; each segment's "if ..." clause is its condition.
4. Per segment, **retrieval** (BM25 over each tool's name, description, examples without the
   configured names they mention, params' descriptions and result fields, see :mod:`.catalog`),
   re-ranked by the entities the segment names, by one-vs-many nouns ("the backup" vs "the
   backups", "any backup"), and by what the text fills: a value of a declared id pattern
   ("b-42") or a frequency ("once a day") says which intent more than a free word does. A
   question about state ("when did X run?", "is X up?") only ever picks a read intent, while an
   imperative that asks for a change (a verb only changes start with, "a new" / "a fresh" thing)
   prefers a change; a change whose own verb is the request's verb's opposite ("stop" for
   ``start_backup``) is never chosen, and one whose verbs are not the request's while another
   action on the same thing has it counts less ("cancel the cleanup run"); a destructive intent
   asked for over every thing of its kind ("restore every database") escalates; a
   question about an action ("did the restore of orders work?") reads the state of the thing
   it acts on (or the record of actions run). A best match the caller's role may not run is
   answered with ``refuse``. What the request is about being unknown to every intent ("play
   some music") is out of scope; a verb no intent knows over a thing with reads and changes
   ("handle the certificates", "fix nginx") is a question.
5. **Parameters** read by type from the schema (:mod:`.extract`); "it" refers to the last
   entity of the wanted kind named earlier in the request or in the conversation. A guessed
   free name is never a word of the actions, a typo of one, or another thing's declared id.
6. **Conditions** ("if disk is above 90 %") become a ``when`` over a field of an earlier (or
   an added read) step's declared result (:mod:`.conditions`); no such field: ``clarify``.
7. **Outcome**: ``clarify`` when a required param is missing or ambiguous, when a typo led to a
   write or destructive intent, or when the request is unclear; ``escalate`` when nothing the
   node offers matches; otherwise ``execute``. Confidence combines the retrieval margin with
   whether every required param was grounded.
"""

from __future__ import annotations

import re
from typing import Any

from cloudisense.assistant.catalog import Catalog, plannable, tool_required, uninflect
from cloudisense.assistant.plan import Plan, PlanningContext, PlanStep

HIGH_CONFIDENCE = 0.7


_SHELL = re.compile(
    r"(\brm\s+-\w*[rf]|\bmkfs\b|\bdd\s+if=|\bchmod\s+(-r\s+)?[0-7]{3}|:\(\)\s*\{|\bsudo\b|>\s*/dev/[sh]d|\bshred\b"
    r"|\bfdisk\b|\bdrop\s+(?:the\s+|a\s+|our\s+)?(?:[\w.-]+\s+)?(table|tables|database|schema|db)\b"
    r"|\btruncate\s+(?:the\s+|every\s+|all\s+)?(?:[\w.-]+\s+)?(table|tables)\b|\bcurl\b.*\|\s*(ba)?sh\b)", re.I)
_DESTRUCTIVE = {"delete", "remove", "wipe", "destroy", "drop", "erase", "format", "reformat", "nuke", "purge",
                "truncate", "terminate", "trash", "shred", "uninstall", "obliterate", "kill", "stop", "empty"}
#: Objects that make a destructive verb sweeping ("every", "all", "the fleet", "the disks").
_SWEEPING = {"all", "every", "everything", "entire", "whole", "fleet", "servers", "hosts", "machines",
             "databases", "disk", "disks", "cluster", "prod", "production", "filesystem", "vms", "instances",
             "data", "drive", "drives", "volume", "volumes"}
_PRIVILEGE = re.compile(
    r"(\b(as|become|becoming|get|gain|grant|give\s+\w+)\s+root\b|\broot\s+(access|password|shell|login|rights"
    r"|privileges?|user|account|permissions?)\b|\badmin(istrator)?\s+(rights|access|role|privileges)|\bpasswords?\b|\bssh\s+keys?\b"
    r"|\b(disable|bypass|ignore|turn\s+off|skip)\s+(the\s+)?(audit|policy|policies|approvals?|firewall|guard)"
    # Removing the record of what was done ("wipe the audit log") is tampering with the audit trail.
    r"|\b(wipe|delete|erase|clear|purge|truncate|empty|scrub|edit|rewrite|remove)\s+(?:\w+\s+){0,3}?audit\b"
    # Giving someone access to something ("grant the interns read access to X") is a permission change.
    # (Not the access log: "remove the nginx-access log".)
    r"|\b(grant|give|allow|revoke|remove|let\s+[\w\s]{1,30}?\s+have)\b[^.;]{0,60}?(?<![\w-])(access|permissions?)(?![\w-])(?!\s+logs?\b)"
    r"|\bprivilege)", re.I)


#: Restarting or powering off the machine itself ("reboot the whole server"): no intent does that.
_WHOLE_MACHINE = re.compile(
    r"\b(reboot|restart|shut\s*down|power\s*(off|cycle)|halt)\b.*\b(whole|entire)\s+(server|machine|box|host|node"
    r"|system)\b"
    # ... or "reboot the box", "shut down this server": the machine itself, with nothing before its noun.
    r"|\b(reboot|restart|shut\s*down|power\s*(off|cycle|down)|halt)\s+(the|this|our|my)\s+(server|machine|box|host"
    r"|node|system|vm)\s*[.!?]*$", re.I)


def danger(text: str) -> str | None:
    """Why ``text`` must go to a human (escalation rules of the module docstring), or ``None``."""
    if _SHELL.search(text):
        return "it asks to run a raw shell or database command; I only run the node's defined actions"
    words = set(re.findall(r"[a-z]+", text.lower()))
    if words & _DESTRUCTIVE and words & _SWEEPING:
        return "it asks for a sweeping destructive change that no action here performs and policy never allows"
    if _WHOLE_MACHINE.search(text):
        return "it asks to restart or power off the whole machine, which no action here does"
    if _PRIVILEGE.search(text):
        return "it asks to change privileges or safety controls, which needs a human"
    return None


_GREETING = {"hi", "hello", "hey", "hallo", "morning", "good morning", "good evening", "yo", "hi there",
             "hello there", "hey there",
             # Saying who is there or that one is new is still a greeting.
             "new here", "im new here", "i am new here", "im new", "first time here",
             "evening", "afternoon", "good afternoon", "good day", "howdy", "hiya", "greetings",
             # Dropping by to say so.
             "saying hi", "saying hello", "checking in", "just checking in",
             # Asking whether someone is there.
             "anyone home", "anyone there", "anybody home", "anybody there", "you there", "are you there"}
_THANKS = {"thanks", "thank you", "thx", "ty", "cheers", "great", "perfect", "nice", "cool", "ok", "okay",
           "ok thanks", "great thanks", "thanks a lot", "many thanks", "got it",
           # Thanks said as appreciation ("appreciate it", "much appreciated").
           "appreciate it", "i appreciate it", "appreciated", "much appreciated", "really appreciate it",
           # ... or as relief that it worked ("that sorted it", "that did the trick").
           "that sorted it", "that sorted it out", "sorted", "all sorted", "that fixed it", "that did it",
           "that did the trick", "that worked", "it worked", "works now", "it works now", "all good", "good stuff",
           "awesome", "brilliant", "excellent", "lovely", "sweet",
           "thank u", "thanks u", "thx a lot", "good job", "nice one", "nice work", "well done", "great job",
           "good work", "great work", "legend", "you rock", "much obliged", "ta", "ta very much", "cheers mate",
           # ... or as praise of the helper ("you're a star", "thank you kindly").
           "thank you kindly", "thanks kindly", "youre a star", "you are a star", "youre the best", "you are the best",
           "youre a legend", "you are a legend", "youre a lifesaver", "you are a lifesaver", "lifesaver", "star",
           "superstar", "top notch", "spot on", "you nailed it", "nailed it", "grand", "thats me sorted",
           "im sorted", "all done", "job done",
           # ... or as having got what was needed (a debt of gratitude: see _OWED), or waving an apology away.
           "thats exactly what i needed", "exactly what i needed", "just what i needed",
           "thats just what i needed", "thats what i needed", "thats what i was after", "exactly what i was after",
           "no worries", "no problem", "no probs", "not a problem", "all good thanks"}
#: Who is there ("night shift here", "certs team checking in", "on-call reporting in"): a greeting.
_WHO_IS_HERE = re.compile(r"^(?:the\s+)?(?:[a-z]+\s+){0,2}(?:shift|team|crew|oncall|on\s+call|rota|squad)\s+"
                          r"(?:here|checking\s+in|reporting(?:\s+in)?|on\s+duty|online)$")
#: Thanks said as a debt ("I owe you a pint for that one", "owe you one").
_OWED = re.compile(r"^\s*(?:i\s+)?owe\s+(?:you|u|ya)(?:\s+(?:one|a\s+[a-z]+|big(?:\s+time)?))?"
                   r"(?:\s+for\s+(?:that|this)(?:\s+one)?)?\s*$")
#: Saying a question is coming ("quick question coming up"): a greeting before the request.
_ANNOUNCED = {"quick question", "quick question coming up", "question coming up", "i have a question",
              "ive got a question", "got a question", "i have a quick question", "one question", "a quick question"}
_HELP = {"help", "?", "what can you do", "what can you do for me", "how does this work", "commands", "usage",
         # How to use the assistant itself ("how do I use you?").
         "how do i use you", "how do i use this", "how do you work", "what are you", "who are you",
         "what do you do", "what should i ask you", "what can i ask you", "what can i ask", "help me",
         "how can you help", "how can you help me", "what are your commands", "show me what you can do",
         "can you help", "can you help me", "could you help", "could you help me", "are you a bot",
         "who made you", "who built you", "are you human", "what is this", "what is this thing",
         "where do i start", "where do i begin", "where should i start", "where do i start with you",
         "how do i start", "how do i get started", "getting started",
         # Asking the assistant's name.
         "whats your name", "what is your name", "do you have a name", "what do i call you",
         "what should i call you", "have you got a name"}
# Closings ("that's all for now": apostrophes are dropped before matching).
_BYE = {"quit", "exit", "bye", "goodbye", "q", ":q", "see you", "bye bye", "thats all", "that is all", "thats it",
        "for now", "for today", "all for now", "im done", "we are done", "were done",
        "see ya", "see you later", "see you tomorrow", "cya", "later", "laters", "take care", "good night",
        "thats everything", "that is everything", "thats all i needed", "nothing else", "nothing more",
        "thats all for today", "done for now", "done for today", "im all set", "all set",
        "gotta go", "got to go", "have to go", "i have to go", "i gotta go", "gotta run", "got to run", "have to run",
        "i have to run", "i gotta run", "must run", "gotta dash", "must dash", "nevermind", "never mind", "forget it",
        "forget about it", "no thanks", "no thank you", "nothing else thanks", "leave it", "ignore that",
        "false alarm", "my bad", "my mistake", "wrong chat", "wrong window",
        "have a good one", "talk later", "signing off", "logging off", "that will be all", "thatll be all",
        # Taking it over from the assistant ("never mind, I'll handle it myself").
        "ill handle it", "ill handle it myself", "ill handle it from here", "ill take it from here",
        "ill do it myself", "ill sort it myself", "ill sort it out myself", "ill deal with it",
        "ill deal with it myself",
        "ill take over", "ill take over from here", "i can take it from here", "ive got it from here",
        # Stepping away for a while.
        "brb", "be right back", "back soon",
        "stepping away", "stepping out", "popping out", "stepping away for a bit", "back in a bit", "afk", "ttyl",
        "off to lunch", "going to lunch",
        "lunch", "grabbing coffee", "grabbing a coffee", "coffee break", "heading out", "heading home", "off home",
        "going home", "calling it a day", "nothing more from me", "thats all from me", "nothing else from me",
        "thats it from me", "thats it for me", "thats all for me", "thats it for today", "thats it for now",
        # Handing over at the end of a shift.
        "handing over", "handing off", "handover", "shift change", "end of shift", "end of my shift",
        "shifts over", "my shift is over", "im off", "im out", "off now",
        # Wishing a good rest of the day.
        *(f"have a {good} {when}" for good in ("good", "nice", "great", "lovely")
          for when in ("day", "evening", "night", "weekend", "afternoon", "shift"))}
#: Words said between pleasantries that add nothing ("good stuff, off to lunch now").
_FILLER = {"just", "now", "then", "so", "well", "anyway", "oh", "ah", "alright", "right", "im", "were",
           # Whom it is said to ("morning all", "good night team").
           "all", "team", "everyone", "everybody", "folks", "guys", "people", "yall", "you", "mate", "friends",
           # ... the assistant itself ("good evening, assistant").
           "assistant", "bot", "buddy", "pal", "friend"}


#: Words that say all is well ("all working again", "backups look good now"): a remark, not a request.
_WELL = {"good", "fine", "great", "working", "works", "worked", "ok", "okay", "sorted", "fixed", "healthy", "happy",
         "quiet", "calm", "averted", "uneventful",
         "green", "stable", "normal", "resolved", "solved", "back", "again", "well", "better", "smooth", "clean",
         "saved", "rescued", "helped", "perfectly", "nicely"}
#: Words that say something is wrong, or ask: a remark with one of these is no pleasantry ("thanks, still down").
_NOT_WELL = {"not", "no", "isnt", "arent", "wasnt", "dont", "doesnt", "didnt", "wont", "cant", "never", "down", "still",
             "failing", "failed", "fails", "error", "errors", "broken", "slow", "wrong", "issue", "issues", "problem",
             "problems", "crashed", "crashing", "stuck", "bad", "worse", "full", "dead", "if", "why", "but"}
#: A short tail after a goodbye saying when or to whom ("handing over to priya", "shift change in ten").
_BYE_TAIL = re.compile(r"^(?:(?:in|to|for|with)(?:\s+[a-z]+){1,3}|now|soon|today|tonight)$")
#: Asking what the assistant can do, in other words ("which kinds of things are you able to handle?").
_ASKS_WHAT_YOU_DO = re.compile(
    r"^\s*(?:so\s+|and\s+)?(?:what|which)\s+(?:kinds?|sorts?|types?)\s+of\s+(?:things|stuff|tasks|jobs|requests"
    r"|questions)\s+(?:are|can|could|do|will)\s+(?:you|u)\b[^.;]*\??\s*$"
    # "explain your capabilities in a sentence or two", "what are your skills?"
    r"|^\s*(?:please\s+)?(?:(?:explain|describe|summari[sz]e|outline|list)\s+(?:to\s+me\s+)?|tell\s+me\s+(?:about\s+)?"
    r"|what\s+are\s+)(?:your|ur)\s+(?:capabilities|abilities|skills|features|functions|powers)\b[^.;]*\??\s*$"
    r"|^\s*what\s+are\s+(?:you|u)\s+(?:capable\s+of|able\s+to\s+do|good\s+at)\s*\??\s*$"
    # "is there a list somewhere of what you're allowed to do?", "how would I ask you to do two things?"
    r"|^\s*(?:is\s+there|do\s+you\s+have|where\s+is|where['’]s)\s+(?:a\s+|the\s+)?list\b[^.;]*\bwhat\s+(?:you|u)(?:['’]re|\s+are)?"
    r"\s+(?:allowed|able|permitted|can)\b[^.;]*\??\s*$"
    r"|^\s*how\s+(?:would|do|can|should)\s+i\s+ask\s+(?:you|u)\s+(?:to|for)\b[^.;]*\??\s*$"
    # "can you handle TLS certificates too, or only backups?": what the assistant covers.
    r"|^\s*(?:can|could|do)\s+(?:you|u)\s+(?:also\s+)?(?:handle|do|manage|support|cover|deal\s+with|work\s+with)\s+"
    r"[^.;?]+?\s+(?:too|as\s+well)\s*(?:,?\s*or\s+(?:only|just)\b[^.;]*)?\??\s*$"
    # "do you understand plain English or do I need commands?": how to talk to the assistant.
    r"|^\s*do\s+(?:you|u)\s+(?:understand|speak|get)\s+(?:plain\s+)?(?:english|normal\s+language|natural\s+language)\b"
    r"[^.;]*\??\s*$|^\s*do\s+i\s+(?:need|have)\s+to\s+(?:use\s+)?(?:commands|special\s+syntax)\b[^.;]*\??\s*$"
    # "what are your limits - what won't you do?": what the assistant will not do is part of what it does.
    r"|^\s*(?:what\s+are\s+your\s+(?:limits|limitations|boundaries)|what\s+(?:won['’]?t|can['’]?t|will\s+not"
    r"|cannot)\s+(?:you|u)\s+do)\b[^.;]*\??\s*$", re.I)
#: A request taken back at its end ("..., actually no", "... no wait, don't", "... scratch that").
_TAKEN_BACK = re.compile(
    r"(?:[,.;!?…]+|\s-+)\s*(?:(?:actually|oh|hmm+|um+|wait)\s*,?\s*)*(?:no|nope|never\s*mind|nevermind|scratch\s+that"
    # "restore orders from b-40? no way": asked, then refused.
    r"|no\s+way|no\s+chance|not\s+a\s+chance|hell\s+no|absolutely\s+not|definitely\s+not|certainly\s+not"
    r"|of\s+course\s+not|better\s+not"
    r"|forget\s+(?:it|that)|cancel\s+that|don'?t|belay\s+that|hold\s+off)"
    r"(?:\s*,?\s*(?:wait|actually|don'?t|no|never\s*mind|not\s+yet|do\s+not))*\s*[.!…]*\s*$", re.I)
#: Asides that add nothing to what is said ("what's your name, by the way?").
_ASIDE = re.compile(r"\b(?:by\s+the\s+way|btw|by\s+the\s+by)\b", re.I)

#: A greeting and who says it, nothing more ("hello from the night shift").
_SIGNED_GREETING = re.compile(r"^\s*(?:hi|hello|hey|morning|good\s+morning|good\s+evening)(?:\s+there)?\s+from"
                              r"(?:\s+[a-z-]+){1,4}\s*[.!]*\s*$", re.I)


def small_talk(text: str, tools: list[dict[str, Any]]) -> str | None:
    """The reply to help / thanks / greetings / goodbyes, or ``None`` for a real request."""
    text = _ASIDE.sub(" ", text)
    said = re.sub(r"[^a-z?: ]+", "", text.lower()).strip()
    said = re.sub(r"\s+", " ", said).strip(" ?") or said
    # "exit please", "please help": the polite word says nothing more.
    said = re.sub(r"^(?:please|pls|plz|ok|okay)\s+|\s+(?:please|pls|plz)$", "", said).strip() or said
    if said not in _HELP:
        # "hi there, can you help?": a greeting, then asking for help, is asking for help.
        for cut in range(len(said.split()) - 1, 0, -1):
            head, tail = " ".join(said.split()[:cut]), " ".join(said.split()[cut:])
            if tail in _HELP and _pleasantries(head):
                said = tail
                break
    # "hello from the night shift": a greeting signed with who says it.
    if _SIGNED_GREETING.match(text):
        said = said.split(" from ", 1)[0]
    kinds = _pleasantries(said) or (["thanks"] if _OWED.match(said) else []) or _with_remarks(text, tools)
    if kinds and kinds[-1] == "thanks":
        return "You're welcome."
    if kinds and kinds[-1] == "bye":
        return "Goodbye."
    if kinds:
        return "Hello. Ask me about this node or tell me what to do; say \"help\" for examples."
    if said in _HELP or text.strip() == "?" or _ASKS_WHAT_YOU_DO.search(text):
        listed = "\n".join(f"  - {e}" for e in _one_example_per_module(tools)[:16])
        return ("I'm the CloudiSENSE assistant: I run this node's actions for you and answer from their real "
                "results. For example:\n"
                f"{listed}\nSay several steps in order (\"..., then ...\") and a condition with \"if\" "
                "(\"... if it's down\"). A step that changes something may need an approval first.")
    return None


def _one_example_per_module(tools: list[dict[str, Any]]) -> list[str]:
    """The first example of each module's first tool that has one, so the help shows what every module does."""
    seen: dict[str, str] = {}
    for tool in tools:
        if tool.get("examples") and str(tool.get("module")) not in seen:
            seen[str(tool.get("module"))] = str(tool["examples"][0])
    return list(seen.values())


def _with_remarks(text: str, tools: list[dict[str, Any]]) -> list[str]:
    """The kinds of pleasantry in ``text`` when each of its clauses is one, a remark that all is well
    ("cheers, all working again") or a goodbye with a short tail ("handing over to priya"); else ``[]``."""
    clauses = [c for c in re.split(r"[,;.!]+|\s+[-–—]+\s+", text.lower()) if c.strip()]
    if len(clauses) < 2 or "?" in text:
        return []
    verbs = {str(e).split()[0].lower() for t in tools for e in (t.get("examples") or ())[:3] if str(e).split()}
    kinds: list[str] = []
    for clause in clauses:
        said = re.sub(r"\s+", " ", re.sub(r"[^a-z ]+", "", clause)).strip()
        words = said.split()
        found = _pleasantries(said) or _tailed_bye(words) or (["thanks"] if _OWED.match(said) else []) \
            or (["hello"] if _WHO_IS_HERE.match(said) else [])
        if found:
            kinds += found
        elif not (words and set(words) & _WELL and not set(words) & _NOT_WELL and len(words) <= 8
                  and words[0] not in verbs and words[0] not in _FILLER_VERBS):
            return []
    return kinds


#: Verbs that start an order whatever the node's examples begin with.
_FILLER_VERBS = {"check", "show", "list", "get", "tell", "make", "keep", "let", "go", "run", "please", "can", "could"}


_FIRST_CLAUSE = re.compile(r"^\s*([^,;.!]+?)\s*(?:[,;.!]+|\s[-–—]+)\s*(?=\S)")


#: Short words of English grammar, whose letters swapped ("teh", "adn", "wiht") are a slip of the fingers, never a
#: name or a word of an action.
_FUNCTION_WORDS = ("the", "and", "that", "with", "what", "this", "from", "for", "you", "are", "have", "there",
                   "their", "they", "them", "then", "when", "which", "where", "last", "any", "all", "some", "please")
#: Swaps that are words of their own ("form" for "from", "three" for "there").
_REAL_SWAPS = frozenset({"form", "fro", "whit", "nay", "lats", "three"})


def _swapped_words() -> dict[str, str]:
    out: dict[str, str] = {}
    for word in _FUNCTION_WORDS:
        for i in range(len(word) - 1):
            swapped = word[:i] + word[i + 1] + word[i] + word[i + 2:]
            if swapped != word and swapped not in _REAL_SWAPS and swapped not in _FUNCTION_WORDS:
                out.setdefault(swapped, word)
    return out


_SWAPPED = _swapped_words()
_SWAPPED_RE = re.compile(r"(?<![\w\-./'])(" + "|".join(sorted(_SWAPPED, key=len, reverse=True)) + r")(?![\w\-/]|\.\w)",
                         re.I)


def mend_swapped_letters(text: str, entities: dict[str, list[str]] | None = None) -> str:
    """``text`` with each short word of grammar typed with two letters swapped put right ("show teh log" ->
    "show the log"), unless the slip is a configured name."""
    names = {n.lower() for values in (entities or {}).values() for n in values}
    return _SWAPPED_RE.sub(lambda m: m.group(0) if m.group(0).lower() in names else _SWAPPED[m.group(0).lower()],
                           text)


#: Doubt said right after a request ("stop redis? are you sure that's wise", "... - is that a good idea?").
_DOUBT_AFTER = re.compile(r"(?:\?|[,.;]|\s-+)\s*(?:hmm+,?\s*)?(?:are\s+(?:you|we)\s+sure"
                          r"|is\s+(?:that|this|it)\s+(?:wise|safe|smart|a\s+good\s+idea|ok|okay)|would\s+(?:that|this|it)\s+be\s+(?:wise|safe|ok|okay|a\s+good"
                          r"\s+idea)|not\s+sure\s+(?:about\s+)?(?:that|this|it)?)\b[^.!]*[?.!]*\s*$", re.I)
#: Who asks a question, before it ("auditors are asking how stale the orders backup is"): the question is the request,
#: and the words of who asks choose nothing.
_REPORTED_QUESTION = re.compile(
    r"^\s*(?:[\w\-']+\s+){1,4}?(?:is|are|was|were|keeps?|kept|have\s+been|has\s+been)\s+asking(?:\s+(?:me|us))?"
    r"(?:\s+(?:about|for))?\s+(?=(?:how|what|whats|what's|when|whether|if|which|who|why|where)\b)", re.I)


#: "what's the difference between restarting a service and stopping it?": what two actions do, asked.
_DIFFERENCE = re.compile(r"^\s*(?:so\s+)?what(?:['’]s|\s+is)\s+the\s+difference\s+between\s+(?:you\s+)?(.+?)\s+and\s+"
                         r"(?:you\s+)?(.+?)\s*\??\s*$", re.I)


def _explain_difference(catalog: Catalog, first: str, second: str) -> str | None:
    """Each side's best-matching action and its declared description, or ``None`` when either matches none or
    both match the same one."""
    picked = []
    for side in (first, second):
        # "restarting a service": the action's own verb.
        words = [(uninflect(w, catalog.vocabulary) or w) if w.endswith("ing") and len(w) > 5 else w
                 for w in re.findall(r"[a-z0-9][\w.\-]*", side.lower())]
        found = catalog.search(" ".join(words), k=1)
        if not found or found[0][1] <= 0:
            return None
        picked.append(found[0][0])
    if picked[0]["name"] == picked[1]["name"]:
        return None
    return "\n".join(f"- {t['name'].replace('_', ' ')}: {str(t.get('description') or '').rstrip('.')}." for t in picked)


def _without_opening_pleasantry(text: str) -> str:
    """``text`` without a thanks or greeting said before the request ("thanks, now restart the worker")."""
    m = _FIRST_CLAUSE.match(text)
    if m is None:
        return text
    said = re.sub(r"\s+", " ", re.sub(r"[^a-z ]+", "", m.group(1).lower())).strip()
    kinds = _pleasantries(said) or (["hello"] if _WHO_IS_HERE.match(said) else [])
    text = text[m.end():] if kinds and "bye" not in kinds else text
    # "hiya, night shift here, restart nginx": a greeting, then who is there, then the request.
    if kinds and "bye" not in kinds and (second := _FIRST_CLAUSE.match(text)) is not None:
        said = re.sub(r"\s+", " ", re.sub(r"[^a-z ]+", "", second.group(1).lower())).strip()
        if _WHO_IS_HERE.match(said):
            text = text[second.end():]
    return text


def _tailed_bye(words: list[str]) -> list[str]:
    """``["bye"]`` when ``words`` are a goodbye followed by a short tail of when or to whom."""
    for toks, kind in _PLEASANTRY_WORDS:
        if kind == "bye" and words[:len(toks)] == toks and _BYE_TAIL.match(" ".join(words[len(toks):])):
            return [kind]
    return []


#: Every pleasantry as (its words, its kind), longest first: built once, read by every request.
_PLEASANTRY_WORDS = sorted(((p.split(), kind) for kind, group in (("thanks", _THANKS), ("bye", _BYE),
                                                                  ("hello", _GREETING | _ANNOUNCED)) for p in group),
                           key=lambda pk: -len(pk[0]))


def _pleasantries(said: str) -> list[str]:
    """The kinds of pleasantry ``said`` is made of, in order ("thanks, bye" -> thanks, bye), or ``[]`` when
    any part of it is something else."""
    words = said.split()

    def cover(i: int) -> list[str] | None:
        if i == len(words):
            return []
        for toks, kind in _PLEASANTRY_WORDS:
            if words[i:i + len(toks)] == toks:
                rest = cover(i + len(toks))
                if rest is not None:
                    return [kind, *rest]
        return cover(i + 1) if words[i] in _FILLER else None

    return (cover(0) or []) if words else []  # (filler alone covers with no kind: no pleasantry)


class OfflinePlanner:
    """Retrieval over the intents' declarations plus schema-typed parameter extraction (no model)."""

    strategy = "offline"

    def __init__(self, k: int = 8) -> None:
        self.k = k
        #: Catalogues by tool set (one per role seen): building one takes tens of milliseconds.
        self._cache: dict[Any, Catalog] = {}

    def catalog(self, tools: list[dict[str, Any]], refused: list[dict[str, Any]] = (),  # type: ignore[assignment]
                entities: dict[str, list[str]] | None = None) -> Catalog:
        """The (cached) catalogue of the plannable ``tools`` plus the ``refused`` ones (marked ``"refusal"``)."""
        usable = plannable(tools) + [t for t in plannable(refused) if t.get("refusal")]
        names = frozenset(n for values in (entities or {}).values() for n in values)
        key = (tuple((t["name"], t.get("description"), len(t.get("examples") or ()), bool(t.get("refusal")))
                     for t in usable), names)
        catalog = self._cache.get(key)
        if catalog is None:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            catalog = self._cache[key] = Catalog(usable, names=names)
        return catalog

    async def plan(self, text: str, context: PlanningContext) -> Plan:
        """Plan ``text`` (see the module docstring for the rules)."""
        return self.plan_sync(text, context)

    def plan_sync(self, text: str, context: PlanningContext) -> Plan:
        """The same as :meth:`plan`, without the event loop."""
        text = (text or "").strip()
        if not text:
            return self._clarify("What would you like me to do?", 0.0, "empty request")
        text = mend_swapped_letters(text, context.entities)
        reply = small_talk(text, plannable(context.tools))
        if reply is not None:
            return Plan(outcome="answer", message=reply, confidence=1.0, reason="small talk", strategy=self.strategy)
        text = _without_opening_pleasantry(text)
        text = _REPORTED_QUESTION.sub("", text, count=1) or text
        if _TAKEN_BACK.search(text):
            # "renew X... actually no", "restore orders? no wait, don't": what was asked is taken back.
            return Plan(outcome="answer", message="OK, I won't do that. Tell me what you'd like instead.",
                        confidence=0.9, reason="the request was taken back", strategy=self.strategy)
        doubted = _DOUBT_AFTER.search(text)
        if doubted:
            # "stop redis? are you sure that's wise": asked and doubted at once; a change is asked about, not run.
            plan = self.plan_sync(text[:doubted.start()] + "?", context)
            changes = [s for s in plan.steps if (next((t for t in context.tools if t["name"] == s.intent), {})
                                                 .get("risk", "write")) != "read"]
            if plan.outcome != "execute" or not changes:
                return plan
            listed = "; ".join(f"{s.intent.replace('_', ' ')} {s.params}" if s.params else s.intent.replace("_", " ")
                               for s in changes)
            return self._clarify(f"You sound unsure. Should I go ahead with: {listed}? Say so plainly and I'll plan "
                                 "it.", 0.4, "a change asked for and doubted in the same breath")
        reason = danger(text)
        if reason:
            return Plan(outcome="escalate", confidence=0.9, reason=f"escalated: {reason}", strategy=self.strategy)
        catalog = self.catalog(context.tools, context.refused, context.entities)
        if not catalog.tools:
            return Plan(outcome="escalate", confidence=0.9, reason="no actions are available to your role",
                        strategy=self.strategy)
        compared = _DIFFERENCE.match(text)
        if compared:
            explained = _explain_difference(catalog, compared.group(1), compared.group(2))
            if explained:
                return Plan(outcome="answer", message=explained, confidence=0.8, strategy=self.strategy,
                            reason="a question about what two actions do, answered from their declarations")
        from cloudisense.assistant.offline_segment import SegmentPlanner

        return SegmentPlanner(self, catalog, context).run(text)

    def _clarify(self, question: str, confidence: float, reason: str) -> Plan:
        return Plan(outcome="clarify", question=question, confidence=confidence, reason=reason,
                    strategy=self.strategy)


def required_params(tool: dict[str, Any]) -> list[str]:
    """Required params of ``tool`` (re-exported for the segment planner)."""
    return tool_required(tool)


def as_plan_steps(steps: list[tuple[str, dict[str, Any]]], whens: list[str | None] | None = None) -> list[PlanStep]:
    """``PlanStep`` objects, with ids ``s1``, ``s2``... when there is more than one step."""
    many = len(steps) > 1
    whens = whens or [None] * len(steps)
    return [PlanStep(id=f"s{i}" if many else None, intent=name, params=params, when=when)
            for i, ((name, params), when) in enumerate(zip(steps, whens, strict=False), 1)]
