"""Outgoing notifications: configured webhooks, a Telegram bot and e-mail over SMTP.

Only configured destinations are reachable: ``simple_http_notify`` accepts a
``webhook`` only when it is one of ``notify.webhooks`` (an arbitrary URL would let
any operator make the node request internal addresses: SSRF), and redirects are
never followed. The Telegram bot token is a secret: it is only ever put into the
request URL, and every error text is scrubbed of it before it reaches a response,
a log line or the audit log. E-mail goes only to addresses of ``[notify.email] recipients`` (an
allow-list), through the configured SMTP server, encrypted (STARTTLS or SSL, certificates checked)
unless ``security = "none"``, which never sends a password; the SMTP password is a secret too.

The channels, by the name escalation routes and :meth:`NotifyModule.notify` use, are
:data:`CHANNELS`.

Every notification is also published on the static topics ``/notification`` (CloudiSENSE's) and
``/notifications`` (the existing client's constant) as a ``text_notification`` event
(``{"message", "code", "data": {via, ok, node, timestamp}}``, ``meta.event = "notification"``).

``simple_http_notify`` also takes CloudiSENSE's rule parameters ``{"http": {"webhook": [...],
"method": ...}}``; each listed webhook must still be a configured one.

Other modules (the assistant's escalation) call :meth:`NotifyModule.notify`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse

from cloudisense.config import ConfigPath, Section
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import ActionFailed, BadRequest, Unavailable
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import NOTICE_ERROR, NOTICE_SUCCESS, TEXT_NOTIFICATION

log = logging.getLogger(__name__)


_ADDRESS_RE = re.compile(r"^[^@\s<>,;\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _address(value: str) -> str:
    """A bare e-mail address (``ops@example.com``), or :class:`ValueError` naming it."""
    _, address = parseaddr(value)
    if not address or address != value.strip() or not _ADDRESS_RE.match(address):
        raise ValueError(f"{value!r} is not a plain e-mail address (like ops@example.com)")
    return address


class EmailSettings(Section):
    """E-mail over SMTP: the server, the sender, and the only addresses mail may go to."""

    #: The SMTP server; e-mail is off while it is unset.
    host: str | None = Field(None, max_length=255)
    #: 587 for STARTTLS, 465 for SSL, 25 for plain relays.
    port: int = Field(587, ge=1, le=65535)
    #: ``starttls`` (upgrade a plain connection), ``ssl`` (TLS from the start) or ``none`` (a local relay;
    #: no password is ever sent over it).
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = Field(None, max_length=255)
    #: Never logged or answered (or ``CLOUDISENSE_NOTIFY__EMAIL__PASSWORD``).
    password: SecretStr | None = None
    #: A CA bundle (PEM) to check the server's certificate against, for servers with a private CA.
    ca_file: ConfigPath | None = None
    #: The sender address.
    from_address: str | None = Field(None, max_length=320)
    #: The allow-list: mail goes only to these addresses (all of them unless a request names some).
    recipients: list[str] = Field(default_factory=list, max_length=100)
    #: Subject of notices that give none.
    subject: str = Field("CloudiSENSE notification", min_length=1, max_length=200)

    @field_validator("from_address")
    @classmethod
    def _check_from(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("recipients")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_address(v).lower() for v in value))

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        if _HEADER_UNSAFE.search(value):
            raise ValueError("the subject must be one line without control characters")
        return value

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> EmailSettings:
        if self.security == "none" and self.password is not None:
            raise ValueError('a password is never sent unencrypted: use security = "starttls" or "ssl", '
                             "or a relay that needs no login")
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self


class NotifySettings(Section):
    """Outgoing notifications."""

    webhooks: list[str] = Field(default_factory=list)
    timeout: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_base_url: str = "https://api.telegram.org"
    #: Seconds before the first retry; doubled for each further retry.
    backoff: float = Field(0.2, ge=0, le=30)
    #: E-mail over SMTP (``[notify.email]``).
    email: EmailSettings = Field(default_factory=EmailSettings)

NOTIFICATION_TOPIC = "/notification"
#: The existing client's name for the same topic: both get every notification.
CLIENT_NOTIFICATION_TOPIC = "/notifications"
NOTIFICATION_EVENT = "notification"
_BOT_URL_RE = re.compile(r"bot\d+:[A-Za-z0-9_-]+")
#: The channels by name (escalation routes, :meth:`NotifyModule.notify`) -> the intent that sends through it.
CHANNELS = {"webhook": "simple_http_notify", "telegram": "simple_telegram_notify", "email": "simple_email_notify"}


class HttpBlock(Params):
    """CloudiSENSE's ``http`` parameters: which webhooks, which method."""

    webhook: list[str] = Field(default_factory=list, max_length=32,
                               description="configured webhook URLs; empty: all of them")
    method: Literal["GET", "POST", "PUT"] = "POST"


