"""The local provider: prompt shaping (fast) and the real shipped model (slow, kept short)."""

from __future__ import annotations

from types import SimpleNamespace

import asyncio
import json
import re
import threading
import time

import pytest

from cloudisense.llm import ChatRequest, Message, TextDelta, ToolCall, ToolSpec, get_provider
from cloudisense.llm.base import Finish, ToolCallEvent, UsageEvent
from cloudisense.llm.errors import ProviderUnavailable
from cloudisense.llm.local import (
    PromptStates,
    grammar_schema,
    parse_tool_output,
    to_local_messages,
    tool_line,
    tool_schema,
)

STATS = ToolSpec(
    "get_stats",
    "CPU and memory statistics of a host.",
    {"type": "object", "properties": {"host": {"type": "string", "maxLength": 20}}, "required": ["host"]},
)


# --- fast: no model needed ------------------------------------------------------------------------


def test_messages_folded_for_any_chat_template() -> None:
    request = ChatRequest(
        [
            Message.system("You are terse."),
            Message.user("stats of web1?"),
            Message.assistant(None, [ToolCall.parse("c1", "get_stats", {"host": "web1"})]),
            Message.tool("c1", '{"cpu": 3}'),
            Message.user("and now?"),
        ],
        tools=[STATS],
    )
    turns = to_local_messages(request)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"].startswith("You are terse.\n\nYou can call these tools:")
    assert turns[0]["content"].endswith("stats of web1?")
    assert json.loads(turns[1]["content"]) == {"tool": "get_stats", "arguments": {"host": "web1"}}
    assert turns[2]["content"] == 'Result of tool get_stats: {"cpu": 3}\n\nand now?'


def test_tools_are_offered_as_one_short_line_each() -> None:
    audit = ToolSpec("get_audit_log", "The newest audit records. Every filter is optional; they combine.",
                     {"type": "object", "properties": {
                         "limit": {"type": "integer", "default": 50, "description": "how many"},
                         "outcome": {"anyOf": [{"enum": ["success", "error"], "type": "string"}, {"type": "null"}],
                                     "default": None}}})
    assert tool_line(audit) == "- get_audit_log(limit: integer = 50, outcome: success|error = null): The newest audit records"
    assert tool_line(STATS) == "- get_stats(host: string): CPU and memory statistics of a host"
    system = to_local_messages(ChatRequest([Message.user("hi")], tools=[STATS, audit]))[0]["content"]
    assert "JSON schema" not in system and "how many" not in system  # the grammar holds the details


def test_kept_prompt_states_keep_what_is_reused() -> None:
    states = PromptStates(capacity=2)
    plan = list(range(100))
    states.keep(plan + [1000, 1001], b"plan-1")
    states._states[-1].hits = 3  # plans began with it three times
    states.keep(plan + [1000, 1001, 1002], b"plan-1 and its answer")  # extends it: replaces it, keeps its hits
    assert [(st.data, st.hits) for st in states._states] == [(b"plan-1 and its answer", 3)]
    states.keep(list(range(500, 600)), b"reading")
    states.keep(list(range(700, 800)), b"chat")  # full: the one-off reading goes, not the reused plan
    assert [st.data for st in states._states] == [b"plan-1 and its answer", b"chat"]


def test_a_kept_state_reused_while_still_loaded_counts_as_reused() -> None:
    import numpy as np

    states = PromptStates(capacity=2)
    opening = list(range(100))
    states.keep(opening + [1000], b"plan-1")
    # The next plan begins the same way and the last prompt is still loaded: nothing to load ...
    llama = SimpleNamespace(input_ids=np.array(opening + [1000]), n_tokens=101)
    assert states.restore(llama, opening + [2000]) == 0
    # ... but the kept state was what made that reuse possible, so it is not the first to go.
    assert states._states[0].hits == 1
    states.keep(list(range(500, 600)), b"reading")
    states.keep(list(range(700, 800)), b"chat")
    assert [st.data for st in states._states] == [b"plan-1", b"chat"]


