"""MessageRouter: the single entry point of every RPC, from any kind of client.

``handle_messages(message, client)`` classifies a message (local RPC, remote RPC,
broadcast, bad input), checks it (envelope, intent, params, role, gates such as
the assistant's policy), runs the action with a time limit, writes the audit
record, and answers the client that asked: exactly one response per request.
The router does no socket I/O itself: clients deliver, stores persist.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ValidationError

from cloudisense.core import protocol
from cloudisense.core.audit import AuditRecord
from cloudisense.core.clients import Client
from cloudisense.core.context import ActionContext, CallOrigin
from cloudisense.core.errors import BadRequest, CloudisenseError, Forbidden, NotFound, RequestTimeout, Unavailable
from cloudisense.core.intents import Intent, IntentRegistry, NoParams, Risk
from cloudisense.core.roles import refusal

if TYPE_CHECKING:
    from cloudisense.node import Node

log = logging.getLogger(__name__)

BROADCAST = "*"

#: What a params-less intent called with no params gets (it has no fields, so sharing one is safe):
#: validating and dumping an empty model costs several µs per request on the hot path.
_NO_PARAMS = NoParams()

@dataclass(frozen=True)
class Call:
    """A checked request about to run: what gates decide on."""

    intent: Intent
    params: BaseModel
    risk: Risk
    client: Client
    request: protocol.RpcRequest
    #: Set when the call is a sub-call made on behalf of another request.
    origin: CallOrigin | None = None


@dataclass(frozen=True)
class Verdict:
    """A gate's decision. ``confirm`` answers the caller with ``data`` instead of running."""

    decision: Literal["allow", "deny", "confirm"]
    rule: str | None = None
    reason: str | None = None
    data: Any = None

    @staticmethod
    def allow(rule: str | None = None) -> Verdict:
        """Run it."""
        return Verdict("allow", rule)

    @staticmethod
    def deny(reason: str, rule: str | None = None) -> Verdict:
        """Refuse it with ``reason``."""
        return Verdict("deny", rule, reason)


Gate = Callable[[Call], Awaitable[Verdict | None]]


class Remote(Protocol):
    """Federation: runs requests on other nodes."""

    async def forward(self, request: protocol.RpcRequest, client: Client) -> dict[str, Any]:
        """Run ``request`` on node ``request.service_id``; returns its ``rpc_response``."""

    async def broadcast(self, request: protocol.RpcRequest, client: Client) -> None:
        """Send ``request`` to every other node (no responses)."""

    def knows(self, identity: str) -> bool:
        """Whether a node of that identity is known."""


