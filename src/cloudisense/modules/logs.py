"""Configured log files: list, read the end, search, and live tails on ``/logging/<name>``.

Only files configured under ``[logs.files]`` can be read, by their configured name.
Confinement rule: a configured path must resolve (symlinks followed) to a file inside
the folder it is configured in — ``/var/log/app.log`` may be a symlink to
``/var/log/app/current.log`` but not to ``/etc/shadow``. The rule is checked on every
read and every time a live tail opens a file, so a symlink swapped in later is refused too.

``list_logs`` answers the existing CloudiSENSE client's shape, an array of ``{"name", "topic"}``
(subscribe to ``topic`` for a live tail); ``list_logs {"details": true}`` adds each file's path,
size and last change. A live tail publishes ``data_generated`` events (``meta.event =
"log_line"``) with ``{"name", "data": <the new text>, "lines": [...]}``, and an
``error_generated`` event when the file can't be followed.

Patterns (``grep``, ``pattern``) are case-insensitive substrings. With ``regex: true``
they are Python regular expressions, guarded against catastrophic backtracking
(nested quantifiers and back-references are refused, patterns are short, lines are
matched on their first :data:`REGEX_LINE_CHARS` characters).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from cloudisense.config import ConfigPath, Section
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Forbidden, NotFound
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import DATA_EVENT, ERROR_EVENT, TopicProvider
from cloudisense.modules.logfiles import FileFollower, LineFilter, iso, last_lines, search_file

log = logging.getLogger(__name__)


class LogsSettings(Section):
    """Configured log files, by name."""

    files: dict[str, ConfigPath] = Field(default_factory=dict)
    poll_interval: float = Field(0.25, gt=0)

TOPIC_PREFIX = "/logging/"
LOG_LINE_EVENT = "log_line"
#: A search or grep reads at most this much of one file, from its end.
MAX_SCAN_BYTES = 1024 * 1024 * 1024
#: Lines per ``log_line`` event; a bigger poll is split into several events.
MAX_LINES_PER_EVENT = 1000
REGEX_LINE_CHARS = 4096

_NAME_CHARS = re.compile(r"^[A-Za-z0-9_.\-@:]{1,128}$")
# A quantified group that itself contains a quantifier, e.g. (a+)+ or (.*)*: the classic blow-up.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{?]")
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")


class ListLogsParams(Params):
    """Names and topics (the existing client's shape), or more about each file."""

    details: bool = Field(False, description="true: also each file's path, size and last change")


def _say_logs(p: Any, data: Any) -> str:
    """``list_logs`` in words, for either shape."""
    items = data if isinstance(data, list) else data.get("logs", []) if isinstance(data, dict) else []
    return "logs: " + (", ".join(str(i.get("name")) for i in items if isinstance(i, dict)) or "none are configured")


class ReadLogParams(Params):
    """Which log, how many lines from its end, and an optional filter."""

    name: str = Field(min_length=1, max_length=256, description="configured log name, e.g. app or nginx-error")
    lines: int = Field(50, ge=1, le=5000, description="how many lines from the end")
    grep: str | None = Field(None, min_length=1, max_length=200,
                             description="only lines containing this text (case-insensitive)")
    regex: bool = Field(False, description="treat grep as a regular expression")


class SearchLogsParams(Params):
    """A pattern, which logs, and an optional time window."""

    pattern: str = Field(min_length=1, max_length=200, description="text to look for (case-insensitive)")
    name: str | None = Field(None, min_length=1, max_length=256, description="one configured log; default all")
    since_minutes: float | None = Field(None, gt=0, le=525_600,
                                        description="only lines stamped within the last N minutes")
    limit: int = Field(200, ge=1, le=5000, description="most matches returned (the newest)")
    regex: bool = Field(False, description="treat pattern as a regular expression")


def make_filter(pattern: str, regex: bool) -> LineFilter:
    """A case-insensitive line filter: substring, or a guarded regular expression."""
    if "\x00" in pattern:
        raise BadRequest("pattern must not contain NUL")
    if not regex:
        needle = pattern.casefold()
        return lambda line: needle in line.casefold()
    if _NESTED_QUANTIFIER.search(pattern) or _BACKREF.search(pattern):
        raise BadRequest(f"regex {pattern!r} is refused: nested quantifiers such as (a+)+ and back-references "
                         "can take exponential time; simplify it or search for a plain substring")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise BadRequest(f"invalid regex {pattern!r}: {exc}; or set regex to false for a plain substring") from None
    return lambda line: compiled.search(line, 0, REGEX_LINE_CHARS) is not None


def check_log_name(name: str) -> str:
    """Log names are configured keys, never paths."""
    if "/" in name or "\\" in name or ".." in name or not _NAME_CHARS.match(name):
        raise BadRequest(f"invalid log name {name!r}: give a configured log name (see list_logs), not a path")
    return name


def confined(path: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to a place inside its own folder."""
    try:
        folder = path.parent.resolve()
        return path.resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a symlink loop
        return False


class LogTail:
    """One live tail: a follower polled off the event loop, publishing ``log_line`` batches."""

    def __init__(self, module: LogsModule, name: str, path: Path) -> None:
        self.module = module
        self.name = name
        self.topic = TOPIC_PREFIX + name
        self.follower = FileFollower(path, allow=confined)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Remember where the file ends now, then poll (lines written after this are delivered)."""
        await asyncio.to_thread(self.follower.open, True)
        self.task = asyncio.create_task(self._run(), name=f"tail-{self.name}")

    async def stop(self) -> None:
        """Stop polling and close the file."""
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self.follower.close)

    async def _run(self) -> None:
        interval = self.module.settings.poll_interval
        while True:
            await asyncio.sleep(interval)
            try:
                lines = await asyncio.to_thread(self.follower.poll)
            except Exception:  # a bad read must not end the tail: try again next poll
                log.exception("tail of log %s failed", self.name)
                continue
            for start in range(0, len(lines), MAX_LINES_PER_EVENT):
                batch = lines[start:start + MAX_LINES_PER_EVENT]
                self.module.node.pubsub.publish(self.topic, DATA_EVENT,
                                                {"name": self.name, "data": "".join(f"{x}\n" for x in batch),
                                                 "lines": batch}, kind=LOG_LINE_EVENT)


class LogsModule(Module):
    """``list_logs``, ``read_log``, ``search_logs`` and live tails on ``/logging/<name>``."""

    name = "logs"
    settings_model = LogsSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self._tails: dict[str, LogTail] = {}

    @property
    def files(self) -> dict[str, Path]:
        """Configured log paths by name."""
        return dict(self.settings.files)

    def entities(self) -> dict[str, list[str]]:
        return {"log": sorted(self.files)}

    def intents(self) -> list[Intent]:
        log_entity = {"name": "log"}
        return [
            Intent("list_logs", "The configured log files and their live topics (details=true: paths, sizes, "
                   "last change)", self.list_logs, ListLogsParams, Risk.READ,
                   ("which logs can you read", "list the log files", "what logs are configured",
                    "show me the available logs and their sizes", "how big are the log files"), say=_say_logs),
            Intent("read_log", "The last lines of a configured log, optionally only those containing a text",
                   self.read_log, ReadLogParams, Risk.READ,
                   ("last 20 lines of the nginx error log", "show the app log", "tail syslog",
                    "show errors in the app log", "what did the nginx access log record recently",
                    "read the last 100 lines of the app log containing timeout"),
                   entities=log_entity, say=_say_read),
            Intent("search_logs", "Lines containing a text across the configured logs, optionally within "
                   "the last N minutes", self.search_logs, SearchLogsParams, Risk.READ,
                   ("show errors in the app log from the last hour", "search all logs for timeout",
                    "find 502 in the nginx access log", "any OOM messages in syslog today",
                    "grep the logs for connection refused in the last 15 minutes",
                    "did anything log 'disk full' recently"),
                   entities=log_entity, say=_say_search),
        ]

    async def start(self) -> None:
        self.node.pubsub.add_provider(TopicProvider(TOPIC_PREFIX, self._accepts, self._on_first, self._on_last))

    async def stop(self) -> None:
        for tail in list(self._tails.values()):
            await tail.stop()
        self._tails.clear()

    # -- resolving names --------------------------------------------------

    def resolve(self, name: str) -> Path:
        """The file behind log ``name``, after the name and confinement checks."""
        check_log_name(name)
        files = self.files
        if name not in files:
            known = ", ".join(sorted(files)) or "none (configure [logs.files])"
            raise NotFound(f"no log {name!r}; configured logs: {known}")
        path = files[name].expanduser().absolute()
        if not confined(path):
            raise Forbidden(f"log {name!r} is refused: {path} resolves to a place outside {path.parent}; "
                            "configure the real file's path instead of a symlink leading out of its folder")
        if not path.is_file():
            raise NotFound(f"log {name!r} ({path}) does not exist yet or is not a regular file")
        return path

    # -- intents ----------------------------------------------------------

    async def list_logs(self, p: ListLogsParams, ctx: ActionContext) -> list[dict[str, Any]] | dict[str, Any]:
        files = self.files
        if not p.details:
            return [{"name": n, "topic": TOPIC_PREFIX + n} for n in sorted(files)]

        def describe(name: str, path: Path) -> dict[str, Any]:
            path = path.expanduser().absolute()
            info: dict[str, Any] = {"name": name, "topic": TOPIC_PREFIX + name, "path": str(path), "exists": False,
                                    "size": None, "mtime": None, "allowed": confined(path)}
            try:
                st = path.stat()
            except OSError:
                return info
            info.update(exists=True, size=st.st_size, mtime=iso(st.st_mtime), mtime_ms=int(st.st_mtime * 1000))
            return info

        logs = await asyncio.to_thread(lambda: [describe(n, files[n]) for n in sorted(files)])
        return {"logs": logs, "count": len(logs)}

    async def read_log(self, p: ReadLogParams, ctx: ActionContext) -> dict[str, Any]:
        path = self.resolve(p.name)
        match = make_filter(p.grep, p.regex) if p.grep else None
        lines, more = await asyncio.to_thread(last_lines, path, p.lines, match, MAX_SCAN_BYTES)
        return {"name": p.name, "path": str(path), "lines": lines, "count": len(lines),
                "grep": p.grep, "more": more}

    async def search_logs(self, p: SearchLogsParams, ctx: ActionContext) -> dict[str, Any]:
        match = make_filter(p.pattern, p.regex)
        names = [p.name] if p.name else sorted(self.files)
        now = time.time()
        since = now - p.since_minutes * 60 if p.since_minutes else None
        paths: dict[str, Path] = {}
        skipped: dict[str, str] = {}
        for name in names:
            try:
                paths[name] = self.resolve(name)
            except (NotFound, Forbidden) as exc:
                if p.name:  # the one log asked for must exist
                    raise
                skipped[name] = exc.message

        def run() -> tuple[list[dict[str, Any]], bool]:
            found: list[tuple[float, int, dict[str, Any]]] = []
            truncated = False
            for order, (name, path) in enumerate(paths.items()):
                matches, more = search_file(path, match, p.limit, since, now, MAX_SCAN_BYTES)
                truncated = truncated or more
                for i, m in enumerate(matches):
                    entry = {"name": name, "line": m.line, "timestamp": iso(m.timestamp)}
                    found.append((m.timestamp if m.timestamp is not None else float("-inf"), order * 10**9 + i, entry))
            found.sort(key=lambda t: (t[0], t[1]))
            if len(found) > p.limit:  # keep the newest across all logs
                truncated = True
                found = found[-p.limit:]
            return [e for _, _, e in found], truncated

        matches, truncated = await asyncio.to_thread(run)
        result: dict[str, Any] = {"pattern": p.pattern, "logs": list(paths), "since": iso(since),
                                  "matches": matches, "count": len(matches), "truncated": truncated}
        if skipped:
            result["skipped"] = skipped
        return result

    # -- live tails -------------------------------------------------------

    def _name_of(self, topic: str) -> str:
        return topic[len(TOPIC_PREFIX):]

    def _accepts(self, topic: str) -> bool:
        return self._name_of(topic) in self.files

    async def _on_first(self, topic: str) -> None:
        name = self._name_of(topic)
        old = self._tails.pop(name, None)
        if old is not None:
            await old.stop()
        path = self.files[name].expanduser().absolute()
        if not confined(path):
            # The subscription stands (pub/sub already holds it); the follower refuses to open the file.
            log.warning("log %s resolves outside %s; its live tail stays silent", name, path.parent)
            self.node.pubsub.publish(topic, ERROR_EVENT, {
                "message": f"log {name} is refused: its file resolves outside its folder, so nothing is tailed",
                "data": {"name": name}}, kind="log_refused")
        tail = LogTail(self, name, path)
        self._tails[name] = tail
        await tail.start()

    async def _on_last(self, topic: str) -> None:
        tail = self._tails.pop(self._name_of(topic), None)
        if tail is not None:
            await tail.stop()


__all__ = [
    "LOG_LINE_EVENT",
    "TOPIC_PREFIX",
    "LogTail",
    "LogsModule",
    "check_log_name",
    "confined",
    "make_filter",
]


# -- how results read in words (Intent.say) -----------------------------------------------------

def _quote_lines(lines: list[Any], limit: int = 15) -> str:
    shown = [str(x) for x in lines[-limit:]]
    more = f"\n  … {len(lines) - limit} earlier lines not shown" if len(lines) > limit else ""
    return "\n".join(f"  {line}" for line in shown) + more


def _say_read(p: Any, d: dict[str, Any]) -> str:
    lines = d.get("lines", [])
    name = d.get("name", p.get("name"))
    if not lines:
        return f"the {name} log has no matching lines"
    return f"last {len(lines)} line(s) of the {name} log:\n" + _quote_lines(lines)


def _say_search(p: Any, d: dict[str, Any]) -> str:
    matches = d.get("matches", [])
    if not matches:
        return f"no lines match {p.get('pattern')!r}"
    rows = [f"[{m.get('log', m.get('name', '?'))}] {m.get('line', m)}" if isinstance(m, dict) else str(m)
            for m in matches]
    more = " (more were found; showing the newest)" if d.get("truncated") else ""
    return f"{len(matches)} line(s) match {p.get('pattern')!r}{more}:\n" + _quote_lines(rows)
