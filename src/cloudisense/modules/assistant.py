"""The assistant intents of the existing client, and ``chat_llm`` (llmcore over the WebSocket).

- ``chat_llm {prompt, context, params}``: one model turn; text deltas stream to the
  asking client as ``llm_delta`` events on ``/llm/<session>`` while the model
  generates, then the RPC response carries the full text and the usage.
- ``query_assist {query}``: one assistant turn (plan, act within policy, answer),
  delegated to the agent module; ``clear_assist_session``; ``assist_introduction``.
- ``llm_usage``: tokens per session, user and provider.

Conversation history is kept per session in SQLite (the agent's session memory),
so it carries over between turns and survives a restart. Without a session
param, each user has one default session.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import Field, field_validator

from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Unavailable
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.store.db import Database
from cloudisense.core.roles import Role

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

SYSTEM_PROMPT = (
    "You are CloudiSENSE Assist, an operations assistant built into a CloudiSENSE node. "
    "Answer briefly and precisely. Never claim to have run an action: in this chat you only talk."
)


#: Requests about the assistant itself are answered with the introduction, not planned.
HELP_RE = re.compile(r"^\s*(help|hi|hello|hey|what can you do|who are you|how do i use (you|this)|"
                     r"what do you know|what are you)\W*$", re.IGNORECASE)


def default_session(user: str) -> str:
    """The session a user's requests use when they name none."""
    return f"user-{user}"


