"""Evidence for the investigation: log lines grouped, attributed to components, and condensed.

Log text is untrusted data: it is grouped and quoted literally (control characters removed), never
interpreted. :func:`condense` keeps a token budget (about four characters a token): repeated lines
become one line with a count and their first and last time, the first and the last line of the
whole series are always kept, and what was cut is said.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: What a problem line looks like (a regular expression for ``search_logs``). Access-log lines with a
#: 5xx status are problems too.
PROBLEM_PATTERN = (r"(?i)\b(error|err|crit(ical)?|fatal|fail(ed|ure|s)?|refused|refusing|timed out|timeout|"
                   r"exhausted|unreachable|cannot|invalid|slow|exception|traceback|panic|killed|oom|warn(ing)?|"
                   r"max number)\b|\" 5\d\d ")
_HTTP_STATUS = re.compile(r"\"[A-Z]+ [^\"]*\" (?P<status>\d{3}) ")
_ERRORISH = re.compile(r"(?i)\b(error|err|crit(ical)?|fatal|fail(ed|ure|s)?|refused|refusing|timed out|timeout|"
                       r"exhausted|unreachable|cannot|invalid|exception|traceback|panic|killed|oom|max number)\b")
_SLOW = re.compile(r"(?i)\bslow\b|response time|latency|took \d")
_SETTING = re.compile(r"(?i)\b(invalid setting|unknown setting|cannot start|config(uration)? error|not valid json)\b")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NUMBER = re.compile(r"\d+(\.\d+)?")
_PORT = re.compile(r"(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]):(\d{2,5})\b", re.IGNORECASE)
#: Leading time stamps in the formats the demo's logs (and most others) use.
_STAMP = re.compile(r"^\s*(\[[^\]]{8,40}\]\s*|\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?\S*\s*|"
                    r"[A-Z][a-z]{2}\s+\d{1,2}\s\d\d:\d\d:\d\d\s*)")
TOKEN_CHARS = 4
KIND_WEIGHT = {"setting": 2.0, "error": 1.0, "slow": 0.8, "warning": 0.4, "symptom": 0.3}


def tokens(text: str) -> int:
    """The tokens ``text`` takes, estimated the way every budget here counts them (4 characters each)."""
    return (len(text) + TOKEN_CHARS - 1) // TOKEN_CHARS


def literal(text: str, limit: int = 300) -> str:
    """Untrusted text made safe to print: control characters removed, whitespace folded, length bounded."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def signature(line: str) -> str:
    """What makes lines "the same": the text without its time stamp, with every number as ``#``."""
    return _NUMBER.sub("#", _STAMP.sub("", line)).strip().lower()


@dataclass
class LogLine:
    """One matching log line (``time``: ISO text as the logs module gave it, or ``None``)."""

    log: str
    text: str
    time: str | None = None


@dataclass
class LineGroup:
    """Lines of one log with the same :func:`signature`."""

    log: str
    signature: str
    first: LogLine
    last: LogLine
    count: int = 1
    #: The component these lines point at (see :func:`attribute`), ``None`` when none is known.
    component: str | None = None
    #: ``setting``, ``error``, ``slow``, ``warning`` or ``symptom`` (an HTTP status line: the effect, not the cause).
    kind: str = "warning"

    @property
    def weight(self) -> float:
        """How much this group says something is wrong (a bad setting most, symptoms least; more lines, more)."""
        return KIND_WEIGHT[self.kind] * (1 + min(self.count, 64).bit_length() / 2)

    def describe(self) -> str:
        """``nginx-error, 3 times 12:01:02 … 12:03:04: "<last line>"`` (the line quoted literally)."""
        when = _clock(self.first.time)
        if self.count > 1 and self.last.time != self.first.time:
            when = f"{when} … {_clock(self.last.time)}"
        times = f"{self.count} times" if self.count > 1 else "once"
        return f'{self.log}, {times}{" " + when if when else ""}: "{literal(self.last.text, 240)}"'


def _clock(stamp: str | None) -> str:
    if not stamp:
        return ""
    match = re.search(r"\d\d:\d\d:\d\d", stamp)
    return match.group(0) if match else stamp


def classify(text: str) -> str:
    """The kind of a problem line: ``setting``, ``symptom``, ``error``, ``slow`` or ``warning``."""
    if _SETTING.search(text):
        return "setting"
    status = _HTTP_STATUS.search(text)
    if status:
        return "symptom" if status.group("status").startswith("5") else "warning"
    if _ERRORISH.search(text):
        return "error"
    return "slow" if _SLOW.search(text) else "warning"


def target_ports(health_urls: Mapping[str, str | None]) -> dict[int, str]:
    """Port -> target, from each target's configured health URL (how log lines name upstreams)."""
    ports: dict[int, str] = {}
    for name, url in health_urls.items():
        if not url:
            continue
        try:
            port = urlsplit(url).port
        except ValueError:
            continue
        if port:
            ports[port] = name
    return ports


