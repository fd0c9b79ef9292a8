"""The one error tree of CloudiSENSE.

Every error carries an HTTP-like ``code`` that goes on the wire unchanged, and a
message that says what went wrong and, where possible, what to do about it.
Misuse errors (4xx) are kept apart from runtime failures (5xx).
"""

from __future__ import annotations


class CloudisenseError(Exception):
    """Base of every error that is answered to a client."""

    code: int = 500

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(CloudisenseError):
    """A configuration file or environment variable is invalid (stops start-up)."""

    code = 500


class BadRequest(CloudisenseError):
    """The request is malformed or its params are invalid."""

    code = 400


class Unauthorized(CloudisenseError):
    """Missing, malformed, forged or expired credentials."""

    code = 401


class Forbidden(CloudisenseError):
    """The caller is known but may not do this (role or policy)."""

    code = 403


class NotFound(CloudisenseError):
    """A named thing (intent, topic, log, target, rule, ...) does not exist."""

    code = 404


class Conflict(CloudisenseError):
    """The request clashes with the current state (already running, already decided)."""

    code = 409


class TooManyRequests(CloudisenseError):
    """A rate limit or queue bound was hit; retry later."""

    code = 429


class ActionFailed(CloudisenseError):
    """An intent ran and failed at run time."""

    code = 500


class Unavailable(CloudisenseError):
    """A dependency (provider, broker, backend) is not reachable or not configured."""

    code = 503


class RequestTimeout(CloudisenseError):
    """An intent did not finish within its time limit."""

    code = 504
