"""Greedy decoding under a grammar, cheaper than llama-cpp-python's own, with forced text read as prompt.

On two cores a 1.5B model spends about 100 ms computing each token it writes, and
llama-cpp-python's sampler adds about 30 ms more: it masks all 151,000 tokens of the
vocabulary with the grammar before picking the best. For a greedy pick that is mostly wasted:
the best token that the grammar allows is usually among the model's few best, so
:func:`greedy_under_grammar` tests those one by one (each test is one token against the
grammar) and masks the whole vocabulary only when none of them fits. The pick is the same.

A grammar also often leaves only one way on: after ``restart`` in a plan whose only
``restart…`` is ``restart_target``, the text ``_target(`` is fixed. A ``forcing`` callable
(:class:`cloudisense.assistant.call_grammar.Forcing`) names such text; its tokens are checked
against the grammar, accepted, and evaluated together with the next step, which costs about a
quarter of writing them one by one. (The answer can differ from a token-by-token one only in
how that fixed text is split into tokens.)

:func:`evaluate_in_chunks` computes a prompt's state without writing anything, a chunk at a
time so that a request waits at most one chunk (how the local provider prepares the planner's
openings while the model is idle).

Used by :class:`cloudisense.llm.local.LocalModel` for greedy requests that carry a grammar,
from the model's worker thread only. Relies on llama-cpp-python 0.3.x internals, as the kept
prompt states do.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: The model's best tokens tested against the grammar one by one before it masks them all.
TOP_TESTED = 16


def plain_greedy(kwargs: dict[str, Any]) -> bool:
    """Whether a ``Llama.generate`` call is a greedy pick under a grammar and nothing else
    (stopping criteria, such as a chat template's end tokens, are honoured)."""
    return (kwargs.get("grammar") is not None and kwargs.get("temp") == 0.0
            and kwargs.get("repeat_penalty", 1.0) == 1.0 and not kwargs.get("frequency_penalty")
            and not kwargs.get("presence_penalty") and kwargs.get("logits_processor") is None
            and not kwargs.get("mirostat_mode"))


class _Grammar:
    """One llama.cpp grammar sampler: test a token, accept a token, mask all tokens."""

    def __init__(self, llama: Any, grammar: Any) -> None:
        import llama_cpp

        self._c = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self._sampler:
            raise ValueError("llama.cpp refused the output grammar (a schema too complex to spell out)")
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)

    def allows(self, token: int) -> bool:
        """Whether the grammar admits ``token`` next (nothing is accepted)."""
        self._one[0] = self._c.llama_token_data(token, 0.0, 0.0)
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        self._c.llama_sampler_apply(self._sampler, ctypes.byref(self._one_array))
        return self._one[0].logit != -math.inf

    def accept(self, token: int) -> None:
        self._c.llama_sampler_accept(self._sampler, token)

    def best_allowed(self, logits: Any) -> int | None:
        """The allowed token with the highest logit, masking every token (the slow way)."""
        import numpy as np

        n = len(logits)
        data = np.recarray((n,), dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)],
                                                align=True))
        data.id[:] = np.arange(n, dtype=np.intc)
        data.logit[:] = logits
        data.p[:] = 0.0
        array = self._c.llama_token_data_array(data=data.ctypes.data_as(self._c.llama_token_data_p),
                                               size=n, selected=-1, sorted=False)
        self._c.llama_sampler_apply(self._sampler, ctypes.byref(array))
        # The grammar sampler may drop rejected candidates (a smaller size) or mark them -inf.
        kept = data.logit[: array.size]
        if not len(kept) or not np.isfinite(kept.max()):
            return None
        return int(data.id[int(kept.argmax())])

    def close(self) -> None:
        if self._sampler:
            self._c.llama_sampler_free(self._sampler)
            self._sampler = None


def _logits(llama: Any) -> Any:
    import numpy as np

    return np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),))


def _pick(logits: Any, grammar: _Grammar) -> int | None:
    """The greedy pick among the tokens the grammar allows (None: it allows none)."""
    import numpy as np

    top = np.argpartition(-logits, TOP_TESTED)[:TOP_TESTED]
    for token in top[np.argsort(-logits[top], kind="stable")]:
        if grammar.allows(int(token)):
            return int(token)
    return grammar.best_allowed(logits)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` begin with alike."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _evaluate_prompt_from(llama: Any, tokens: list[int]) -> list[int]:
    """Keep the longest loaded prefix of ``tokens`` (at least one token is left to evaluate); the rest."""
    reuse = min(common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens), len(tokens) - 1)
    if reuse > 0 and llama._ctx.kv_cache_seq_rm(-1, reuse, -1):
        llama.n_tokens = reuse
        return tokens[reuse:]
    llama.reset()
    return tokens


#: Tokens evaluated at a time while preparing a prompt: how long a request may wait for it (about 1 s).
PREPARE_CHUNK = 32


def evaluate_in_chunks(llama: Any, prompt: Sequence[int], gives_way: Callable[[], bool]) -> bool:
    """Evaluate ``prompt`` (after its longest loaded prefix) a chunk at a time, stopping early when
    ``gives_way()`` says a request is waiting; True when all of it was evaluated."""
    pending = _evaluate_prompt_from(llama, list(prompt))
    for start in range(0, len(pending), PREPARE_CHUNK):
        if gives_way():
            return False
        llama.eval(pending[start:start + PREPARE_CHUNK])
    return True


def greedy_under_grammar(llama: Any, prompt: Sequence[int], grammar: Any,
                         forcing: Callable[[str], str] | None = None,
                         stopping_criteria: Callable[[Any, Any], bool] | None = None) -> Iterator[int]:
    """Tokens of the greedy answer to ``prompt`` under ``grammar`` (a ``LlamaGrammar``), as
    ``Llama.generate`` yields them: the caller stops at end of generation or its token limit."""
    import llama_cpp
    import numpy as np

    rules = _Grammar(llama, grammar)
    try:
        pending = _evaluate_prompt_from(llama, list(prompt))
        written = b""
        while True:
            llama.eval(pending)
            logits = _logits(llama)
            token = _pick(logits, rules)
            if token is None:  # the grammar is done but no end token is allowed: end here
                token = llama.token_eos()
                yield token
                return
            if stopping_criteria is not None and stopping_criteria(
                    np.append(llama.input_ids[: llama.n_tokens], token), logits):
                return
            rules.accept(token)
            yield token
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                return
            pending = [token]
            if forcing is None:
                continue
            written += llama.detokenize([token])
            fixed = forcing(written.decode("utf-8", errors="ignore"))
            if not fixed:
                continue
            # The last token of the fixed text is left to the model: it may merge with what comes
            # next ("(" + "name" is one token, "(name"), and a split the model would never write
            # misleads it (measured: a third more wrong intents when it was forced too).
            for forced in llama.tokenize(fixed.encode("utf-8"), add_bos=False, special=False)[:-1]:
                if not rules.allows(forced):
                    break  # split differently than the grammar reads it: the model writes the rest
                rules.accept(forced)
                pending.append(forced)
                written += llama.detokenize([forced])
                yield forced
    finally:
        rules.close()