class ChatOptions(Params):
    """Per-request model options of ``chat_llm``."""

    provider: str | None = Field(None, max_length=300, description='"name" or "name:model"; "local" = shipped model')
    model: str | None = Field(None, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32_000)
    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ChatParams(Params):
    """``chat_llm`` params: the prompt, free-form context, and options."""

    prompt: str = Field(min_length=1, max_length=100_000)
    context: dict[str, Any] = Field(default_factory=dict, description="extra facts for the model (JSON)")
    params: ChatOptions = Field(default_factory=ChatOptions)

    @field_validator("context")
    @classmethod
    def _bounded_context(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > 100_000:
            raise ValueError("context is larger than 100000 characters of JSON")
        return value


class QueryParams(Params):
    """``query_assist`` params."""

    query: str = Field(min_length=1, max_length=4000)
    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class SessionParams(Params):
    """Optional session name."""

    session: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class AssistantModule(Module):
    """Chat with a model, and the existing client's assistant intents."""

    name = "assistant"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from cloudisense.llm import UsageLedger

        self.ledger = UsageLedger.from_settings(node.settings.llm, on_record=self._persist_usage,
                                                registry=node.metrics.registry)

    def intents(self) -> list[Intent]:
        return [
            Intent("chat_llm", "Talk to the configured language model; the answer streams as it is generated",
                   self.chat_llm, ChatParams, Risk.READ,
                   ("ask the model to explain a load average of 4", "chat with the llm",
                    "what does OOM killer mean"), timeout=600, agent_use=AgentUse.ASSISTANT),
            Intent("query_assist", "Ask the assistant in plain words: it plans intents, acts within policy "
                   "and reports what it did and found", self.query_assist, QueryParams, Risk.READ,
                   ("is nginx up?", "show errors in the app log from the last hour"), timeout=900,
                   agent_use=AgentUse.ASSISTANT),
            Intent("clear_assist_session", "Forget the assistant conversation of this session",
                   self.clear_assist_session, SessionParams, Risk.READ,
                   ("clear the chat", "forget our conversation", "start over"), agent_use=AgentUse.ASSISTANT),
            Intent("assist_introduction", "What the assistant can do here, with example requests",
                   self.assist_introduction, NoParams, Risk.READ,
                   ("what can you do", "help", "introduce yourself"), agent_use=AgentUse.ASSISTANT),
            Intent("llm_usage", "Language model tokens used, per session, user and provider", self.llm_usage,
                   SessionParams, Risk.READ, ("how many tokens did I use", "llm usage", "token budget left")),
        ]

    async def start(self) -> None:
        await self.node.db.migrate("llm_usage", USAGE_MIGRATIONS)
        await self._load_usage()
        agent = self.node.module("agent")
        if agent is not None and agent.provider is not None:
            # The agent's model calls go through the same budgets, accounting and telemetry.
            agent.provider = self.service(None)

    # -- llm plumbing -----------------------------------------------------

    def service(self, spec: str | None) -> Any:
        """An :class:`~cloudisense.llm.LLMService` for ``spec`` (default: ``[llm] provider``)."""
        from cloudisense.llm import LLMService, get_provider, is_offline

        settings = self.node.settings.llm
        if spec is None and is_offline(settings):
            raise Unavailable('no language model is configured: set [llm] provider (for example "local", '
                              '"openai:gpt-4o-mini" or "anthropic:claude-3-5-haiku-latest") or pass '
                              'params.provider; query_assist works without one')
        provider = get_provider(spec, settings) if spec else None
        return LLMService(settings, ledger=self.ledger, provider=provider)

    async def _persist_usage(self, rec: Any) -> None:
        await self.node.db.execute(
            "INSERT INTO llm_usage (ts, session, user, provider, model, input_tokens, output_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.at, rec.session_id, rec.user_id, rec.provider, rec.model, rec.input_tokens, rec.output_tokens))

    async def _load_usage(self) -> None:
        db: Database = self.node.db
        sessions = {r[0]: int(r[1]) for r in await db.fetchall(
            "SELECT session, SUM(input_tokens + output_tokens) FROM llm_usage WHERE session IS NOT NULL GROUP BY session")}
        users = {r[0]: int(r[1]) for r in await db.fetchall(
            "SELECT user, SUM(input_tokens + output_tokens) FROM llm_usage WHERE user IS NOT NULL GROUP BY user")}
        self.ledger.load(sessions=sessions, users=users)

    def _memory(self) -> Any:
        agent = self.node.module("agent")
        if agent is None:
            raise Unavailable("the agent module is not loaded; add it to modules in the config")
        return agent

    # -- intents ------------------------------------------------------------

    async def chat_llm(self, p: ChatParams, ctx: ActionContext) -> dict[str, Any]:
        from cloudisense.llm import ChatRequest, Finish, Message, TextDelta, UsageEvent

        agent = self._memory()
        admin = ctx.client.role == Role.ADMIN
        session = await agent.memory.open(p.params.session or default_session(ctx.user), ctx.user, admin=admin)
        spec = p.params.provider
        service = self.service(spec)
        messages = [Message.system(SYSTEM_PROMPT)]
        if p.context:
            messages.append(Message.system("Context (JSON):\n" + json.dumps(p.context, default=str)[:100_000]))
        for turn in await agent.memory.context(session):
            role = turn.get("role")
            if role in ("user", "assistant") and turn.get("content"):
                messages.append(Message(role, turn["content"]))  # type: ignore[arg-type]
            elif role == "system" and turn.get("content"):
                messages.append(Message.system(turn["content"]))
        messages.append(Message.user(p.prompt))
        request = ChatRequest(messages=messages, temperature=p.params.temperature, max_tokens=p.params.max_tokens,
                              model=p.params.model, session_id=session, user_id=ctx.user)
        topic = f"/llm/{session}"
        parts: list[str] = []
        usage, reason = None, None
        async for event in service.stream(request):
            if isinstance(event, TextDelta) and event.text:
                parts.append(event.text)
                ctx.notify_client("llm_delta", topic, {"text": event.text, "session": session,
                                                       "requestid": ctx.requestid})
            elif isinstance(event, UsageEvent):
                usage = event.usage
            elif isinstance(event, Finish):
                reason = event.reason
        text = "".join(parts)
        await agent.memory.add_message(session, "user", p.prompt)
        await agent.memory.add_message(session, "assistant", text)
        return {
            "text": text, "session": session, "finish_reason": reason,
            "provider": service.name, "model": p.params.model or service.model,
            "usage": {"input_tokens": usage.input_tokens if usage else None,
                      "output_tokens": usage.output_tokens if usage else None},
        }

    async def query_assist(self, p: QueryParams, ctx: ActionContext) -> dict[str, Any]:
        agent = self._memory()
        admin = ctx.client.role == Role.ADMIN
        session = await agent.memory.open(p.session or default_session(ctx.user), ctx.user, admin=admin)
        if HELP_RE.match(p.query):
            intro = await self.assist_introduction(NoParams(), ctx)
            await agent.memory.add_message(session, "user", p.query)
            await agent.memory.add_message(session, "assistant", intro["text"])
            return {"session": session, "mode": "introduction", "answer": intro["text"], "steps": []}
        return await agent.ask(p.query, user=ctx.user, role=ctx.client.role, session=session,
                               notify=agent.notifier(ctx, f"/assist/{session}"),
                               origin=ctx.as_origin(session=session))

    async def clear_assist_session(self, p: SessionParams, ctx: ActionContext) -> dict[str, Any]:
        agent = self._memory()
        admin = ctx.client.role == Role.ADMIN
        session = await agent.memory.open(p.session or default_session(ctx.user), ctx.user, admin=admin)
        await agent.memory.clear(session)
        self.ledger.reset_session(session)
        return {"session": session, "cleared": True}

    async def assist_introduction(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        from cloudisense.core.roles import may_run
        from cloudisense.llm import is_offline

        order = ("system", "targets", "logs", "scripts", "provision", "notify", "reactions", "audit")
        intents = sorted((i for i in self.node.registry.all() if may_run(ctx.client.role, i) and i.examples
                          and i.module in order), key=lambda i: order.index(i.module))
        examples = [i.examples[0] for i in intents][:8]
        entities = self.node.entities()
        model = "the built-in offline planner (no model)" if is_offline(self.node.settings.llm) \
            else f"the model {self.node.settings.llm.provider}"
        known = "; ".join(f"{kind}s: {', '.join(names)}" for kind, names in sorted(entities.items()) if names)
        text = (f"Hi, I am the CloudiSENSE assistant on node {self.node.identity}, using {model}. "
                f"I turn requests into this node's intents and run them with your rights ({ctx.client.role.value}); "
                "risky steps wait for your approval, and policy may refuse some.\n"
                + (f"I know these {known}.\n" if known else "")
                + "Try: " + " · ".join(f'"{e}"' for e in examples))
        return {"text": text, "answer": text, "examples": examples, "entities": entities,
                "intents": len(intents), "planner": "offline" if is_offline(self.node.settings.llm) else "model"}

    async def llm_usage(self, p: SessionParams, ctx: ActionContext) -> dict[str, Any]:
        session = p.session or default_session(ctx.user)
        settings = self.node.settings.llm
        if p.session and ctx.client.role != Role.ADMIN:
            owner = await self._memory().memory.owner(p.session)
            if owner != ctx.user:
                raise BadRequest(f"session {p.session} belongs to another user")
        providers = {name: {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
                     for name, u in self.ledger.provider_usage().items()} if ctx.client.role == Role.ADMIN else {}
        return {
            "session": {"id": session, "used": self.ledger.session_used(session),
                        "budget": settings.session_token_budget or None},
            "user": {"id": ctx.user, "used": self.ledger.user_used(ctx.user),
                     "budget": settings.user_token_budget or None},
            "providers": providers,
        }