#: The text of a notice sent in CloudiSENSE's ``{"http": {...}}`` form, which carries none.
DEFAULT_MESSAGE = "notification from a CloudiSENSE reaction rule"


class HttpNotifyParams(Params):
    """A message for the configured webhooks."""

    message: str = Field(min_length=1, max_length=4000, description="the text to send")
    webhook: str | None = Field(None, max_length=2048,
                                description="one of the configured webhook URLs; default: all of them")
    method: Literal["GET", "POST", "PUT"] = "POST"
    http: HttpBlock | None = Field(None, description="CloudiSENSE's form: {webhook: [...], method}")

    @model_validator(mode="before")
    @classmethod
    def _message_of_the_http_form(cls, data: Any) -> Any:
        # CloudiSENSE's rules send only {"http": {...}}: the node words the notice itself.
        if isinstance(data, dict) and "message" not in data and isinstance(data.get("http"), dict):
            return {**data, "message": DEFAULT_MESSAGE}
        return data

    @model_validator(mode="after")
    def _one_webhook_form(self) -> HttpNotifyParams:
        if self.http is not None and self.webhook is not None:
            raise ValueError("give the webhook either as webhook or inside http, not both")
        return self


class TelegramNotifyParams(Params):
    """A message for a Telegram chat."""

    message: str = Field(min_length=1, max_length=4000, description="the text to send")
    chat_id: str | None = Field(None, min_length=1, max_length=64,
                                description="Telegram chat id; default: the configured notify.telegram_chat_id")


class EmailNotifyParams(Params):
    """A message for configured e-mail recipients."""

    message: str = Field(min_length=1, max_length=20_000, description="the text to send")
    subject: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                                description="one line; default: the configured notify.email.subject")
    to: list[str] = Field(default_factory=list, max_length=100,
                          description="configured recipients to send to; default: all of them")


@dataclass
class Delivery:
    """The outcome of one HTTP delivery (after retries)."""

    status: int | None
    attempts: int
    error: str | None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


