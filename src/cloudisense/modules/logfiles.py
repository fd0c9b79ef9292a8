"""Log file helpers free of the server: timestamps, reading from the end, following a file.

Everything here is blocking file I/O; the logs module calls it through
``asyncio.to_thread``. Files are never loaded whole: :func:`iter_lines_reverse`
reads fixed-size blocks from the end, and :class:`FileFollower` reads only what
was appended since its last poll.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

BLOCK_SIZE = 64 * 1024
#: Longer lines are cut to their last (reverse reader) or first (follower) this many bytes.
MAX_LINE_BYTES = 64 * 1024
#: At most this much is read from one file per follower poll; the rest waits for the next poll.
MAX_POLL_BYTES = 4 * 1024 * 1024
#: Bytes compared on each poll to notice a file rewritten in place to the same or a larger size.
SIG_BYTES = 64

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_MON = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"

# ISO-8601 and Python logging: 2026-11-24T02:30:00, 2026-11-24 02:30:00,123, ...Z, ...+01:00
_ISO_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
                     r"(Z|[+-]\d{2}:?\d{2})?")
# nginx error log: 2026/11/24 02:30:00 [error] ...
_SLASH_RE = re.compile(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})")
# syslog (RFC 3164): Nov 24 02:30:00 host prog: ...
_SYSLOG_RE = re.compile(_MON + r" {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})\b", re.IGNORECASE)
# nginx/Apache combined: [24/Nov/2026:02:30:00 +0000]
_CLF_RE = re.compile(r"\[(\d{2})/" + _MON + r"/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\]", re.IGNORECASE)

# Where in a line each stamp may start: a timestamp deep inside a message is content, not a stamp.
_ISO_WINDOW = 48
_SYSLOG_WINDOW = 24
_CLF_WINDOW = 256


def _tz(text: str | None) -> timezone | None:
    if not text:
        return None
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4])))


def _epoch(year: int, month: int, day: int, hh: int, mm: int, ss: int, micro: int = 0,
           tz: timezone | None = None) -> float | None:
    try:
        stamp = datetime(year, month, day, hh, mm, ss, micro, tzinfo=tz)
    except ValueError:  # 2026-13-45 is not a date, whatever the regex thought
        return None
    return stamp.timestamp()  # naive stamps are taken as the node's local time


def parse_timestamp(line: str, now: float | None = None) -> float | None:
    """The epoch seconds of the timestamp ``line`` starts with, or ``None``.

    Recognised: ISO-8601 (``2026-11-24T02:30:00``, ``2026-11-24 02:30:00,123``, with an
    optional ``Z`` / ``+01:00``), nginx error log (``2026/11/24 02:30:00``), syslog
    (``Nov 24 02:30:00``: the year is the current one, or the previous one when that
    would put the line more than a day in the future) and nginx/combined access log
    (``[24/Nov/2026:02:30:00 +0000]``). Stamps without a zone are local time.
    """
    m = _ISO_RE.search(line, 0, _ISO_WINDOW + 40)
    if m and m.start() <= _ISO_WINDOW:
        frac = (m.group(7) or "0")[:6].ljust(6, "0")
        y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
        return _epoch(y, mo, d, hh, mi, ss, int(frac), _tz(m.group(8)))
    m = _CLF_RE.search(line, 0, _CLF_WINDOW)
    if m:
        d, mon, y = int(m.group(1)), _MONTHS[m.group(2).lower()], int(m.group(3))
        hh, mi, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
        return _epoch(y, mon, d, hh, mi, ss, 0, _tz(m.group(7)))
    m = _SLASH_RE.search(line, 0, _ISO_WINDOW + 20)
    if m and m.start() <= _ISO_WINDOW:
        y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
        return _epoch(y, mo, d, hh, mi, ss)
    m = _SYSLOG_RE.search(line, 0, _SYSLOG_WINDOW + 16)
    if m and m.start() <= _SYSLOG_WINDOW:
        now = time.time() if now is None else now
        year = datetime.fromtimestamp(now).year
        mon, d = _MONTHS[m.group(1).lower()], int(m.group(2))
        hh, mi, ss = int(m.group(3)), int(m.group(4)), int(m.group(5))
        stamp = _epoch(year, mon, d, hh, mi, ss)
        if stamp is not None and stamp > now + 86400:  # "Dec 31" read on Jan 1 is last year's
            stamp = _epoch(year - 1, mon, d, hh, mi, ss)
        return stamp
    return None


def iso(epoch: float | None) -> str | None:
    """``epoch`` as an ISO-8601 string in UTC, or ``None``."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", errors="replace")