class _Limit:
    """One running request's time limit."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task = task
        self.when = when
        #: The task's cancellation count at the start: cancellations above it that we made are ours.
        self.cancelling = task.cancelling()
        self.expired = False


class TimeLimits:
    """The time limits of running requests, enforced by one timer set for the earliest of them.

    Semantics as ``asyncio.timeout`` (the request's task is cancelled at its limit, and the
    caller turns that cancellation into a timeout error), without a timer per request: the
    timer is moved only when a request's limit is earlier than the one it is set for, which
    with the usual shared limit is almost never.
    """

    def __init__(self) -> None:
        self._running: set[_Limit] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, task: asyncio.Task[Any], seconds: float, loop: asyncio.AbstractEventLoop) -> _Limit:
        """Enforce ``seconds`` on ``task`` (on ``loop``) from now; :meth:`finish` it when the request is done."""
        limit = _Limit(task, loop.time() + seconds)
        self._running.add(limit)
        if self._timer is None or limit.when < self._timer_when or loop is not self._loop:
            self._arm(loop, limit.when)
        return limit

    def finish(self, limit: _Limit) -> bool:
        """Stop enforcing ``limit``; whether it expired (then the cancellation it caused is withdrawn)."""
        self._running.discard(limit)
        if not limit.expired:
            return False
        return limit.task.uncancel() <= limit.cancelling

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_when, self._loop = loop.call_at(when, self._expire), when, loop

    def _expire(self) -> None:
        self._timer = None
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = None
        for limit in self._running:
            if limit.expired:
                continue
            if limit.when <= now:
                limit.expired = True
                limit.task.cancel()
            elif earliest is None or limit.when < earliest:
                earliest = limit.when
        if earliest is not None:
            self._arm(loop, earliest)


class Permits:
    """The node-wide bound on running actions: a semaphore whose free take is a plain call.

    ``async with asyncio.Semaphore`` costs three coroutines per request even when a permit
    is free (about 2 µs on the hot path); here a free permit is :meth:`try_take`, and only a
    request that must wait awaits :meth:`take`. Permits go to waiters first come, first served.
    """

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_take(self) -> bool:
        """Take a permit if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a permit (the caller's time limit bounds the wait: it cancels the waiting task)."""
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a permit just as it was cancelled: pass it on
            raise

    def give(self) -> None:
        """Return a permit: to the longest waiter still waiting, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class MessageRouter:
    """Classifies, checks, dispatches and answers."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry: IntentRegistry = node.registry
        self.gates: list[Gate] = []
        self.remote: Remote | None = None
        # Bounds the actions running at once on this node; extra requests wait their turn.
        self._slots = Permits(max(16, node.settings.server.max_inflight_per_client))
        self._limits = TimeLimits()
        #: Requests between their checks and their audit row, node-wide; ``drain`` waits for them.
        self.active = 0
        self._closing = False
        self._idle: asyncio.Event | None = None

    def close(self) -> None:
        """Refuse new requests from now on (503); those already running go on."""
        self._closing = True

    async def drain(self, seconds: float) -> int:
        """Wait up to ``seconds`` for running requests to be answered; returns how many are left."""
        if self.active:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), seconds)
            except TimeoutError:
                pass
        return self.active

    def add_gate(self, gate: Gate) -> None:
        """Consult ``gate`` before every action (first non-allow verdict wins)."""
        self.gates.append(gate)

    async def handle_messages(self, message: str | bytes | dict[str, Any], client: Client,
                              origin: CallOrigin | None = None) -> None:
        """Handle one incoming message from ``client``; every RPC gets exactly one response.

        ``origin`` marks a sub-call made on behalf of another request (a chain step, an
        assistant step): it is passed to gates and to the action, and a sub-call does not
        take a node-wide permit (its parent holds one), so nested calls can't deadlock.
        """
        rid: str | None = None
        try:
            decoded = protocol.decode_frame(message)
            rid = protocol.read_requestid(decoded)
            kind = decoded.get("type")
            if kind is None:
                raise BadRequest("message has no type")
            if kind != "rpc":
                raise BadRequest(f"unknown message type {protocol.short_repr(kind)}; clients send type 'rpc'")
            request = protocol.parse_rpc(decoded)
        except protocol.BadFrame as exc:
            await self._answer(client, protocol.error(exc.requestid, exc.code, exc.message))
            return
        except CloudisenseError as exc:
            await self._answer(client, protocol.error(rid, exc.code, exc.message))
            return
        except Exception:  # a bug in parsing must still answer, and must not kill the caller's task
            log.exception("could not parse a message from %s", client.id)
            await self._answer(client, protocol.error(rid, 500,
                                                      "internal error while reading the message; see the server log"))
            return
        if request.service_id is None:  # the usual case, one coroutine fewer
            await self._dispatch(request, client, origin)
        else:
            await self.handle_request(request, client, origin)

    async def handle_request(self, request: protocol.RpcRequest, client: Client,
                             origin: CallOrigin | None = None) -> None:
        """Route a parsed request locally, to another node, or to all nodes."""
        target = request.service_id
        if target is None or target == self.node.identity:
            await self._dispatch(request, client, origin)
            return
        if self.remote is None:
            if target == BROADCAST:
                await self._dispatch(request, client, origin)
                return
            await self._answer(client, protocol.error(request.requestid, 404,
                                                      f"unknown node {target!r}: federation is off"))
            return
        if target == BROADCAST:
            await self.remote.broadcast(request, client)
            await self._dispatch(request, client, origin)
            return
        try:
            response = await self.remote.forward(request, client)
        except CloudisenseError as exc:
            response = protocol.error(request.requestid, exc.code, exc.message)
        await self._answer(client, response)

    async def _dispatch(self, request: protocol.RpcRequest, client: Client, origin: CallOrigin | None) -> None:
        """Admit, check, run, audit and answer one local request (one coroutine: this is the hot path)."""
        if self._closing:
            await self._answer(client, protocol.error(request.requestid, 503,
                                                      "the node is shutting down; retry once it is back"))
            return
        if client.inflight >= self.node.settings.server.max_inflight_per_client:
            await self._answer(client, protocol.error(request.requestid, 429,
                                                      "too many requests in flight on this connection"))
            return
        client.inflight += 1
        self.active += 1
        try:
            started = time.perf_counter()
            intent_name = request.intent
            params_for_audit: dict[str, Any] = request.params
            verdict: Verdict | None = None
            outcome = "error"
            audit = True
            audit_id: int | None = None
            try:
                intent = self.registry.get(request.intent)
                intent_name = intent.name
                params: BaseModel
                if intent.params is NoParams and not request.params:
                    params, params_for_audit = _NO_PARAMS, {}
                else:
                    try:
                        params = intent.params.model_validate(request.params)
                    except ValidationError as exc:
                        raise BadRequest(protocol.describe_validation_error(exc)) from None
                    params_for_audit = params.model_dump(mode="json")
                risk = intent.effective_risk(params)
                reason = refusal(client.role, intent, risk)
                if reason is not None:
                    raise Forbidden(reason)
                if self.gates:
                    verdict = await self._consult_gates(Call(intent, params, risk, client, request, origin))
                if verdict is not None and verdict.decision == "deny":
                    outcome = "denied"
                    raise Forbidden(f"denied by policy: {verdict.reason or 'not allowed'}")
                if verdict is not None and verdict.decision == "confirm":
                    outcome = "pending_approval"
                    response = protocol.success(request.requestid, protocol.to_jsonable(verdict.data), code=202)
                else:
                    if risk is not Risk.READ:
                        # Intent to act is durable before acting: a crash mid-action leaves a "started"
                        # row (marked "interrupted" at the next start), never an action without a record.
                        audit_id = await self._begin(request, client, intent_name, params_for_audit, verdict,
                                                     origin)
                    data = await self._run(intent, params, client, request, origin)
                    outcome = "success"
                    response = protocol.success(request.requestid, data)
            except CloudisenseError as exc:
                response = protocol.error(request.requestid, exc.code, exc.message)
                audit = not isinstance(exc, NotFound) or intent_name in self.registry
            except Exception:
                log.exception("intent %s failed", intent_name)
                response = protocol.error(request.requestid, 500,
                                          f"internal error while running {intent_name}; see the server log")
            elapsed = time.perf_counter() - started
            if audit:
                record = AuditRecord(
                    user=client.user, role=client.role.value, client_kind=client.kind, client_id=client.id,
                    requestid=request.requestid, intent=intent_name, params=params_for_audit, outcome=outcome,
                    code=int(response["code"]), message=response.get("message"), duration_ms=elapsed * 1000,
                    decision=verdict.decision if verdict else None, rule=verdict.rule if verdict else None,
                    parent_requestid=origin.requestid if origin is not None else None,
                )
                await self._audit(record, audit_id, response)
            self._count(intent_name if audit else "(unknown)", response, elapsed)
        finally:
            # A request stops counting once its audit row is written (drain waits for exactly that).
            client.inflight -= 1
            self.active -= 1
            if self._idle is not None and not self.active:
                self._idle.set()
        await self._answer(client, response)

    async def _begin(self, request: protocol.RpcRequest, client: Client, intent: str, params: dict[str, Any],
                     verdict: Verdict | None, origin: CallOrigin | None) -> int:
        """Write the "started" audit row; :class:`Unavailable` (nothing runs) when it can't be."""
        record = AuditRecord(
            user=client.user, role=client.role.value, client_kind=client.kind, client_id=client.id,
            requestid=request.requestid, intent=intent, params=params, outcome="started", code=102, message=None,
            duration_ms=0.0, decision=verdict.decision if verdict else None, rule=verdict.rule if verdict else None,
            parent_requestid=origin.requestid if origin is not None else None,
        )
        try:
            return await self.node.audit.begin(record)
        except Exception:
            log.exception("audit write failed before %s; it did not run", intent)
            raise Unavailable(f"audit log unavailable, so {intent} did not run; see the server log") from None

    async def _consult_gates(self, call: Call) -> Verdict | None:
        last: Verdict | None = None
        for gate in self.gates:
            verdict = await gate(call)
            if verdict is None:
                continue
            if verdict.decision != "allow":
                return verdict
            last = verdict
        return last

    async def _run(self, intent: Intent, params: BaseModel, client: Client, request: protocol.RpcRequest,
                   origin: CallOrigin | None) -> Any:
        ctx = ActionContext(self.node, client, request.requestid, intent.name, origin)
        limit = intent.timeout or self.node.settings.server.request_timeout
        # One timer for all requests (TimeLimits) rather than asyncio.timeout's one per request, which
        # costs about 6 µs on the hot path. The wait for a permit is inside the limit, so no request
        # waits without bound.
        # One lookup of the running loop (in Python 3.11 each one is a getpid() system call).
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("requests run inside a task")
        limited = self._limits.start(task, limit, loop)
        timed_out = False
        try:
            try:
                if origin is None:
                    if not self._slots.try_take():
                        await self._slots.take()
                    try:
                        result = await intent.handler(params, ctx)
                    finally:
                        self._slots.give()
                else:
                    result = await intent.handler(params, ctx)
            finally:
                timed_out = self._limits.finish(limited)
        except asyncio.CancelledError:
            if timed_out:  # our limit, not a cancellation from outside
                raise RequestTimeout(f"{intent.name} did not finish within {limit:g} s") from None
            raise
        return protocol.to_jsonable(result)

    async def _audit(self, record: AuditRecord, audit_id: int | None, response: dict[str, Any]) -> None:
        # No timer here (one per request is measurable): the audit sink does not wait (store/audit.py
        # appends one line to its journal).
        try:
            if audit_id is None:
                await self.node.audit.record(record)
            else:
                await self.node.audit.finish(audit_id, record)
        except Exception:
            log.exception("audit write failed for %s (outcome %s)", record.intent, record.outcome)
            response.clear()
            response.update(protocol.error(record.requestid, 500,
                                           "audit log unavailable; the action's outcome is in the server log"))

    def _count(self, intent: str, response: dict[str, Any], elapsed: float) -> None:
        self.node.metrics.request_done(intent, response["status"], response["code"], elapsed)

    async def _answer(self, client: Client, response: dict[str, Any]) -> None:
        try:
            await client.send(response)
        except Exception:  # a client that went away must not break the router
            log.debug("could not deliver response to %s", client.id, exc_info=True)
