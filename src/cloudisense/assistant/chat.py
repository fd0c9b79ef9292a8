"""The assistant's language model: one budgeted LLM service for chat, planning and ReAct.

:class:`ModelAccess` owns the usage ledger (token budgets per session and user,
persisted in ``llm_usage``) and hands out :class:`~cloudisense.llm.LLMService`
objects, so every model call of the assistant — ``chat_llm``, the hybrid planner,
ReAct — is budgeted, accounted and traced the same way. :func:`chat_turn` is one
``chat_llm`` turn with streaming deltas.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudisense.core.errors import Unavailable

if TYPE_CHECKING:
    from cloudisense.assistant.memory import SessionMemory
    from cloudisense.config import LLMSettings
    from cloudisense.store.db import Database

log = logging.getLogger(__name__)

USAGE_MIGRATIONS = [
    """
    CREATE TABLE llm_usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        session TEXT,
        user TEXT,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL
    );
    CREATE INDEX llm_usage_session ON llm_usage(session);
    """
]

CHAT_SYSTEM_PROMPT = (
    "You are CloudiSENSE Assist, an operations assistant built into a CloudiSENSE node. "
    "Answer briefly and precisely. Never claim to have run an action: in this chat you only talk."
)

Delta = Callable[[str], None]


class ModelAccess:
    """Budgeted access to the configured model (``[llm]``) and to models named per request."""

    def __init__(self, settings: LLMSettings, db: Database, metrics_registry: Any = None) -> None:
        from cloudisense.llm import UsageLedger

        self.settings = settings
        self._db = db
        self.ledger = UsageLedger.from_settings(settings, on_record=self._persist_usage, registry=metrics_registry)

    async def start(self) -> None:
        """Create the usage table and load the totals that budgets count against."""
        await self._db.migrate("llm_usage", USAGE_MIGRATIONS)
        sessions = {r[0]: int(r[1]) for r in await self._db.fetchall(
            "SELECT session, SUM(input_tokens + output_tokens) FROM llm_usage"
            " WHERE session IS NOT NULL GROUP BY session")}
        users = {r[0]: int(r[1]) for r in await self._db.fetchall(
            "SELECT user, SUM(input_tokens + output_tokens) FROM llm_usage WHERE user IS NOT NULL GROUP BY user")}
        self.ledger.load(sessions=sessions, users=users)

    @property
    def configured(self) -> bool:
        """Whether ``[llm] provider`` names a model (not ``offline``)."""
        from cloudisense.llm import is_offline

        return not is_offline(self.settings)

    def service(self, spec: str | None = None) -> Any:
        """An :class:`~cloudisense.llm.LLMService` for ``spec`` (default: ``[llm] provider``)."""
        from cloudisense.llm import LLMService, get_provider

        if spec is None and not self.configured:
            raise Unavailable('no language model is configured: set [llm] provider (for example "local", '
                              '"openai:gpt-4o-mini" or "anthropic:claude-3-5-haiku-latest") or pass '
                              'params.provider; query_assist works without one')
        provider = get_provider(spec, self.settings) if spec else None
        return LLMService(self.settings, ledger=self.ledger, provider=provider)

    def default_service(self) -> Any:
        """The configured model as a budgeted service, or ``None`` (offline, or it can't be built: logged)."""
        if not self.configured:
            return None
        try:
            return self.service(None)
        except Exception as exc:  # the assistant still works offline; say why the model is not used
            log.warning("assistant: provider %s unavailable (%s); using the offline planner",
                        self.settings.provider, exc)
            return None

    async def _persist_usage(self, rec: Any) -> None:
        await self._db.execute(
            "INSERT INTO llm_usage (ts, session, user, provider, model, input_tokens, output_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.at, rec.session_id, rec.user_id, rec.provider, rec.model, rec.input_tokens, rec.output_tokens))


async def chat_turn(service: Any, memory: SessionMemory, session: str, user: str, prompt: str, *,
                    context: dict[str, Any], model: str | None, temperature: float | None,
                    max_tokens: int | None, on_delta: Delta, node_context: str | None = None) -> dict[str, Any]:
    """One model turn with the session's history; text deltas go to ``on_delta`` as they arrive.

    ``node_context``: the summary of the node's state (:mod:`~cloudisense.assistant.context_summary`).
    """
    from cloudisense.llm import ChatRequest, Finish, Message, TextDelta, UsageEvent

    messages = [Message.system(CHAT_SYSTEM_PROMPT)]
    if node_context:
        messages.append(Message.system(node_context))
    if context:
        messages.append(Message.system("Context (JSON):\n" + json.dumps(context, default=str)[:100_000]))
    for turn in await memory.context(session):
        role, content = turn.get("role"), turn.get("content")
        if role in ("user", "assistant") and content:
            messages.append(Message(role, content))  # type: ignore[arg-type]
        elif role == "system" and content:
            messages.append(Message.system(content))
    messages.append(Message.user(prompt))
    request = ChatRequest(messages=messages, temperature=temperature, max_tokens=max_tokens, model=model,
                          session_id=session, user_id=user)
    parts: list[str] = []
    usage, reason = None, None
    async for event in service.stream(request):
        if isinstance(event, TextDelta) and event.text:
            parts.append(event.text)
            on_delta(event.text)
        elif isinstance(event, UsageEvent):
            usage = event.usage
        elif isinstance(event, Finish):
            reason = event.reason
    text = "".join(parts)
    await memory.add_message(session, "user", prompt)
    await memory.add_message(session, "assistant", text)
    return {
        "text": text, "session": session, "finish_reason": reason,
        "provider": service.name, "model": model or service.model,
        "usage": {"input_tokens": usage.input_tokens if usage else None,
                  "output_tokens": usage.output_tokens if usage else None},
    }
