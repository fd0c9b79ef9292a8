"""HTTP endpoints under attack: tokens kept out of logs, dashboard headers, /authorize, /refresh, /ui/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from cloudisense.client import Connection, login
from cloudisense.core.auth import LoginLimiter
from cloudisense.store.users import client_credential
from tests.conftest import PASSWORDS, Running, make_settings, start_server


async def fetch(url: str, **kwargs: object) -> HTTPResponse:
    """A request that returns error answers instead of raising."""
    return await AsyncHTTPClient().fetch(url, raise_error=False, **kwargs)  # type: ignore[arg-type]


async def authorize(base: str, body: bytes | str, content_type: str = "application/x-www-form-urlencoded") -> HTTPResponse:
    return await fetch(base + "/authorize", method="POST", body=body, headers={"Content-Type": content_type})


async def test_access_token_never_in_the_access_log(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = await login(running.url, "oper", PASSWORDS["oper"])
    access = tokens["access"]["token"]
    conn = await Connection.open(running.url, access)
    await conn.call("list_channels")
    conn.close()
    refused = await fetch(running.url + "/ws?token=" + access + "x")  # a bad token is logged as a 401 line
    assert refused.code == 401
    lines = [r.getMessage() for r in caplog.records]
    assert any("/ws" in line for line in lines), lines  # the requests were logged...
    assert not any(access in line or "token=" in line for line in lines)  # ...without their token


async def test_dashboard_security_headers_and_traversal(running: Running) -> None:
    for path in ("/ui/", "/ui/js/main.js", "/ui/js/core.js", "/ui/vendor/dompurify/purify.es.js", "/ui/css/base.css"):
        resp = await fetch(running.url + path)
        assert resp.code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        if path.endswith(".js"):  # with nosniff, a module script of another type is refused by the browser
            assert "javascript" in resp.headers["Content-Type"], path
    for path in ("/ui/../server/app.py", "/ui/..%2fserver%2fapp.py", "/ui/%2e%2e/%2e%2e/pyproject.toml",
                 "/ui/..%5c..%5cpyproject.toml", "/ui//etc/passwd", "/ui/%00index.html", "/ui/" + "a" * 5000):
        resp = await fetch(running.url + path)
        assert resp.code in (400, 403, 404), (path, resp.code)
        assert b"import" not in (resp.body or b"") and b"root:" not in (resp.body or b"")
    answer = await fetch(running.url + "/healthz")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_authorize_rejects_malformed_input_cleanly(tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, auth={"login_max_failures": 100}))
    try:
        await _malformed_logins(running.url)
    finally:
        await running.server.stop()


async def _malformed_logins(base: str) -> None:
    cases = [
        (b"", "application/x-www-form-urlencoded"),
        (b"username=admin", "application/x-www-form-urlencoded"),
        (b"password=" + client_credential("x").encode(), "application/x-www-form-urlencoded"),
        (b"{}", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"username": 5, "password": ["x"]}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # deeper than json.loads can recurse
        (b"{not json", "application/json"),
        (b'{"username": "admin", "password": NaN}', "application/json"),
        (b"\xff\xfe\x00garbage", "text/plain"),
    ]
    for body, ctype in cases:
        resp = await authorize(base, body, ctype)
        assert resp.code in (400, 401), (body[:40], resp.code)
        answer = json.loads(resp.body)
        assert answer["status"] == "error" and answer["code"] == resp.code
    # A body over the server's 1 MiB limit is refused without reading it into a handler.
    big = await authorize(base, b"username=" + b"a" * 2_000_000)
    assert big.code >= 400


async def test_rate_limit_is_not_bypassed_by_case_or_spaces(running: Running) -> None:
    base = running.url
    limit = running.node.settings.auth.login_max_failures
    clock = [1000.0]  # frozen: the backoff after the last failure must not pass during the test
    running.node.login_limiter = LoginLimiter(limit, running.node.settings.auth.login_window, clock=lambda: clock[0])
    for _ in range(limit):
        assert (await authorize(base, f"username=oper&password={client_credential('wrong')}")).code == 401
    assert (await authorize(base, f"username=oper&password={client_credential('wrong')}")).code == 429
    clock[0] += 2.0  # past the first backoff (1 s): one more failure doubles it
    assert (await authorize(base, f"username=oper&password={client_credential('wrong')}")).code == 401
    # Variants are other (non-existent) accounts: they can't log in as oper, even with its password.
    good = client_credential(PASSWORDS["oper"])
    for variant in ("Oper", "OPER", " oper", "oper ", "oper\t", "ｏｐｅｒ"):
        resp = await authorize(base, json.dumps({"username": variant, "password": good}), "application/json")
        assert resp.code in (401, 429), variant
        assert "access" not in resp.body.decode()
    # And oper itself waits out its backoff at this address even with the right password.
    locked = await authorize(base, f"username=oper&password={good}")
    assert locked.code == 429


def test_login_limiter_memory_is_bounded_for_long_names() -> None:
    limiter = LoginLimiter(max_failures=3, window_seconds=60)
    for i in range(50):
        limiter.failed(f"{i}" + "x" * 1_000_000, f"10.0.0.{i}")
    assert max(len(name) + len(address) for name, address in limiter._failures) <= 200


async def test_refresh_needs_a_refresh_token_and_rereads_the_role(running: Running) -> None:
    tokens = await login(running.url, "oper", PASSWORDS["oper"])
    as_access = await fetch(running.url + "/refresh", method="POST",
                            body=f"refresh={tokens['access']['token']}")
    assert as_access.code == 401 and "refresh" in json.loads(as_access.body)["message"]
    await running.node.db.execute("UPDATE users SET role = 'viewer' WHERE username = 'oper'")
    fresh = await fetch(running.url + "/refresh", method="POST", body=f"refresh={tokens['refresh']['token']}")
    assert fresh.code == 200
    claims = running.node.tokens.verify(json.loads(fresh.body)["data"]["access"]["token"])
    assert claims.role.value == "viewer"


async def test_refused_handshakes_say_why_without_echoing_the_token(running: Running) -> None:
    tokens = await login(running.url, "admin", PASSWORDS["admin"])
    refresh = tokens["refresh"]["token"]
    for query, expected in ((f"?token={refresh}", "not an access token"), ("?token=abc.def.ghi", "invalid token"),
                            ("", "missing token"), ("?token=" + "a" * 4000, "invalid token")):
        resp = await fetch(running.url + "/ws" + query)
        assert resp.code == 401
        body = resp.body.decode()
        assert expected in body and refresh not in body
