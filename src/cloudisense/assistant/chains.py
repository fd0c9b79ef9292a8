"""Chains: references to earlier results and a tiny, safe condition language.

References: ``${check.data.percent}`` reads step ``check``'s result
(``{"status", "code", "data", "message"}``) along a dotted path (list items by
index: ``${ps.data.processes.0.name}``). In params, a string that is exactly one
reference keeps the JSON type of the value; references embedded in a longer
string are stringified (JSON for non-strings).

Conditions (``when``): literals ``true false null``, numbers, quoted strings,
references, ``== != < <= > >=``, ``and or not`` and parentheses. It is parsed
by hand here: nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cloudisense.core.errors import BadRequest

_REF = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_-]{0,63})((?:\.[A-Za-z0-9_-]+)*)\}")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ref>\$\{[^}]*\})
      | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\))
      | (?P<word>[A-Za-z_]+)
    )""",
    re.VERBOSE,
)
_MISSING = object()


class ChainError(BadRequest):
    """A reference or condition that cannot be evaluated (says which and why)."""


def lookup(results: dict[str, dict[str, Any]], ref: str) -> Any:
    """The value of ``${step.path...}`` (given without ``${}``); unknown steps are errors, missing paths null."""
    parts = ref.split(".")
    step = parts[0]
    if step not in results:
        known = ", ".join(sorted(results)) or "none yet"
        raise ChainError(f"reference ${{{ref}}} names step {step!r}, which has not run before this one "
                         f"(known: {known})")
    value: Any = results[step]
    for part in parts[1:]:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def resolve(value: Any, results: dict[str, dict[str, Any]]) -> Any:
    """``value`` (params) with every reference replaced by earlier results."""
    if isinstance(value, dict):
        return {k: resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, results) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return lookup(results, whole.group(1) + whole.group(2))

    def text(match: re.Match[str]) -> str:
        found = lookup(results, match.group(1) + match.group(2))
        return found if isinstance(found, str) else json.dumps(found)

    out = _REF.sub(text, value)
    if "${" in out:
        raise ChainError(f"malformed reference in {value!r}: write ${{step_id.data.field}}")
    return out


def references(value: Any) -> set[str]:
    """Step ids referenced anywhere in ``value``."""
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {m.group(1) for m in _REF.finditer(value)}
    return set()


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ChainError(f"condition {text!r}: cannot read {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens, evaluating as it goes (the language has no side effects)."""

    def __init__(self, text: str, results: dict[str, dict[str, Any]]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.results = results

    def error(self, why: str) -> ChainError:
        return ChainError(f"condition {self.text!r}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise self.error("ends too early")
        self.pos += 1
        return token

    def parse(self) -> bool:
        value = self.or_expr()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return _truthy(value)

    def or_expr(self) -> Any:
        value = self.and_expr()
        while self.peek() == ("word", "or"):
            self.take()
            right = self.and_expr()
            value = _truthy(value) or _truthy(right)
        return value

    def and_expr(self) -> Any:
        value = self.not_expr()
        while self.peek() == ("word", "and"):
            self.take()
            right = self.not_expr()
            value = _truthy(value) and _truthy(right)
        return value

    def not_expr(self) -> Any:
        if self.peek() == ("word", "not"):
            self.take()
            return not _truthy(self.not_expr())
        return self.comparison()

    def comparison(self) -> Any:
        left = self.atom()
        token = self.peek()
        if token and token[0] == "op" and token[1] not in "()":
            op = self.take()[1]
            return self.compare(left, op, self.atom())
        return left

    def compare(self, left: Any, op: str, right: Any) -> bool:
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
        strings = isinstance(left, str) and isinstance(right, str)
        if not (numbers or strings):
            raise self.error(f"cannot compare {json.dumps(left)} {op} {json.dumps(right)} (numbers or strings only)")
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]

    def atom(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "ref":
            match = _REF.fullmatch(text)
            if not match:
                raise self.error(f"malformed reference {text}")
            return lookup(self.results, match.group(1) + match.group(2))
        if kind == "word" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if (kind, text) == ("op", "("):
            value = self.or_expr()
            if self.take() != ("op", ")"):
                raise self.error("missing )")
            return value
        raise self.error(f"unexpected {text!r}")


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _truthy(value: Any) -> bool:
    return bool(value)


def evaluate(condition: str, results: dict[str, dict[str, Any]]) -> bool:
    """Evaluate a ``when`` condition against earlier results."""
    if not condition.strip():
        raise ChainError("condition is empty")
    return _Parser(condition, results).parse()
