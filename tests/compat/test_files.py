"""CloudiSENSE's file manager, every call, as the existing client makes it (RPC and REST)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.compat.client import ClientRejected, ExistingClient
from tests.conftest import PASSWORDS, Running, make_settings, start_server


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    docs = tmp_path / "real-docs-folder"
    (docs / "sub" / "deeper").mkdir(parents=True)
    (docs / "notes.txt").write_text("hello notes\n")
    (docs / "config.json").write_text('{"a": 1}')
    (docs / "big.txt").write_text("x" * 5000)
    (docs / "image.bin").write_bytes(b"\x00\x01")
    (docs / "sub" / "inner.md").write_text("# inner\n")
    (docs / "sub" / "deeper" / "leaf.txt").write_text("leaf")
    (docs / "empty").mkdir()
    (docs / "folder.txt").mkdir()  # a folder with a readable extension
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not read")
    (docs / "escape.txt").symlink_to(outside / "secret.txt")
    (docs / "linkdir").symlink_to(outside, target_is_directory=True)
    ro = tmp_path / "readonly-folder"
    ro.mkdir()
    (ro / "keep.txt").write_text("keep me")
    (tmp_path / "app.log").write_text("line 1\nline 2\n")
    settings = make_settings(
        tmp_path, modules=["pubsub", "audit", "logs", "files"], logs={"files": {"app": str(tmp_path / "app.log")}},
        files={"roots": {"docs": {"path": str(docs), "writable": True, "downloadable": True},
                         "ro": {"path": str(ro)}},
               "max_read_bytes": 4096, "max_write_bytes": 64})
    r = await start_server(settings)
    yield r
    await r.server.stop()


async def client(r: Running, user: str = "oper") -> ExistingClient:
    c = ExistingClient(r.url)
    await c.login(user, PASSWORDS[user])
    return c


async def refused(c: ExistingClient, intent: str, params: dict[str, Any]) -> ClientRejected:
    with pytest.raises(ClientRejected) as info:
        await c.execute(intent, params)
    return info.value


async def post(r: Running, path: str, fields: dict[str, str], token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    resp = await AsyncHTTPClient().fetch(HTTPRequest(r.url + path, method="POST", body=urlencode(fields),
                                                     headers=headers), raise_error=False)
    return resp.code, json.loads(resp.body)


async def test_browse_read_write_delete(node: Running, tmp_path: Path) -> None:
    c = await client(node)
    answers: list[Any] = []
    roots = await c.execute("get_accessible_paths")
    assert roots == ["docs", "ro"]
    top = await c.execute("list_content", {"root": "docs", "path": ""})
    kinds = {i["name"]: i["type"] for i in top["items"]}
    assert kinds["notes.txt"] == "file" and kinds["sub"] == "dir" and kinds["escape.txt"] == "link"
    assert top["path"] == "docs" and top["writable"] is True
    inner = await c.execute("list_content", {"root": "docs", "path": "sub"})
    assert [i["path"] for i in inner["items"]] == ["docs/sub/deeper", "docs/sub/inner.md"]
    read = await c.execute("read_file", {"path": "docs/notes.txt"})
    assert read["content"] == "hello notes\n" and read["encoded"] is False
    encoded = await c.execute("read_file", {"path": "docs/config.json", "encoded": True})
    assert base64.b64decode(encoded["content"]) == b'{"a": 1}'
    written = await c.execute("write_file", {"path": "docs/sub/new.txt", "content": "fresh", "update": True})
    assert written["created"] is True and (tmp_path / "real-docs-folder" / "sub" / "new.txt").read_text() == "fresh"
    assert (await refused(c, "write_file", {"path": "docs/sub/new.txt", "content": "x", "update": False})).code == 409
    b64 = base64.b64encode(b"binary\x00ok").decode()
    await c.execute("write_file", {"path": "docs/sub/new.txt", "content": b64, "encoded": True})
    assert (tmp_path / "real-docs-folder" / "sub" / "new.txt").read_bytes() == b"binary\x00ok"
    assert (await c.execute("delete_file", {"path": "docs/sub/new.txt"}))["deleted"] is True
    assert (await refused(c, "delete_file", {"path": "docs/sub/new.txt"})).code == 404
    assert (await c.execute("delete_folder", {"root": "docs", "dirname": "empty"}))["deleted"] is True
    not_empty = await refused(c, "delete_folder", {"root": "docs", "dirname": "sub"})
    assert not_empty.code == 409 and "delete_non_empty" in str(not_empty)
    await c.execute("delete_folder", {"root": "docs", "dirname": "sub", "delete_non_empty": True})
    assert not (tmp_path / "real-docs-folder" / "sub").exists()
    answers += [roots, top, inner, read, written]
    # The concealment map: no answer shows where the folders really are.
    assert str(tmp_path) not in json.dumps(answers) and "real-docs-folder" not in json.dumps(answers)
    c.close()


async def test_refusals(node: Running, tmp_path: Path) -> None:
    c = await client(node)
    cases = [
        ("read_file", {"path": "docs/../outside/secret.txt"}, 403, "'..'"),
        ("list_content", {"root": "docs", "path": "sub/../.."}, 403, "'..'"),
        ("read_file", {"path": "/etc/passwd"}, 400, "names no file"),
        ("read_file", {"path": "docs"}, 400, "names no file"),
        ("read_file", {"path": "docs/sub"}, 403, "only"),
        ("read_file", {"path": "docs/folder.txt"}, 400, "not a regular file"),
        ("write_file", {"path": "docs/folder.txt", "content": "x"}, 400, "not a regular file"),
        ("read_file", {"path": "docs/notes.txt/x.txt"}, 400, "not a folder"),
        ("read_file", {"path": "docs//etc/passwd"}, 400, "refused"),
        ("read_file", {"path": "docs/escape.txt"}, 403, "symbolic link"),
        ("read_file", {"path": "docs/linkdir/secret.txt"}, 403, "symbolic link"),
        ("list_content", {"root": "docs", "path": "linkdir"}, 403, "symbolic link"),
        ("write_file", {"path": "docs/linkdir/planted.txt", "content": "x"}, 403, "symbolic link"),
        ("delete_file", {"path": "docs/escape.txt"}, 403, "symbolic link"),
        ("read_file", {"path": "docs/image.bin"}, 403, "only"),
        ("write_file", {"path": "docs/run.sh", "content": "rm -rf /"}, 403, "only"),
        ("read_file", {"path": "docs/big.txt"}, 400, "at most 4096"),
        ("write_file", {"path": "docs/long.txt", "content": "y" * 65}, 400, "at most 64"),
        ("write_file", {"path": "docs/bad.txt", "content": "!!not base64", "encoded": True}, 400, "base64"),
        ("write_file", {"path": "ro/keep.txt", "content": "changed"}, 403, "read-only"),
        ("delete_file", {"path": "ro/keep.txt"}, 403, "read-only"),
        ("delete_folder", {"root": "docs", "dirname": "."}, 403, "configured folder"),
        ("delete_folder", {"root": "docs", "dirname": "notes.txt"}, 400, "not a folder"),
        ("delete_file", {"path": "docs/sub"}, 400, "delete_folder"),
        ("list_content", {"root": "nowhere", "path": ""}, 404, "docs, ro"),
        ("download_file", {"path": "ro/keep.txt"}, 403, "can't be downloaded"),
        ("read_file", {"path": "docs/a\\b.txt"}, 400, "refused"),
        ("read_file", {"path": "docs/notes.txt", "shell": "1"}, 400, "shell"),
    ]
    for intent, params, code, text in cases:
        err = await refused(c, intent, params)
        assert err.code == code and text in str(err), (intent, params, err.code, str(err))
        assert str(tmp_path) not in str(err)
    assert (tmp_path / "outside" / "secret.txt").read_text() == "do not read"
    assert not (tmp_path / "outside" / "planted.txt").exists()
    assert (tmp_path / "readonly-folder" / "keep.txt").read_text() == "keep me"
    viewer = await client(node, "viewer")
    assert (await refused(viewer, "write_file", {"path": "docs/v.txt", "content": "x"})).code == 403
    assert (await refused(viewer, "delete_file", {"path": "docs/notes.txt"})).code == 403
    # The risks the assistant's policy reads.
    risks = {i.name: i.risk.value for i in node.node.registry.all() if i.module == "files"}
    assert risks["delete_file"] == risks["delete_folder"] == "destructive" and risks["write_file"] == "write"
    assert risks["read_file"] == risks["list_content"] == risks["download_file"] == "read"
    c.close()
    viewer.close()


async def test_downloads_expire_and_dynamic_links_work_once(node: Running, tmp_path: Path) -> None:
    c = await client(node)
    static = await c.execute("download_file", {"path": "docs/notes.txt", "mode": "static"})
    http = AsyncHTTPClient()
    for _ in range(2):
        resp = await http.fetch(node.url + static["url"], raise_error=False)
        assert resp.code == 200 and resp.body == b"hello notes\n"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="notes.txt"'
    dynamic = await c.execute("download_file", {"path": "docs/config.json", "mode": "dynamic"})
    assert (await http.fetch(node.url + dynamic["url"], raise_error=False)).code == 200
    gone = await http.fetch(node.url + dynamic["url"], raise_error=False)
    assert gone.code == 404 and b"expired" in gone.body
    # A link past its expiry time is refused.
    token = static["url"].rsplit("/", 1)[1]
    node.node.module("files").grants[token].expires = 0
    assert (await http.fetch(node.url + static["url"], raise_error=False)).code == 404
    assert (await http.fetch(node.url + "/download/" + "A" * 32, raise_error=False)).code == 404
    # A folder swapped for a link after the link was granted: the download is refused, nothing leaks.
    inner = await c.execute("download_file", {"path": "docs/sub/inner.md"})
    docs = tmp_path / "real-docs-folder"
    (docs / "sub").rename(docs / "sub-moved")
    (docs / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "outside" / "inner.md").write_text("outside content")
    swapped = await http.fetch(node.url + inner["url"], raise_error=False)
    assert swapped.code == 403 and b"outside content" not in swapped.body
    c.close()


async def test_rest_routes_take_the_token_and_are_audited(node: Running, tmp_path: Path) -> None:
    c = await client(node)
    code, body = await post(node, "/file/read", {"path": "docs/notes.txt"}, c.token)
    assert code == 200 and body["status"] == "success" and base64.b64decode(body["data"]) == b"hello notes\n"
    content = base64.b64encode(b"via rest").decode()
    code, body = await post(node, "/file/write", {"path": "docs/rest.txt", "content": content}, c.token)
    assert code == 200 and (tmp_path / "real-docs-folder" / "rest.txt").read_bytes() == b"via rest"
    code, body = await post(node, "/file/read", {"path": "docs/escape.txt"}, c.token)
    assert code == 403 and body["status"] == "error" and "symbolic link" in body["message"]
    code, body = await post(node, "/file/read", {"path": "docs/notes.txt"}, None)
    assert code == 401 and body["status"] == "error"
    code, body = await post(node, "/file/read", {"path": "docs/notes.txt"}, "forged.token.value")
    assert code == 401
    code, body = await post(node, "/log/download/dynamic", {"logname": "app"}, c.token)
    assert code == 200 and body["data"].startswith("/download/")
    resp = await AsyncHTTPClient().fetch(node.url + body["data"], raise_error=False)
    assert resp.code == 200 and resp.body == b"line 1\nline 2\n"
    code, body = await post(node, "/log/download/static", {"logname": "../etc/passwd"}, c.token)
    assert code == 400
    viewer = await client(node, "viewer")
    code, body = await post(node, "/file/write", {"path": "docs/v.txt", "content": content}, viewer.token)
    assert code == 403 and "viewer" in body["message"]
    admin = await client(node, "admin")
    records = (await admin.execute("get_audit_log", {"limit": 50}))["records"]
    rest = [(r["intent"], r["user"], r["code"]) for r in records if r["client_kind"] == "http"]
    assert ("read_file", "oper", 200) in rest and ("write_file", "oper", 200) in rest
    assert ("read_file", "oper", 403) in rest and ("write_file", "viewer", 403) in rest
    assert ("download", "oper", 200) in rest
    for x in (c, viewer, admin):
        x.close()