@dataclass
class Components:
    """The names a log line may point at: targets, the phrases people use for them, their ports."""

    targets: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    ports: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {t.lower(): t for t in self.targets}
        names.update({phrase.lower(): target for phrase, target in self.aliases.items() if target in self.targets})
        # Longest phrases first, so "kv store" wins over a shorter name inside it.
        self._words = [(re.compile(rf"(?<![\w-]){re.escape(p)}(?![\w-])", re.IGNORECASE), t)
                       for p, t in sorted(names.items(), key=lambda kv: -len(kv[0]))]

    def mentioned(self, text: str) -> list[str]:
        """Targets ``text`` names (by name, alias or port), in the order they appear."""
        found: list[tuple[int, str]] = []
        for pattern, target in self._words:
            for match in pattern.finditer(text):
                found.append((match.start(), target))
        for match in _PORT.finditer(text):
            owner = self.ports.get(int(match.group(1)))
            if owner:
                found.append((match.start(), owner))
        out: list[str] = []
        for _, target in sorted(found):
            if target not in out:
                out.append(target)
        return out

    def of_log(self, log: str) -> str | None:
        """The target a log belongs to when its name says so (``nginx-error`` -> ``nginx``)."""
        for target in sorted(self.targets, key=len, reverse=True):
            if re.search(rf"(?<![a-z0-9]){re.escape(target.lower())}(?![a-z0-9])", log.lower()):
                return target
        return None


def attribute(line: LogLine, components: Components) -> str | None:
    """The component a problem line points at.

    A line names who reports it (its log, or the ``LEVEL source:`` prefix) and often whom it blames
    ("connection refused by redis", "upstream: http://127.0.0.1:8081"): the one blamed is the
    suspect; without one, the reporter is.
    """
    body = _STAMP.sub("", line.text)
    reporter = components.of_log(line.log)
    # "ERROR web: ..." (level and source) or syslog's "host program[pid]: ...".
    head = re.match(r"\s*(?:[A-Z]+\s+)?([\w.-]+):", body) or re.match(r"\s*\S+\s+([\w.-]+)\[\d+\]:", body)
    named = components.mentioned(body)
    if head is not None and head.group(1).lower() in {t.lower() for t in components.targets}:
        reporter = next(t for t in components.targets if t.lower() == head.group(1).lower())
    blamed = [t for t in named if t != reporter]
    if blamed:
        return blamed[0]
    return reporter or (named[0] if named else None)


def group_lines(lines: Iterable[LogLine], components: Components | None = None) -> list[LineGroup]:
    """Lines grouped by log and :func:`signature`, in the order each group first appeared."""
    groups: dict[tuple[str, str], LineGroup] = {}
    for line in lines:
        key = (line.log, signature(line.text))
        group = groups.get(key)
        if group is None:
            groups[key] = LineGroup(line.log, key[1], line, line, kind=classify(line.text),
                                    component=attribute(line, components) if components else None)
        else:
            group.count += 1
            group.last = line
    return list(groups.values())


@dataclass
class Condensed:
    """Log evidence within a budget: the lines kept and what was cut."""

    lines: list[str]
    tokens: int
    total_lines: int
    cut_groups: int = 0
    cut_lines: int = 0

    def text(self) -> str:
        """The kept lines, then a line saying what was cut (if anything)."""
        out = list(self.lines)
        if self.cut_groups:
            out.append(f"[{self.cut_lines} more line(s) of {self.cut_groups} other kind(s) cut to keep within budget]")
        return "\n".join(out)


def condense(lines: list[LogLine], budget: int) -> Condensed:
    """``lines`` (oldest first) within ``budget`` tokens: deduplicated with counts; first and last kept.

    The groups with the most lines come first after the first and last line, so a burst is never
    cut before a one-off; a one-off that is the first or last line is not quoted twice.
    """
    if not lines:
        return Condensed([], 0, 0)
    groups = group_lines(lines)
    first, last = lines[0], lines[-1]
    head = [f'first: {first.log} {_clock(first.time)} "{literal(first.text, 240)}"']
    if len(lines) > 1:
        head.append(f'last: {last.log} {_clock(last.time)} "{literal(last.text, 240)}"')
    used = sum(tokens(h) + 1 for h in head)
    kept: list[str] = []
    cut_groups = cut_lines = 0
    for group in sorted(groups, key=lambda g: -g.count):
        if group.count == 1 and (group.first is first or group.first is last):
            continue
        entry = group.describe()
        cost = tokens(entry) + 1
        if used + cost > budget:
            cut_groups += 1
            cut_lines += group.count
            continue
        kept.append(entry)
        used += cost
    return Condensed(head + kept, used, len(lines), cut_groups, cut_lines)