def iter_lines_reverse(path: Path, block_size: int = BLOCK_SIZE, max_bytes: int | None = None) -> Iterator[str]:
    """The lines of ``path``, last first, read in blocks of ``block_size`` from the end.

    Memory stays bounded by one block plus one line (lines longer than
    :data:`MAX_LINE_BYTES` keep only their end). A final line without a newline
    counts as a line. With ``max_bytes`` at most that many bytes from the end are read.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        stop = 0 if max_bytes is None else max(0, end - max_bytes)
        pos = end
        pending = b""  # the end part of a line whose start lies in an earlier block
        first = True
        while pos > stop:
            size = min(block_size, pos - stop)
            pos -= size
            f.seek(pos)
            block = f.read(size) + pending
            parts = block.split(b"\n")
            pending = parts[0]
            if len(pending) > MAX_LINE_BYTES:
                pending = pending[-MAX_LINE_BYTES:]
            tail = parts[1:]
            if first:
                first = False
                if tail and tail[-1] == b"":  # the file ends with a newline: no empty last line
                    tail.pop()
            for raw in reversed(tail):
                yield _decode(raw)
        if end > stop:  # the first line of the range (cut when max_bytes stopped mid-line)
            yield _decode(pending)


LineFilter = Callable[[str], bool]


def last_lines(path: Path, count: int, match: LineFilter | None = None,
               max_bytes: int | None = None) -> tuple[list[str], bool]:
    """The last ``count`` lines of ``path`` (matching ``match`` when given), oldest first.

    Returns ``(lines, more)`` where ``more`` says earlier (matching) lines exist.
    """
    found: list[str] = []
    for line in iter_lines_reverse(path, max_bytes=max_bytes):
        if match is None or match(line):
            if len(found) == count:
                return found[::-1], True
            found.append(line)
    return found[::-1], False


@dataclass
class Match:
    """A line that matched a search, with its (possibly inherited) timestamp."""

    line: str
    timestamp: float | None


#: A line stamped this much earlier than the window start ends a backwards scan (logs written
#: by several threads are only roughly in order).
ORDER_SLACK = 300.0


def search_file(path: Path, match: LineFilter, limit: int, since: float | None = None,
                now: float | None = None, max_bytes: int | None = None) -> tuple[list[Match], bool]:
    """Up to ``limit`` newest lines of ``path`` that ``match`` (and are not older than ``since``).

    A line without a timestamp inherits the one of the nearest earlier stamped line.
    Reading goes backwards and stops once the lines are older than the window. Returns
    ``(matches oldest first, truncated)``.
    """
    found: list[Match] = []
    waiting: list[str] = []  # matching lines read (backwards) whose inherited stamp is not known yet
    truncated = False

    def settle(stamp: float | None) -> bool:
        """Give ``waiting`` lines ``stamp``; False once ``limit`` is exceeded."""
        nonlocal truncated
        for text in waiting:
            if since is not None and (stamp is None or stamp < since):
                continue
            if len(found) == limit:
                truncated = True
                return False
            found.append(Match(text, stamp))
        waiting.clear()
        return True

    for line in iter_lines_reverse(path, max_bytes=max_bytes):
        stamp = parse_timestamp(line, now)
        if match(line):
            waiting.append(line)
        if stamp is None:
            continue
        if not settle(stamp):
            break
        if since is not None and stamp < since - ORDER_SLACK:
            waiting.clear()
            break
    else:
        # Lines before the first stamp in the file have nothing to inherit.
        settle(None)
    return found[::-1], truncated


@dataclass
class FileFollower:
    """Follows a growing file by polling, through rotation and truncation.

    ``open(at_end=True)`` remembers where the file ends; each :meth:`poll` returns the
    complete lines appended since. Rotation (the path now names another file) first
    drains the old file to its end, then continues with the new file from its start;
    truncation (the file got shorter than what was read) restarts at offset 0. A file
    that does not exist yet is read from its start once it appears. ``allow`` vets a
    path before it is opened (confinement rules of the caller).
    """

    path: Path
    allow: Callable[[Path], bool] = lambda _p: True
    _fd: int | None = None
    _ident: tuple[int, int] | None = None
    _pos: int = 0
    _partial: bytes = b""
    #: The last bytes read before ``_pos``: if they change, the file was rewritten in place.
    _sig: bytes = b""
    _buffered: list[str] = field(default_factory=list)

    def open(self, at_end: bool = True) -> None:
        """Start following; ``at_end`` skips what the file already holds."""
        self.close()
        self._open_current(at_end)

    def _open_current(self, at_end: bool) -> bool:
        if not self.allow(self.path):
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        st = os.fstat(fd)
        self._fd, self._ident, self._partial = fd, (st.st_dev, st.st_ino), b""
        self._pos = st.st_size if at_end else 0
        self._sig = self._signature()
        return True

    def _signature(self) -> bytes:
        assert self._fd is not None
        size = min(SIG_BYTES, self._pos)
        return os.pread(self._fd, size, self._pos - size) if size else b""

    def close(self) -> None:
        """Release the open file."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._ident = None, None

    def _read_new(self, budget: int) -> int:
        """Read appended bytes of the open file into lines; returns bytes read."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        # Truncated in place (copytruncate, "> file"): start over. A shrink shows it; when the
        # file was already refilled past the old offset, the changed bytes before it show it.
        if size < self._pos or (self._sig and self._signature() != self._sig):
            self._pos, self._partial, self._sig = 0, b"", b""
        total = 0
        while self._pos < size and total < budget:
            chunk = os.pread(self._fd, min(BLOCK_SIZE * 4, size - self._pos, budget - total), self._pos)
            if not chunk:
                break
            self._pos += len(chunk)
            total += len(chunk)
            parts = (self._partial + chunk).split(b"\n")
            self._partial = parts.pop()
            self._buffered.extend(_decode(p[:MAX_LINE_BYTES]) for p in parts)
            if len(self._partial) > MAX_LINE_BYTES:  # an endless line: hand it out in pieces
                self._buffered.append(_decode(self._partial[:MAX_LINE_BYTES]))
                self._partial = self._partial[MAX_LINE_BYTES:]
        if total:
            self._sig = self._signature()
        return total

    def _flush_partial(self) -> None:
        if self._partial:
            self._buffered.append(_decode(self._partial))
            self._partial = b""

    def poll(self) -> list[str]:
        """The complete lines written since the last poll, in order."""
        budget = MAX_POLL_BYTES
        if self._fd is None and not self._open_current(at_end=False):
            return self._take()
        # Look at the path before draining: whatever the old file got up to now is read below.
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None  # renamed away and not recreated yet: keep reading the old file
        budget -= self._read_new(budget)
        # Rotated: the old file is finished once drained; its unterminated last line is a line.
        if (current is not None and current != self._ident and self._fd is not None
                and self._pos >= os.fstat(self._fd).st_size):
            self._flush_partial()
            self.close()
            if self._open_current(at_end=False):
                self._read_new(budget)
        return self._take()

    def _take(self) -> list[str]:
        lines, self._buffered = self._buffered, []
        return lines
