"""Unit tests of the log file helpers: timestamps, the reverse reader, search and the follower."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cloudisense.core.errors import BadRequest
from cloudisense.modules.logfiles import (
    MAX_LINE_BYTES,
    FileFollower,
    iter_lines_reverse,
    last_lines,
    parse_timestamp,
    search_file,
)
from cloudisense.modules.logs import check_log_name, make_filter


def local(*args: int) -> float:
    """Epoch of a local-time moment."""
    return datetime(*args).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(("line", "expected"), [
    ("2026-11-24T02:30:00 INFO x", local(2026, 11, 24, 2, 30, 0)),
    ("2026-11-24 02:30:00,123 ERROR x", local(2026, 11, 24, 2, 30, 0) + 0.123),
    ("[2026-11-24 02:30:00.5] x", local(2026, 11, 24, 2, 30, 0) + 0.5),
    ("2026-11-24T02:30:00Z x", datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc).timestamp()),
    ("2026-11-24T02:30:00+01:00 x", datetime(2026, 11, 24, 1, 30, tzinfo=timezone.utc).timestamp()),
    ('10.0.0.1 - - [24/Nov/2026:02:30:00 +0000] "GET / HTTP/1.1" 200',
     datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc).timestamp()),
    ('10.0.0.1 - bob [24/Nov/2026:04:30:00 +0200] "GET /"', datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc).timestamp()),
    ("2026/11/24 02:30:00 [error] 12#12: upstream timed out", local(2026, 11, 24, 2, 30, 0)),
])
def test_parse_timestamp_formats(line: str, expected: float) -> None:
    assert parse_timestamp(line) == pytest.approx(expected)


def test_parse_syslog_year() -> None:
    now = local(2026, 11, 24, 12, 0, 0)
    assert parse_timestamp("Nov 24 02:30:00 host cron[1]: ok", now) == local(2026, 11, 24, 2, 30, 0)
    assert parse_timestamp("Nov  4 02:30:00 host x", now) == local(2026, 11, 4, 2, 30, 0)
    # Read on January 1st, a December line is from the year before.
    assert parse_timestamp("Dec 31 23:59:59 host x", local(2027, 1, 1, 0, 0, 5)) == local(2026, 12, 31, 23, 59, 59)


@pytest.mark.parametrize("line", [
    "no stamp at all", "  continuation line", "", "2026-13-45T99:99:99 not a date",
    "a message that mentions, well after the start of its line, 2026-11-24T02:30:00 in its text",
])
def test_parse_timestamp_none(line: str) -> None:
    assert parse_timestamp(line) is None


@pytest.mark.parametrize("content", [b"", b"\n", b"a", b"a\n", b"a\nb", b"a\n\nb\n", b"one\r\ntwo\r\n",
                                     "é\nü∂\n".encode() * 50, b"x" * 1000 + b"\n" + b"y" * 999])
@pytest.mark.parametrize("block", [1, 3, 7, 4096])
def test_reverse_reader_matches_forward(tmp_path: Path, content: bytes, block: int) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(content)
    expected = content.decode().splitlines() if content != b"\n" else [""]
    assert list(iter_lines_reverse(path, block_size=block)) == expected[::-1]


def test_reverse_reader_long_line_keeps_its_end(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"first\n" + b"a" * (MAX_LINE_BYTES * 3) + b"END\nlast\n")
    lines = list(iter_lines_reverse(path, block_size=4096))
    assert lines[0] == "last" and lines[2] == "first"
    assert lines[1].endswith("END") and len(lines[1]) <= MAX_LINE_BYTES + 4096


def test_reverse_reader_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    reader = iter_lines_reverse(path, block_size=1024)
    assert [next(reader) for _ in range(3)] == ["line 99999", "line 99998", "line 99997"]
    assert last_lines(path, 2) == (["line 99998", "line 99999"], True)
    assert last_lines(path, 2, match=lambda s: s.endswith("00")) == (["line 99800", "line 99900"], True)
    assert list(iter_lines_reverse(path, max_bytes=15)) == ["line 99999", "998"]  # the cut first line


def test_search_inherits_stamps_and_stops_at_window(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_text("orphan error before any stamp\n"
                    "2026-11-24T01:00:00 ERROR early\n"
                    "  error detail early\n"
                    "2026-11-24T02:00:00 INFO fine\n"
                    "  error inherits 02:00\n"
                    "2026-11-24T02:30:00 ERROR late\n")
    now = local(2026, 11, 24, 2, 31, 0)
    matches, truncated = search_file(path, make_filter("error", False), 10, since=local(2026, 11, 24, 1, 59, 0), now=now)
    assert [m.line for m in matches] == ["  error inherits 02:00", "2026-11-24T02:30:00 ERROR late"]
    assert matches[0].timestamp == local(2026, 11, 24, 2, 0, 0) and not truncated
    matches, truncated = search_file(path, make_filter("error", False), 10, now=now)
    assert len(matches) == 5 and matches[0].timestamp is None and matches[2].timestamp == local(2026, 11, 24, 1, 0, 0)
    matches, truncated = search_file(path, make_filter("ERROR", False), 2, now=now)
    assert truncated and [m.line for m in matches] == ["  error inherits 02:00", "2026-11-24T02:30:00 ERROR late"]


def test_filters_and_names() -> None:
    assert make_filter("TimeOut", False)("upstream timeout") is True
    assert make_filter("a.c", False)("abc") is False  # a substring, not a regex
    assert make_filter("a.c", True)("ABC") is True
    for bad in ("(a+)+", "(.*)*x", "(x|y+)+", r"(a)\1"):
        with pytest.raises(BadRequest):
            make_filter(bad, True)
    for bad in ("../x", "/etc/passwd", "a/b", "..", "a\\b", "a\x00"):
        with pytest.raises(BadRequest):
            check_log_name(bad)
    assert check_log_name("nginx-error") == "nginx-error"


def test_follower_rotation_truncation_and_late_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    follower = FileFollower(path)
    follower.open(at_end=True)  # does not exist yet: read from its start once it appears
    assert follower.poll() == []
    path.write_text("a\nb\npartial")
    assert follower.poll() == ["a", "b"]
    with open(path, "a") as f:
        f.write(" done\nc\n")
    assert follower.poll() == ["partial done", "c"]
    os.rename(path, tmp_path / "app.log.1")
    with open(tmp_path / "app.log.1", "a") as f:
        f.write("d\nlast words without newline")
    assert follower.poll() == ["d"]  # old file still read while no new one exists
    path.write_text("e\n")
    assert follower.poll() == ["last words without newline", "e"]
    with open(path, "w") as f:
        f.write("f\n")  # truncated and rewritten to the same size: the changed bytes show it
    assert follower.poll() == ["f"]
    with open(path, "w") as f:
        f.write("g\nhh\n")  # and rewritten to a larger size
    assert follower.poll() == ["g", "hh"]
    follower.close()
    assert follower.poll() == ["g", "hh"]  # reopened from the start after close
    follower.open(at_end=True)
    assert follower.poll() == []


def test_follower_refuses_what_allow_refuses(tmp_path: Path) -> None:
    outside = tmp_path / "outside.log"
    outside.write_text("secret\n")
    link = tmp_path / "logs" / "app.log"
    link.parent.mkdir()
    link.symlink_to(outside)
    from cloudisense.modules.logs import confined

    follower = FileFollower(link, allow=confined)
    follower.open(at_end=False)
    assert follower.poll() == []
    assert confined(outside) is True and confined(link) is False