class NotifyModule(Module):
    """``simple_http_notify``, ``simple_telegram_notify`` and ``simple_email_notify``, plus :meth:`notify`."""

    name = "notify"
    settings_model = NotifySettings

    def intents(self) -> list[Intent]:
        n = self.settings
        # Every attempt may take the whole timeout, plus the backoff between attempts.
        limit = (n.retries + 1) * n.timeout + n.backoff * (2 ** n.retries) + 10
        return [
            Intent("simple_http_notify", "Send a message to the configured webhooks (or one of them)",
                   self.simple_http_notify, HttpNotifyParams, Risk.WRITE,
                   ("notify the team that the deploy is done", "send a webhook saying the backup finished",
                    "post 'disk almost full' to the webhook", "ping the on-call hook about the outage",
                    "let everyone know nginx was restarted", "notify the team", "tell the team"),
                   timeout=limit, say=_say_sent),
            Intent("simple_telegram_notify", "Send a message to a Telegram chat through the configured bot",
                   self.simple_telegram_notify, TelegramNotifyParams, Risk.WRITE,
                   ("send a telegram message that the server is back", "telegram me when it's done",
                    "tell the ops chat on telegram that redis restarted",
                    "message the telegram group: maintenance starts now"), timeout=limit, say=_say_sent),
            Intent("simple_email_notify", "Send an e-mail to the configured recipients (or some of them) "
                   "through the configured SMTP server", self.simple_email_notify, EmailNotifyParams, Risk.WRITE,
                   ("email the team that the backup failed", "send an email saying the deploy is done",
                    "mail ops@example.com that the disk is almost full", "e-mail the on-call about the outage"),
                   timeout=limit, say=_say_mailed),
        ]

    async def start(self) -> None:
        self.node.pubsub.add_static(NOTIFICATION_TOPIC)
        self.node.pubsub.add_static(CLIENT_NOTIFICATION_TOPIC)

    def check_rule_params(self, intent: str, params: Any) -> str | None:
        """Why a reaction rule's parameters can't work here (an unconfigured webhook), or ``None``."""
        if intent != "simple_http_notify":
            return None
        wanted = list(params.http.webhook) if params.http is not None else [params.webhook] if params.webhook else []
        configured = self.settings.webhooks
        unknown = [i for i, w in enumerate(wanted) if w not in configured]
        if unknown:
            return ("webhook " + ", ".join(str(i) for i in unknown) + " is not one of the configured notify.webhooks; "
                    "only configured URLs can be used")
        return None

    # -- the Python API -------------------------------------------------------

    async def notify(self, message: str, via: str = "webhook") -> dict[str, Any]:
        """Send ``message`` through ``via``: ``webhook`` (all configured), ``telegram`` (configured
        chat), ``email`` (every configured recipient) or ``none`` (only the ``/notification`` event).

        Returns the same dict as the matching intent. Raises :class:`Unavailable` when the channel
        is not configured and :class:`ActionFailed` when no delivery succeeded.
        """
        if via == "webhook":
            return await self.send_webhooks(message)
        if via == "telegram":
            return await self.send_telegram(message)
        if via == "email":
            return await self.send_email(message)
        if via == "none":
            self._publish(message, "none", True)
            return {"via": "none", "delivered": 0}
        raise BadRequest(f"unknown notification channel {via!r}; use {', '.join(CHANNELS)} or none")

    async def send_webhooks(self, message: str, webhook: str | list[str] | None = None,
                            method: str = "POST") -> dict[str, Any]:
        """Deliver to ``webhook`` (one or several, each configured) or to every configured webhook."""
        configured = self.settings.webhooks
        if not configured:
            raise Unavailable("no webhooks are configured; set notify.webhooks (a list of URLs) in the config")
        wanted = [webhook] if isinstance(webhook, str) else list(dict.fromkeys(webhook or []))
        if any(w not in configured for w in wanted):
            raise BadRequest("webhook is not one of the configured notify.webhooks; only configured URLs can be "
                             "used (leave it out to send to all of them)")
        targets = wanted or list(configured)
        # GET carries no body (the receiver learns only that something happened).
        body = None if method == "GET" else json.dumps(
            {"message": message, "node": self.node.identity, "timestamp": int(time.time() * 1000)})
        deliveries = await asyncio.gather(*(self._deliver(url, method, body) for url in targets))
        # Results name a webhook by its place in the configured list and its host only: paths of
        # webhook URLs often carry secrets (Slack, Discord), and results reach people and models.
        results = [{"webhook": _where(url), "index": configured.index(url), "ok": d.ok, "status": d.status,
                    "attempts": d.attempts, "error": d.error}
                   for url, d in zip(targets, deliveries, strict=True)]
        delivered = sum(1 for r in results if r["ok"])
        self._publish(message, "webhook", delivered > 0)
        if delivered == 0:
            problems = "; ".join(f"{r['webhook']}: {r['error']}" for r in results)
            raise ActionFailed(f"no webhook accepted the notification ({problems})")
        return {"via": "webhook", "delivered": delivered, "failed": len(results) - delivered, "results": results}

    async def send_telegram(self, message: str, chat_id: str | None = None) -> dict[str, Any]:
        """Send through the Telegram Bot API ``sendMessage``."""
        settings = self.settings
        token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
        if not token:
            raise Unavailable("telegram is not configured: set notify.telegram_bot_token "
                              "(or CLOUDISENSE_NOTIFY__TELEGRAM_BOT_TOKEN) to the bot's token")
        chat = chat_id or settings.telegram_chat_id
        if not chat:
            raise BadRequest("no Telegram chat: pass chat_id or set notify.telegram_chat_id")
        url = f"{settings.telegram_base_url.rstrip('/')}/bot{token}/sendMessage"
        body = json.dumps({"chat_id": chat, "text": message})
        d = await self._deliver(url, "POST", body, secret=token)
        description = None
        message_id = None
        try:
            answer = json.loads(d.body) if d.body else {}
            description = answer.get("description")
            message_id = (answer.get("result") or {}).get("message_id")
        except (ValueError, AttributeError):
            pass
        self._publish(message, "telegram", d.ok)
        if not d.ok:
            reason = self._scrub(str(description or d.error or f"HTTP {d.status}"), token)
            raise ActionFailed(f"telegram did not accept the message after {d.attempts} attempt(s): {reason}")
        return {"via": "telegram", "chat_id": chat, "ok": True, "status": d.status, "attempts": d.attempts,
                "message_id": message_id}

    async def send_email(self, message: str, subject: str | None = None,
                         to: list[str] | None = None) -> dict[str, Any]:
        """Mail ``message`` to ``to`` (each a configured recipient) or to every configured recipient."""
        mail = self.settings.email
        if not mail.host or not mail.from_address or not mail.recipients:
            raise Unavailable("e-mail is not configured: set notify.email.host, notify.email.from_address and "
                              "notify.email.recipients (the addresses mail may go to)")
        wanted = list(dict.fromkeys(a.strip().lower() for a in to or []))
        unknown = [a for a in wanted if a not in mail.recipients]
        if unknown:
            raise BadRequest(f"{', '.join(repr(a[:100]) for a in unknown)} is not one of the configured "
                             "notify.email.recipients; only configured addresses can be mailed")
        recipients = wanted or list(mail.recipients)
        email = EmailMessage()
        email["From"] = mail.from_address
        email["To"] = ", ".join(recipients)
        email["Subject"] = subject or mail.subject
        email["Date"] = formatdate(localtime=True)
        email["Message-ID"] = make_msgid(domain=mail.from_address.rpartition("@")[2])
        email["X-CloudiSENSE-Node"] = self.node.identity
        email.set_content(message)
        settings = self.settings
        attempts = 0
        while True:
            attempts += 1
            try:
                refused = await asyncio.to_thread(_smtp_send, mail, email, recipients, settings.timeout)
                error = None
                break
            except smtplib.SMTPResponseException as exc:  # the server said no: 4xx may pass, 5xx is final
                error = f"the SMTP server answered {exc.smtp_code}: {_smtp_text(exc.smtp_error)}"
                retryable = 400 <= exc.smtp_code < 500
            except smtplib.SMTPRecipientsRefused as exc:
                error = "the SMTP server refused every recipient: " + "; ".join(
                    f"{a} ({code} {_smtp_text(text)})" for a, (code, text) in exc.recipients.items())
                retryable = False
            except smtplib.SMTPNotSupportedError as exc:
                error, retryable = str(exc), False
            except ssl.SSLError as exc:
                error = f"TLS with the SMTP server failed ({exc.reason or exc}); check notify.email.security, " \
                        "port and ca_file"
                retryable = False
            except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timed out, dropped
                error = f"could not talk to the SMTP server {mail.host}:{mail.port}: " \
                        f"{getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
                retryable = True
            error = self._scrub(error, mail.password.get_secret_value() if mail.password else None)
            if not retryable or attempts > settings.retries:
                break
            log.info("e-mail attempt %d failed (%s); retrying", attempts, error)
            await asyncio.sleep(settings.backoff * 2 ** (attempts - 1))
        self._publish(message, "email", error is None)
        if error is not None:
            raise ActionFailed(f"the e-mail was not sent after {attempts} attempt(s): {error}")
        accepted = [a for a in recipients if a not in refused]
        return {"via": "email", "delivered": len(accepted), "recipients": accepted, "refused": sorted(refused),
                "attempts": attempts, "subject": str(email["Subject"])}

    # -- intents --------------------------------------------------------------

    async def simple_http_notify(self, p: HttpNotifyParams, ctx: ActionContext) -> dict[str, Any]:
        message = p.message
        if p.http is not None:
            return await self.send_webhooks(message, p.http.webhook, p.http.method)
        return await self.send_webhooks(message, p.webhook, p.method)

    async def simple_telegram_notify(self, p: TelegramNotifyParams, ctx: ActionContext) -> dict[str, Any]:
        return await self.send_telegram(p.message, p.chat_id)

    async def simple_email_notify(self, p: EmailNotifyParams, ctx: ActionContext) -> dict[str, Any]:
        return await self.send_email(p.message, p.subject, p.to)

    # -- delivery -------------------------------------------------------------

    @staticmethod
    def _scrub(text: str, secret: str | None) -> str:
        """``text`` without the secret (and without anything shaped like a bot URL token)."""
        if secret:
            text = text.replace(secret, "***")
        return _BOT_URL_RE.sub("bot***", text)

    async def _deliver(self, url: str, method: str, body: str | None, secret: str | None = None) -> Delivery:
        """One request with retries on connection errors and 5xx answers (4xx are final)."""
        settings = self.settings
        attempts = 0
        status: int | None = None
        error: str | None = None
        while True:
            attempts += 1
            resp: HTTPResponse | None = None
            try:
                resp = await AsyncHTTPClient().fetch(
                    url, method=method, body=body, headers={"Content-Type": "application/json"} if body else {},
                    request_timeout=settings.timeout, connect_timeout=settings.timeout,
                    follow_redirects=False, raise_error=False)
                status, error = resp.code, None if 200 <= resp.code < 300 else f"HTTP {resp.code}"
            except HTTPClientError as exc:  # timeouts (599) and the like
                status, error = None, self._scrub(f"{type(exc).__name__}: {exc}", secret)
            except OSError as exc:
                status, error = None, self._scrub(f"connection failed: {exc.strerror or exc}", secret)
            except Exception as exc:  # TLS and other transport errors; never let the token escape
                status, error = None, self._scrub(f"{type(exc).__name__}: {exc}", secret)
            ok = status is not None and 200 <= status < 300
            retryable = status is None or status >= 500
            if ok or not retryable or attempts > settings.retries:
                return Delivery(status, attempts, error, resp.body if resp is not None and resp.body else b"")
            log.info("notification attempt %d failed (%s); retrying", attempts, error)
            await asyncio.sleep(settings.backoff * 2 ** (attempts - 1))

    def _publish(self, message: str, via: str, ok: bool) -> None:
        data = {"message": message, "code": NOTICE_SUCCESS if ok else NOTICE_ERROR,
                "data": {"via": via, "ok": ok, "node": self.node.identity, "timestamp": int(time.time() * 1000)}}
        for topic in (NOTIFICATION_TOPIC, CLIENT_NOTIFICATION_TOPIC):
            self.node.pubsub.publish(topic, TEXT_NOTIFICATION, data, kind=NOTIFICATION_EVENT)


