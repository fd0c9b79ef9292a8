"""Token accounting and budgets: :class:`UsageLedger`.

In-memory counters per session, per user and per provider, a hook through
which the server persists every record, and Prometheus counters:

* ``cloudisense_llm_tokens_total{provider,kind}`` (``kind`` = ``input`` | ``output``)
* ``cloudisense_llm_requests_total{provider,outcome}`` (``ok`` | ``error``)
* ``cloudisense_llm_budget_refusals_total{scope}`` (``session`` | ``user``)

Budgets count input + output tokens; 0 means unlimited. A request is refused
*before* the model is called when the tokens already used plus an estimate of
the request's prompt (about four characters per token) exceed the budget. The
answer's own tokens are not known in advance, so the request that crosses the
line is allowed to finish; the next one is refused.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from cloudisense.llm.base import ChatRequest, Usage
from cloudisense.llm.errors import BudgetExceeded

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """The tokens of one answered request (what the persistence hook receives)."""

    session_id: str | None
    user_id: str | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    at: float = field(default_factory=time.time)


#: Called with each record; may be a coroutine function (awaited) or a plain function.
PersistHook = Callable[[UsageRecord], "Awaitable[None] | None"]


def estimate_tokens(request: ChatRequest) -> int:
    """Rough prompt size in tokens (four characters per token), used before the model is asked."""
    chars = sum(len(m.content or "") for m in request.messages)
    chars += sum(len(c.raw_arguments) for m in request.messages for c in m.tool_calls)
    chars += sum(len(t.name) + len(t.description) + len(str(t.parameters)) for t in request.tools)
    return chars // 4


class UsageLedger:
    """Token counters and budget checks (see the module docstring)."""

    def __init__(
        self,
        *,
        session_budget: int = 0,
        user_budget: int = 0,
        on_record: PersistHook | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.session_budget = session_budget
        self.user_budget = user_budget
        self.on_record = on_record
        #: Where the counters live; pass the node's registry so ``/metrics`` shows them.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._sessions: dict[str, int] = defaultdict(int)
        self._users: dict[str, int] = defaultdict(int)
        self._providers: dict[str, Usage] = defaultdict(Usage)
        self._lock = threading.Lock()
        self.tokens = Counter(
            "cloudisense_llm_tokens", "LLM tokens used", ["provider", "kind"], registry=self.registry
        )
        self.requests = Counter(
            "cloudisense_llm_requests", "LLM requests", ["provider", "outcome"], registry=self.registry
        )
        self.refusals = Counter(
            "cloudisense_llm_budget_refusals",
            "LLM requests refused for an exhausted token budget",
            ["scope"],
            registry=self.registry,
        )

    @classmethod
    def from_settings(
        cls,
        settings: LLMSettings,
        *,
        on_record: PersistHook | None = None,
        registry: CollectorRegistry | None = None,
    ) -> UsageLedger:
        """A ledger with the budgets of ``[llm]``."""
        return cls(
            session_budget=settings.session_token_budget,
            user_budget=settings.user_token_budget,
            on_record=on_record,
            registry=registry,
        )

    # --- reading ----------------------------------------------------------------------------------

    def session_used(self, session_id: str) -> int:
        """Tokens used by a session so far."""
        return self._sessions.get(session_id, 0)

    def user_used(self, user_id: str) -> int:
        """Tokens used by a user so far."""
        return self._users.get(user_id, 0)

    def provider_usage(self) -> dict[str, Usage]:
        """Tokens per provider name (copies)."""
        with self._lock:
            return {name: Usage(u.input_tokens, u.output_tokens) for name, u in self._providers.items()}

    # --- restoring / resetting --------------------------------------------------------------------

    def load(self, *, sessions: Mapping[str, int] | None = None, users: Mapping[str, int] | None = None) -> None:
        """Restore totals persisted by the server (e.g. at start-up); replaces those keys."""
        with self._lock:
            self._sessions.update(sessions or {})
            self._users.update(users or {})

    def reset_session(self, session_id: str) -> None:
        """Forget a session's total (e.g. when it is cleared); user totals stay."""
        with self._lock:
            self._sessions.pop(session_id, None)

    # --- the two operations the service performs around every request ---------------------------

    def check(self, session_id: str | None, user_id: str | None, estimate: int = 0) -> None:
        """Raise :class:`BudgetExceeded` if this request would go over a budget."""
        for scope, key, used_map, budget in (
            ("session", session_id, self._sessions, self.session_budget),
            ("user", user_id, self._users, self.user_budget),
        ):
            if not budget or key is None:
                continue
            used = used_map.get(key, 0)
            if used + estimate > budget:
                self.refusals.labels(scope).inc()
                raise BudgetExceeded(
                    f"the {scope} token budget is spent ({used} of {budget} tokens used, this request needs "
                    f"about {estimate} more); start a new session, wait for the budget to be reset, or raise "
                    f"[llm] {scope}_token_budget",
                    scope=scope,
                    used=used,
                    budget=budget,
                )

    async def record(
        self,
        usage: Usage,
        *,
        provider: str,
        model: str = "",
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> UsageRecord:
        """Count a finished request and hand the record to the persistence hook."""
        rec = UsageRecord(session_id, user_id, provider, model, usage.input_tokens, usage.output_tokens)
        with self._lock:
            if session_id is not None:
                self._sessions[session_id] += usage.total
            if user_id is not None:
                self._users[user_id] += usage.total
            self._providers[provider] = self._providers[provider] + usage
        self.tokens.labels(provider, "input").inc(usage.input_tokens)
        self.tokens.labels(provider, "output").inc(usage.output_tokens)
        self.requests.labels(provider, "ok").inc()
        if self.on_record is not None:
            try:
                result = self.on_record(rec)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # Persisting is best effort: the answer already reached the user.
                log.exception("persisting llm usage failed")
        return rec

    def failed(self, provider: str) -> None:
        """Count a request that ended in an error."""
        self.requests.labels(provider, "error").inc()
