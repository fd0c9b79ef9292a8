"""The Alertmanager webhook receiver (``POST /alerts/alertmanager``) and a small Prometheus query client.

The receiver is off until ``[alerts] webhook_token`` is set (there is no default token): every call
is refused with 403 until then, and with 401 unless it carries ``Authorization: Bearer <token>``.
The body must be Alertmanager's webhook payload, version 4 (:class:`AmWebhook`); anything else is a
400 that names the field. Each alert of a notification becomes (or resolves) one alert of this node,
identified by Alertmanager's fingerprint, so repeated notifications count on the same alert.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pydantic import ValidationError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.web import RequestHandler

from cloudisense.core import protocol
from cloudisense.core.errors import BadRequest, Unavailable
from cloudisense.modules.alerts_model import SEVERITIES, AmAlert, AmWebhook
from cloudisense.modules.alerts_monitor import clip
from cloudisense.modules.alerts_store import fingerprint

if TYPE_CHECKING:
    from cloudisense.modules.alerts import AlertsModule

log = logging.getLogger(__name__)

WEBHOOK_PATH = r"/alerts/alertmanager"
_SAFE_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:\-.]{0,63}$")
#: Series of one query answer kept (a query over many series is summed up, not dumped).
MAX_SERIES = 50


class AlertmanagerHandler(RequestHandler):
    """``POST /alerts/alertmanager``: Alertmanager notifications become alerts of this node."""

    def initialize(self, module: AlertsModule) -> None:
        self.module = module

    def check_xsrf_cookie(self) -> None:  # a machine-to-machine endpoint: the bearer token is the check
        return None

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def _refuse(self, code: int, message: str) -> None:
        self._answer(code, {"status": "error", "code": code, "message": message})

    async def post(self) -> None:
        """Check the token, validate the payload, record each alert."""
        token = self.module.settings.webhook_token
        if token is None:
            return self._refuse(403, "the Alertmanager receiver is off: set [alerts] webhook_token in the node's "
                                     "config and send it as 'Authorization: Bearer <token>'")
        given = self.request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.get_secret_value().encode()):
            self.set_header("WWW-Authenticate", 'Bearer realm="alertmanager"')
            return self._refuse(401, "missing or wrong bearer token: configure Alertmanager's webhook with "
                                     "http_config.authorization (type Bearer) and [alerts] webhook_token")
        try:
            body = json.loads(self.request.body or b"")
        except (ValueError, RecursionError):
            return self._refuse(400, "the body is not JSON: send Alertmanager's webhook payload (version 4)")
        try:
            payload = AmWebhook.model_validate(body)
        except ValidationError as exc:
            return self._refuse(400, "not an Alertmanager webhook payload (version 4): "
                                + protocol.describe_validation_error(exc, "body"))
        firing = resolved = 0
        for alert in payload.alerts:
            if alert.status == "firing":
                await self.module.book.fire(**am_alert_fields(alert, payload.receiver))
                firing += 1
            elif await self.module.book.resolve(am_fingerprint(alert), "resolved in Alertmanager") is not None:
                resolved += 1
        log.info("alertmanager (%s): %d alert(s), %d firing, %d resolved", clip(payload.receiver, 64),
                 len(payload.alerts), firing, resolved)
        self._answer(200, {"status": "success", "code": 200,
                           "data": {"received": len(payload.alerts), "firing": firing, "resolved": resolved}})


def am_fingerprint(alert: AmAlert) -> str:
    """Our fingerprint of an Alertmanager alert (its own fingerprint, else its label set)."""
    ident = alert.fingerprint or json.dumps(sorted(alert.labels.items()))
    return fingerprint("alertmanager", ident)


def am_alert_fields(alert: AmAlert, receiver: str) -> dict[str, Any]:
    """What :meth:`AlertBook.fire` records for a firing Alertmanager alert (label text stays data)."""
    raw_name = alert.labels.get("alertname", "")
    name = raw_name if _SAFE_NAME.match(raw_name) else "unnamed"
    severity = alert.labels.get("severity", "warning").lower()
    instance = alert.labels.get("target") or alert.labels.get("instance") or alert.labels.get("job") or ""
    subject = instance if _SAFE_NAME.match(instance.replace("/", "_")) else "prometheus"
    return {
        "fp": am_fingerprint(alert), "source": "alertmanager", "rule": name,
        "severity": severity if severity in SEVERITIES else "warning", "subject": subject,
        "summary": f"Prometheus alert {name} is firing" + (f" for {subject}" if subject != "prometheus" else ""),
        "details": {"labels": {clip(k, 64): clip(v) for k, v in alert.labels.items()},
                    "annotations": {clip(k, 64): clip(v, 1000) for k, v in alert.annotations.items()},
                    "starts_at": alert.startsAt.isoformat(), "generator_url": clip(alert.generatorURL, 500),
                    "receiver": clip(receiver, 64)},
        "untrusted": True,
    }


# -- Prometheus ---------------------------------------------------------------------------------

def unit_of(name: str) -> str:
    """The unit a metric's name says it has (Prometheus naming conventions)."""
    for suffix, unit in (("_seconds_total", "s"), ("_seconds", "s"), ("_bytes_total", "bytes"),
                         ("_bytes", "bytes"), ("_percent", "%"), ("_ratio", "ratio"), ("_total", "count")):
        if name.endswith(suffix):
            return unit
    return ""