def test_a_prepared_opening_outlives_one_off_prompts_and_gives_way_to_a_request_that_begins_with_it() -> None:
    states = PromptStates(capacity=2)
    opening, turn_end = list(range(100)), [9001, 9002, 9003]  # a template's markers after an empty turn
    states.keep(opening + turn_end, b"targets opening", hits=1)
    states.keep(list(range(500, 600)), b"reading")
    states.keep(list(range(700, 800)), b"chat")  # full: the one-off reading goes, not the opening
    assert [st.data for st in states._states] == [b"targets opening", b"chat"]
    # A request that shares all of the opening but its turn markers replaces it, with its hit.
    states.keep(opening + [42] * 40, b"a plan about targets")
    assert [(st.data, st.hits) for st in states._states] == [(b"chat", 0), (b"a plan about targets", 1)]


class _CountingLlama:
    """Just what chunked evaluation touches: loaded tokens, eval, reset."""

    def __init__(self) -> None:
        import numpy as np

        self.input_ids = np.zeros(1000, dtype=np.intc)
        self.n_tokens = 0
        self.batches: list[int] = []

    def eval(self, tokens: list[int]) -> None:
        self.input_ids[self.n_tokens:self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self.batches.append(len(tokens))

    def reset(self) -> None:
        self.n_tokens = 0


def test_preparing_a_prompt_gives_way_between_chunks() -> None:
    from cloudisense.llm.grammar_decoding import PREPARE_CHUNK, evaluate_in_chunks

    llama = _CountingLlama()
    prompt = list(range(1, 3 * PREPARE_CHUNK + 5))
    waiting = iter([False, True])  # a request arrives while the first chunk is evaluated
    assert evaluate_in_chunks(llama, prompt, lambda: next(waiting)) is False
    assert llama.batches == [PREPARE_CHUNK]
    # Later, all of it: the chunk already evaluated is kept, not evaluated again.
    llama._ctx = SimpleNamespace(kv_cache_seq_rm=lambda *a: True)
    assert evaluate_in_chunks(llama, prompt, lambda: False) is True
    assert llama.batches[1:] == [PREPARE_CHUNK, PREPARE_CHUNK, 4] and llama.n_tokens == len(prompt)


def test_tool_output_parsing_is_defensive() -> None:
    (event,) = parse_tool_output('{"tool": "get_stats", "arguments": {"host": "a"}}', [STATS], False)
    assert isinstance(event, ToolCallEvent) and event.call.arguments == {"host": "a"} and event.call.ok
    (event,) = parse_tool_output('{"tool": "rm_rf", "arguments": {}}', [STATS], False)
    assert isinstance(event, ToolCallEvent) and not event.call.ok and "unknown tool" in (event.call.error or "")
    assert parse_tool_output('{"answer": "hi"}', [STATS], False) == [TextDelta("hi")]
    assert parse_tool_output('{"tool": "get_st', [STATS], False) == [TextDelta('{"tool": "get_st')]
    # An answer cut by max_tokens is said as far as it got (to its last whole sentence when that
    # keeps most of it), not shown as JSON.
    cut = '{"answer": "Redis crashed. The worker cannot connect to it. The system is running at'
    assert parse_tool_output(cut, [STATS], False) == [TextDelta("Redis crashed. The worker cannot connect to it.")]
    assert parse_tool_output('{"answer": "redis is down \\"hard', [STATS], False) == [TextDelta('redis is down "hard …')]
    assert parse_tool_output('{"answer": "cut in an escape \\', [STATS], False) == [TextDelta("cut in an escape …")]
    schema = tool_schema([STATS], None)
    assert schema["anyOf"][0]["properties"]["tool"] == {"const": "get_stats"}
    assert schema["anyOf"][-1]["required"] == ["answer"]


def test_grammar_schema_drops_long_bounds_and_inlines_refs() -> None:
    # A params model nested in the tools' anyOf: its $defs are relative to it, not to the root.
    params = {
        "type": "object",
        "$defs": {"Block": {"type": "object", "properties": {"url": {"type": "string", "maxLength": 4096}}}},
        "properties": {
            "path": {"type": "string", "maxLength": 4096, "pattern": "^[^\\0]+$", "description": "a path"},
            "code": {"type": "string", "maxLength": 8},
            "http": {"$ref": "#/$defs/Block"},
            "pattern": {"type": "string"},  # a property *named* like a keyword stays
        },
    }
    out = grammar_schema(tool_schema([ToolSpec("t", "d", params)], None))
    args = out["anyOf"][0]["properties"]["arguments"]
    assert "$defs" not in args and args["properties"]["http"]["properties"]["url"] == {"type": "string"}
    assert args["properties"]["path"] == {"type": "string"}
    assert args["properties"]["code"] == {"type": "string", "maxLength": 8}
    assert args["properties"]["pattern"] == {"type": "string"}
    # A recursive model is cut off instead of looping.
    looped = grammar_schema({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                             "$ref": "#/$defs/N"})
    assert json.dumps(looped).count("next") == 8


# --- slow: the real shipped model -----------------------------------------------------------------


@pytest.fixture
def local(model_path, make_settings):
    return get_provider("local", make_settings(providers={"local_context": 1024}))


@pytest.mark.slow
async def test_plain_streamed_completion(local) -> None:
    request = ChatRequest([Message.user("List three colours: red,")], max_tokens=12, temperature=0)
    events = [e async for e in local.stream(request)]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    (usage,) = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage.output_tokens == len(deltas) and usage.input_tokens > 5
    assert events[-1] in (Finish("stop"), Finish("length"))


@pytest.mark.slow
async def test_schema_constrained_output_parses_and_validates(local) -> None:
    schema = {
        "type": "object",
        "properties": {
            "service": {"type": "string", "enum": ["nginx", "redis"]},
            "healthy": {"type": "boolean"},
            "restarts": {"type": "integer", "minimum": 0, "maximum": 99},
        },
        "required": ["service", "healthy", "restarts"],
    }
    request = ChatRequest(
        [Message.user("nginx has restarted 3 times and is healthy. Report it as JSON.")],
        response_schema=schema,
        max_tokens=60,
        temperature=0,
    )
    response = await local.complete(request)
    value = response.json()
    assert set(value) == {"service", "healthy", "restarts"}
    assert value["service"] in ("nginx", "redis") and isinstance(value["healthy"], bool)
    assert isinstance(value["restarts"], int) and 0 <= value["restarts"] <= 99


@pytest.mark.slow
async def test_tools_as_constrained_json(local) -> None:
    request = ChatRequest(
        [Message.user("Show the CPU statistics of host web1.")], tools=[STATS], max_tokens=40, temperature=0
    )
    response = await local.complete(request)
    # Whatever the tiny model picks, the output is one of the allowed shapes, never garbage.
    if response.tool_calls:
        (call,) = response.tool_calls
        assert call.ok and call.name == "get_stats" and isinstance(call.arguments["host"], str)
        assert response.finish_reason == "tool_calls"
    else:
        assert response.text and response.finish_reason in ("stop", "length")


@pytest.mark.slow
async def test_deltas_arrive_while_the_model_is_still_generating(local, monkeypatch) -> None:
    llama = await asyncio.to_thread(local.local.load)
    real = llama.create_chat_completion
    consumer_saw_first = threading.Event()
    seen_in_time: list[bool] = []

    def gated(**kwargs):
        # After the first content token the generator waits until the asyncio side has it:
        # if deltas were only delivered after the generation, this wait would time out.
        for chunk in real(**kwargs):
            yield chunk
            if chunk["choices"][0]["delta"].get("content") and not seen_in_time:
                seen_in_time.append(consumer_saw_first.wait(20))

    monkeypatch.setattr(llama, "create_chat_completion", gated)
    request = ChatRequest([Message.user("Write a short poem about servers.")], max_tokens=8, temperature=0)
    async for event in local.stream(request):
        if isinstance(event, TextDelta):
            consumer_saw_first.set()
    assert seen_in_time == [True]


@pytest.mark.slow
async def test_inference_off_the_loop_and_requests_queue_fifo(local, make_settings) -> None:
    # The same model object is shared by every spec naming the same file and settings.
    assert get_provider("local", make_settings(providers={"local_context": 1024})).local is local.local
    request = ChatRequest([Message.user("Write a short poem about servers.")], max_tokens=16, temperature=0)
    loop_ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal loop_ticks
        while not stop.is_set():
            loop_ticks += 1
            await asyncio.sleep(0.005)

    order: list[int] = []

    async def run(n: int) -> None:
        async for event in local.stream(request):
            if isinstance(event, TextDelta):
                order.append(n)

    tick_task = asyncio.create_task(ticker())
    # Started in this order; each waits for the one worker thread in turn.
    await asyncio.gather(run(0), run(1), run(2))
    stop.set()
    await tick_task
    assert loop_ticks > 5  # the loop kept running during inference
    assert order == sorted(order) and set(order) == {0, 1, 2}  # FIFO, one request at a time


@pytest.mark.slow
async def test_abandoned_stream_frees_the_model(local) -> None:
    request = ChatRequest([Message.user("Tell a long story about a cat.")], max_tokens=200, temperature=0)
    agen = local.stream(request)
    async for event in agen:
        if isinstance(event, TextDelta):
            break
    await agen.aclose()
    # The next request is served promptly: the abandoned one stopped at its next token.
    started = time.monotonic()
    response = await local.complete(ChatRequest([Message.user("Hi")], max_tokens=4, temperature=0))
    assert response.finish_reason in ("stop", "length")
    assert time.monotonic() - started < 30  # generous: only guards against a hang, not a timing check


@pytest.mark.slow
def test_every_demo_intent_is_a_grammar_llama_cpp_accepts(local) -> None:
    # A 4096-long string bound once crashed the process (a NULL grammar sampler): the grammar of
    # each intent of the demo node, offered as a tool, must be one llama.cpp parses.
    from bench.planner import demo_context

    from cloudisense.llm.local import _grammar, check_grammar

    llama = local.local.load()
    context, _ = demo_context()
    for tool in context.tools:
        spec = ToolSpec(tool["name"], tool.get("description", ""), tool.get("params") or {"type": "object"})
        check_grammar(llama, _grammar(json.dumps(tool_schema([spec], None), sort_keys=True)))


@pytest.mark.slow
async def test_a_grammar_llama_cpp_refuses_is_an_error_not_a_crash(local) -> None:
    request = ChatRequest([Message.user("hi")], grammar="root ::= undefined-rule", max_tokens=4)
    with pytest.raises(ProviderUnavailable, match="refused the output grammar"):
        await local.complete(request)


@pytest.mark.slow
async def test_a_kept_prompt_state_is_restored_and_answers_as_if_computed_again(model_path, make_settings) -> None:
    fixed = "You answer in one word. " + "Facts: the sky is blue, grass is green, snow is white, coal is black. " * 6

    def ask(system: str, question: str) -> ChatRequest:
        return ChatRequest([Message.system(system), Message.user(question)], max_tokens=6, temperature=0)

    keeping = get_provider("local", make_settings(providers={"local_context": 1024, "local_prompt_states": 2}))
    await keeping.complete(ask(fixed, "What colour is grass?"))
    await keeping.complete(ask("Something else entirely. " * 12, "Say hi."))  # llama.cpp's own reuse is gone
    warm = await keeping.complete(ask(fixed, "What colour is snow?"))
    assert keeping.local.states.last_restored > 100  # the fixed part came back instead of being computed

    plain = get_provider("local", make_settings(providers={"local_context": 1024, "local_prompt_states": 0}))
    cold = await plain.complete(ask(fixed, "What colour is snow?"))
    assert plain.local.states.last_restored == 0
    assert warm.text == cold.text and warm.usage.input_tokens == cold.usage.input_tokens


_PICK = 'root ::= "colour=" ("\\"crimson\\"" | "\\"green\\"" | "\\"cobalt blue\\"") ", count=" [0-9]{1,2}\n'


def _pick_forcing(written: str) -> str:
    """The text _PICK fixes after ``written``."""
    if not written:
        return 'colour="'
    whole = [f'colour={name}, count=' for name in ('"crimson"', '"green"', '"cobalt blue"')]
    open_ = [w for w in whole if w.startswith(written) or written.startswith(w)]
    if len(open_) == 1 and len(written) < len(open_[0]):
        return open_[0][len(written):]
    return ""


@pytest.mark.slow
async def test_greedy_under_a_grammar_picks_what_llama_cpp_picks_and_forced_text_is_read_not_written(
        model_path, make_settings, monkeypatch) -> None:
    import llama_cpp

    import cloudisense.llm.local as local_module

    def ask(question: str, forcing=None) -> ChatRequest:
        return ChatRequest([Message.user(f"{question} Answer as colour=..., count=...")], grammar=_PICK,
                           forcing=forcing, max_tokens=16, temperature=0)

    questions = ["Which is the colour of fresh grass, and how many legs has a spider?",
                 "Blood is what colour? How many days in a week?",
                 "The sea on a map? How many fingers on a hand?"]
    # Separate models (different contexts), each prompt computed from scratch: the same arithmetic.
    ours = get_provider("local", make_settings(providers={"local_context": 1024}))
    theirs = get_provider("local", make_settings(providers={"local_context": 1056}))
    ours_answers = [(await ours.complete(ask(q))).text for q in questions]
    monkeypatch.setattr(local_module, "plain_greedy", lambda kwargs: False)  # llama-cpp-python's own sampler
    theirs_answers = [(await theirs.complete(ask(q))).text for q in questions]
    assert ours_answers == theirs_answers
    monkeypatch.undo()

    def written_one_by_one(provider) -> int:
        return int(llama_cpp.llama_perf_context(provider.local.load()._ctx.ctx).n_eval)

    forced = get_provider("local", make_settings(providers={"local_context": 1088}))
    for question in questions:
        llama = forced.local.load()
        llama_cpp.llama_perf_context_reset(llama._ctx.ctx)
        answer = (await forced.complete(ask(question, _pick_forcing))).text
        # Fixed text may split into other tokens than the model would write, so later choices
        # may differ; the answer still keeps to the grammar.
        assert re.fullmatch(r'colour="(crimson|green|cobalt blue)", count=[0-9]{1,2}', answer), answer
        with_forcing = written_one_by_one(forced)
        llama_cpp.llama_perf_context_reset(llama._ctx.ctx)
        await forced.complete(ask(question + " ", None))
        assert with_forcing < written_one_by_one(forced)


@pytest.mark.slow
async def test_a_prepared_opening_is_restored_by_the_next_request_and_gives_way_to_requests(
        model_path, make_settings) -> None:
    fixed = "You answer in one word. " + "Facts: the sky is blue, grass is green, snow is white, coal is black. " * 6
    provider = get_provider("local", make_settings(providers={"local_context": 1024, "local_prompt_states": 4}))
    # Preparing while a request runs: the request is answered, and the opening is prepared after it.
    prepared, answered = await asyncio.gather(
        provider.prepare([Message.system(fixed), Message.user("")]),
        provider.complete(ChatRequest([Message.user("Say hi.")], max_tokens=4, temperature=0)))
    assert prepared is True and answered.text
    await provider.complete(ChatRequest([Message.system("Something else entirely. " * 12), Message.user("Hi.")],
                                        max_tokens=2, temperature=0))  # llama.cpp's own reuse is gone
    await provider.complete(ChatRequest([Message.system(fixed), Message.user("What colour is snow?")],
                                        max_tokens=4, temperature=0))
    assert provider.local.states.last_restored > 100  # the prepared opening came back
