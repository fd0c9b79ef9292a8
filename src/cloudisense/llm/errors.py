"""llmcore's branch of the one error tree (:mod:`cloudisense.core.errors`).

Every class here subclasses one of the core errors, so a client sees the usual
``code`` (503, 429, 504, 400, ...). Two families are kept apart on purpose:

* misuse or configuration (:class:`UnknownProvider`, :class:`ProviderNotConfigured`,
  :class:`UnsupportedFeature`, :class:`BudgetExceeded`): retrying or falling back
  to another provider cannot help, the caller or the operator must change something;
* run-time failures of the model service (:class:`ProviderFailure` and its
  subclasses): these are what a configured fallback provider is tried for, and
  only when the primary produced no output yet.

Messages never contain API keys: providers pass their secrets to
:func:`redact` before a message leaves them.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudisense.core.errors import (
    BadRequest,
    CloudisenseError,
    ConfigError,
    RequestTimeout,
    TooManyRequests,
    Unavailable,
)


class UnknownProvider(ConfigError):
    """A ``"provider:model"`` spec names no registered provider."""


class ProviderNotConfigured(Unavailable):
    """A provider is known but cannot be used: missing key, missing package, ``offline``."""


class UnsupportedFeature(BadRequest):
    """The request needs something the provider cannot honour (tools, response_schema).

    Raised instead of silently ignoring the feature.
    """


class BudgetExceeded(TooManyRequests):
    """A session or user token budget is spent; refused before the model is called."""

    def __init__(self, message: str, *, scope: str, used: int, budget: int) -> None:
        super().__init__(message)
        self.scope = scope
        self.used = used
        self.budget = budget


class ProviderFailure(CloudisenseError):
    """The model service failed at run time (after the SDK's own retries).

    ``provider`` names the provider, ``status`` is the upstream HTTP status when
    there was one, ``started`` tells whether any output had reached the caller.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        started: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.started = started


class ProviderUnavailable(ProviderFailure, Unavailable):
    """The provider could not be reached or answered with a server error (5xx)."""


class ProviderRateLimited(ProviderFailure, TooManyRequests):
    """The provider kept answering 429 (rate limit or quota) after the SDK's retries."""


class ProviderTimeout(ProviderFailure, RequestTimeout):
    """The provider did not answer within ``[llm] timeout`` seconds (after retries)."""


class ProviderRejected(ProviderFailure, BadRequest):
    """The provider refused the request itself (400/404/422: bad model name, bad input)."""


class ProviderAuthFailed(ProviderFailure, Unavailable):
    """The provider refused the configured key (401/403); the operator must fix the key."""


class StreamInterrupted(ProviderFailure, Unavailable):
    """A stream broke after output had begun; it is never retried.

    ``partial_text`` holds the text the caller had already received.
    """

    def __init__(self, message: str, *, partial_text: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.partial_text = partial_text


class ScriptExhausted(AssertionError):
    """A :class:`~cloudisense.llm.testing.ScriptedModel` was called with no turns left,
    or finished a test with turns unused. An ``AssertionError`` so tests fail loudly."""


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (longer than 3 characters) in ``text`` by ``***``."""
    for secret in secrets:
        if secret and len(secret) > 3:
            text = text.replace(secret, "***")
    return text