_FUNCTIONS = {"rate", "irate", "increase", "sum", "avg", "max", "min", "by", "without", "count", "delta",
              "deriv", "avg_over_time", "max_over_time", "min_over_time", "topk", "bottomk", "on", "ignoring"}


def _metric_name(query: str, labels: dict[str, str]) -> str:
    if "__name__" in labels:
        return labels["__name__"]
    words = [w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", query.split("{")[0] if "{" in query else query)
             if w not in _FUNCTIONS]
    return words[0] if words else ""


def query_unit(query: str, labels: dict[str, str]) -> str:
    """The unit of a query's answer: the metric's, per second under rate() and irate()."""
    unit = unit_of(_metric_name(query, labels))
    if unit and re.search(r"\b(i?rate)\s*\(", query):
        return "ratio" if unit == "s" else f"{unit}/s"
    return unit


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


async def prometheus_query(base_url: str, query: str, minutes: int, step: int | None,
                           timeout: float) -> dict[str, Any]:
    """Run a PromQL query (instant, or over the last ``minutes``) and sum each series up."""
    import time

    now = time.time()
    if minutes:
        step = step or max(1, minutes * 60 // 120)
        path = "/api/v1/query_range?" + urlencode({"query": query, "start": now - minutes * 60, "end": now,
                                                   "step": step})
    else:
        path = "/api/v1/query?" + urlencode({"query": query, "time": now})
    url = base_url.rstrip("/") + path
    try:
        resp = await AsyncHTTPClient().fetch(url, request_timeout=timeout, connect_timeout=timeout,
                                             follow_redirects=False, raise_error=False)
    except (HTTPClientError, OSError) as exc:
        raise Unavailable(f"Prometheus at {base_url} did not answer ({exc}); check [alerts] prometheus_url") from None
    try:
        body = json.loads(resp.body or b"")
    except ValueError:
        raise Unavailable(f"Prometheus at {base_url} answered HTTP {resp.code} without JSON") from None
    if body.get("status") != "success":
        message = clip(str(body.get("error") or f"HTTP {resp.code}"), 300)
        if resp.code in (400, 422):
            raise BadRequest(f"Prometheus refused the query: {message}")
        raise Unavailable(f"Prometheus could not answer: {message}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    series: list[dict[str, Any]] = []
    if kind == "scalar" and isinstance(result, list):
        series.append({"labels": {}, "value": _number(result[1])})
    for item in result if isinstance(result, list) and kind in ("vector", "matrix") else []:
        labels = {clip(str(k), 64): clip(str(v), 200) for k, v in (item.get("metric") or {}).items()}
        if kind == "vector":
            series.append({"labels": labels, "value": _number((item.get("value") or [0, None])[1])})
        else:
            values = [v for v in (_number(p[1]) for p in item.get("values") or []) if v is not None]
            series.append({"labels": labels, "points": len(values),
                           "min": min(values, default=None), "max": max(values, default=None),
                           "avg": sum(values) / len(values) if values else None,
                           "last": values[-1] if values else None})
    first = series[0]["labels"] if series else {}
    return {"query": query, "kind": "range" if minutes else "instant", "minutes": minutes, "step_seconds": step,
            "unit": query_unit(query, first), "count": len(series), "series": series[:MAX_SERIES],
            "truncated": len(series) > MAX_SERIES}
