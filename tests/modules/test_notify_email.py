"""``simple_email_notify`` against a real local SMTP server (aiosmtpd): plain, STARTTLS with login, SSL."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from cloudisense.core.errors import ConfigError
from cloudisense.modules.notify import NotifySettings
from tests.conftest import Running, make_settings, start_server

aiosmtpd = pytest.importorskip("aiosmtpd", reason="the test extra is not installed (pip install -e '.[test]')")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

MODULES = ["pubsub", "system", "audit", "notify"]
PASSWORD = "smtp-Secret-pw-42"
TEAM = ["ops@example.com", "oncall@example.com"]


@dataclass
class Mailbox:
    """What the SMTP server received: envelopes and parsed messages."""

    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def body(mail: Message) -> str:
    """The text of a received mail (SMTP line ends made plain)."""
    return mail.get_payload(decode=True).decode().replace("\r\n", "\n").strip()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command): (cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@contextmanager
def smtp_server(mode: str = "plain", certificate: tuple[Path, Path] | None = None) -> Iterator[tuple[Mailbox, int]]:
    """aiosmtpd on 127.0.0.1: ``plain``, ``starttls`` (login required after STARTTLS) or ``ssl``."""
    box = Mailbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if mode != "plain":
        assert certificate is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == b"alerts" and data.password == PASSWORD.encode()
            if ok:
                box.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

        kwargs = {"authenticator": authenticate, "auth_require_tls": True}
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True, auth_required=True)
        else:
            # aiosmtpd counts only STARTTLS as TLS; the whole session is TLS here.
            kwargs.update(ssl_context=context, auth_required=True, auth_require_tls=False)
    controller = Controller(box, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@asynccontextmanager
async def node(tmp_path: Path, email: dict[str, Any], **notify: Any) -> AsyncIterator[Running]:
    """A server with the notify module and fast retries."""
    settings = make_settings(tmp_path, modules=MODULES,
                             notify={"backoff": 0.01, "timeout": 5, "retries": 1, "email": email, **notify})
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.server.stop()


def mail_settings(port: int, **more: Any) -> dict[str, Any]:
    """``[notify.email]`` for the local server."""
    return {"host": "127.0.0.1", "port": port, "from_address": "cloudisense@example.com", "recipients": TEAM,
            **more}


async def test_plain_relay_sends_to_the_allow_list_only(tmp_path: Path) -> None:
    with smtp_server() as (box, port):
        async with node(tmp_path, mail_settings(port, security="none", subject="Ops notice")) as r:
            conn = await r.connect("oper")
            await conn.call("subscribe_channel", {"topic": "/notification"})
            sent = await conn.call("simple_email_notify", {"message": "the backup failed\nsee the log"})
            assert sent["delivered"] == 2 and sent["recipients"] == TEAM and sent["subject"] == "Ops notice"
            sender, to, mail = box.mails[-1]
            assert sender == "cloudisense@example.com" and to == TEAM
            assert mail["Subject"] == "Ops notice" and mail["X-CloudiSENSE-Node"] == "test-node"
            assert body(mail) == "the backup failed\nsee the log"
            event = await conn.next_event("/notification")
            assert event["data"]["data"]["via"] == "email" and event["data"]["code"] == 2

            one = await conn.call("simple_email_notify", {"message": "only you", "subject": "Disk",
                                                          "to": ["OnCall@example.com"]})
            assert one["recipients"] == ["oncall@example.com"] and box.mails[-1][1] == ["oncall@example.com"]
            assert box.mails[-1][2]["Subject"] == "Disk"

            count = len(box.mails)
            stranger = await conn.request("simple_email_notify", {"message": "x", "to": ["evil@example.org"]})
            assert stranger["code"] == 400 and "notify.email.recipients" in stranger["message"]
            # A header can't be smuggled in through the subject.
            injected = await conn.request("simple_email_notify", {"message": "x", "subject": "hi\r\nBcc: evil@x.org"})
            assert injected["code"] == 400 and "subject" in injected["message"]
            assert len(box.mails) == count

            viewer = await r.connect("viewer")
            assert (await viewer.request("simple_email_notify", {"message": "x"}))["code"] == 403
            viewer.close()
            conn.close()


async def test_starttls_with_login_keeps_the_password_secret(tmp_path: Path, certificate: tuple[Path, Path],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with smtp_server("starttls", certificate) as (box, port):
        good = mail_settings(port, security="starttls", username="alerts", password=PASSWORD,
                             ca_file=str(certificate[0]))
        async with node(tmp_path, good) as r:
            conn = await r.connect("oper")
            sent = await conn.call("simple_email_notify", {"message": "redis restarted"})
            assert sent["delivered"] == 2 and box.logins == ["alerts"] and len(box.mails) == 1
            admin = await r.connect("admin")
            config = await admin.call("get_configuration", {})
            audit = await admin.call("get_audit_log", {"intent": "simple_email_notify"})
            texts += [json.dumps(x) for x in (sent, config, audit)]
            admin.close()
            conn.close()
        async with node(tmp_path / "wrong", {**good, "password": "not-" + PASSWORD}) as r:
            conn = await r.connect("oper")
            refused = await conn.request("simple_email_notify", {"message": "x"})
            assert refused["code"] == 500 and "535" in refused["message"] and "1 attempt" in refused["message"]
            texts.append(json.dumps(refused))
            conn.close()
        # The server's certificate is checked: without the CA file it is not trusted, and nothing is sent.
        async with node(tmp_path / "untrusted", {**good, "ca_file": None}) as r:
            conn = await r.connect("oper")
            untrusted = await conn.request("simple_email_notify", {"message": "x"})
            assert untrusted["code"] == 500 and "TLS" in untrusted["message"] and "ca_file" in untrusted["message"]
            texts.append(json.dumps(untrusted))
            conn.close()
        assert len(box.mails) == 1
    for text in texts + [rec.getMessage() for rec in caplog.records]:
        assert PASSWORD not in text


async def test_ssl_and_a_server_that_cannot_upgrade(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    with smtp_server("ssl", certificate) as (box, port):
        settings = mail_settings(port, security="ssl", username="alerts", password=PASSWORD,
                                 ca_file=str(certificate[0]))
        async with node(tmp_path, settings) as r:
            conn = await r.connect("oper")
            assert (await conn.call("simple_email_notify", {"message": "over ssl"}))["delivered"] == 2
            assert body(box.mails[-1][2]) == "over ssl"
            conn.close()
    with smtp_server() as (box, port):
        # STARTTLS asked of a server without it: refused, never sent in clear.
        async with node(tmp_path / "plain", mail_settings(port, security="starttls")) as r:
            conn = await r.connect("oper")
            answer = await conn.request("simple_email_notify", {"message": "x"})
            assert answer["code"] == 500 and "STARTTLS" in answer["message"] and box.mails == []
            conn.close()


async def test_unreachable_unconfigured_and_bad_settings(tmp_path: Path) -> None:
    async with node(tmp_path, mail_settings(free_port(), security="none")) as r:
        conn = await r.connect("oper")
        down = await conn.request("simple_email_notify", {"message": "x"})
        assert down["code"] == 500 and "2 attempt" in down["message"] and "SMTP server 127.0.0.1" in down["message"]
        conn.close()
    async with node(tmp_path / "off", {}) as r:
        conn = await r.connect("oper")
        off = await conn.request("simple_email_notify", {"message": "x"})
        assert off["code"] == 503 and "notify.email.host" in off["message"]
        conn.close()
    for bad, words in (({"security": "none", "username": "u", "password": "p"}, "never sent unencrypted"),
                       ({"recipients": ["not an address"]}, "not a plain e-mail address"),
                       ({"from_address": "Ops <ops@example.com>"}, "not a plain e-mail address")):
        with pytest.raises(ConfigError) as info:
            settings = make_settings(tmp_path / "bad", modules=MODULES, notify={"email": {**mail_settings(25), **bad}})
            settings.section("notify", NotifySettings)
        assert words in str(info.value)