def _smtp_send(mail: EmailSettings, email: EmailMessage, recipients: list[str], timeout: float) -> dict[str, Any]:
    """One SMTP session (blocking: run in a thread); returns the recipients the server refused."""
    context = ssl.create_default_context(cafile=str(mail.ca_file) if mail.ca_file else None)
    host = str(mail.host)
    smtp: smtplib.SMTP
    if mail.security == "ssl":
        smtp = smtplib.SMTP_SSL(host, mail.port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, mail.port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if mail.security == "starttls":
            # Never fall back to plain text: a server that can't upgrade gets no mail (and no password).
            if not smtp.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS; "
                                                    'set notify.email.security = "ssl" or "none"')
            smtp.starttls(context=context)
            smtp.ehlo()
        if mail.username and mail.password is not None:
            smtp.login(mail.username, mail.password.get_secret_value())
        return dict(smtp.send_message(email, from_addr=mail.from_address, to_addrs=recipients))


def _smtp_text(text: bytes | str) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return " ".join(raw.split())[:300]


def _where(url: str) -> str:
    """Scheme and host of ``url`` only: webhook paths often carry secrets (Slack, Discord)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"


# -- how results read in words (Intent.say) -----------------------------------------------------

def _say_sent(p: Any, d: Any) -> str:
    return f"sent the notification {p.get('message')!r}"


def _say_mailed(p: Any, d: Any) -> str:
    refused = f"; refused: {', '.join(d['refused'])}" if d.get("refused") else ""
    return f"mailed {d.get('subject')!r} to {', '.join(d.get('recipients') or [])}{refused}"
