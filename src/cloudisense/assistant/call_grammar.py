"""Plans written as function calls, under a GBNF grammar built from the intents' params schemas.

A local model on two cores spends about a tenth of a second on every token it writes, so
the answer format matters: ``restart_target(name="redis")`` is a third of the tokens of the
same step as JSON, and code models write calls fluently. The grammar (:func:`plan_grammar`)
admits only:

* one call per line (at most :data:`MAX_CALLS`) of an offered intent, with keyword arguments
  that are that intent's own params: configured names as enums, integers, numbers,
  ``True``/``False``, short strings without quotes or backslashes;
* ``ask("question")`` when a detail is missing, ``escalate("reason")`` when nothing fits.

So every answer parses. :func:`parse_plan` reads it without evaluating anything (``ast`` with
literal values only) and refuses duplicates; the caller then validates the plan like any other
model output (params models, configured names, values the request does not give).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cloudisense.assistant.catalog import tool_required
from cloudisense.assistant.extract import non_null

#: Most steps a model plan may have.
MAX_CALLS = 4
#: Longest string argument the grammar admits.
MAX_STRING = 160
_SAFE_CHAR = r'[^"\\\n]'


@dataclass(frozen=True)
class ParsedPlan:
    """What a model wrote: calls ``(intent, params)``, or a question, or an escalation reason."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    question: str | None = None
    escalation: str | None = None


class CallSyntaxError(ValueError):
    """The text is not a plan in call syntax (the message says why)."""


def _rule(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def _quoted(value: str) -> str:
    """A GBNF string literal for ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Value:
    """What the grammar admits as one param's value: ``choices`` (literals) or a ``kind``."""

    kind: str  # "choices", "int", "num", "bool", "array", "str"
    choices: tuple[str, ...] = ()
    item: _Value | None = None


def _value(spec: dict[str, Any], names: list[str] | None) -> _Value:
    """One param's value: configured names or listed values as literals, else its JSON type."""
    if names:
        return _Value("choices", tuple(literal(n) for n in sorted(names) if _plain(n)))
    spec = non_null(spec)
    if "enum" in spec:
        literals = tuple(literal(v) for v in spec["enum"] if isinstance(v, (int, float, bool)) or _plain(v))
        if literals:
            return _Value("choices", literals)
    kind = spec.get("type")
    if kind in ("integer", "number", "boolean"):
        return _Value({"integer": "int", "number": "num", "boolean": "bool"}[str(kind)])
    if kind == "array":
        return _Value("array", item=_value(spec.get("items") or {}, None))
    return _Value("str")


def _value_rule(value: _Value) -> str:
    """The GBNF expression for one param's value."""
    if value.kind == "choices":
        return "(" + " | ".join(_quoted(v) for v in value.choices) + ")"
    if value.kind == "array" and value.item is not None:
        item = _value_rule(value.item)
        return f'"[" ({item} (", " {item}){{0,7}})? "]"'
    return value.kind


def _calls(tools: list[dict[str, Any]], entities: dict[str, list[str]]) -> dict[str, dict[str, _Value]]:
    """Each tool's keyword arguments and what each admits: what both the grammar and the forcing read."""
    calls: dict[str, dict[str, _Value]] = {}
    for tool in tools:
        props = (tool.get("params") or {}).get("properties") or {}
        kinds = tool.get("entities") or {}
        args: dict[str, _Value] = {}
        for param, spec in props.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", param):
                continue  # not a keyword a call can carry; the params model says whether it was needed
            names = entities.get(kinds[param]) if param in kinds else None
            args[param] = _value(spec if isinstance(spec, dict) else {}, names)
        calls[tool["name"]] = args
    return calls


def plan_grammar(tools: list[dict[str, Any]], entities: dict[str, list[str]]) -> str:
    """The GBNF grammar of a plan calling only ``tools`` (see the module docstring)."""
    calls = _calls(tools, entities)
    lines = [f'root ::= call ("\\n" call){{0,{MAX_CALLS - 1}}} | "ask(" str ")" | "escalate(" str ")"',
             "call ::= " + (" | ".join(f"c-{_rule(name)}" for name in calls) if calls else '"escalate(" str ")"')]
    for name, args in calls.items():
        rule = _rule(name)
        if args:
            lines.append(f'c-{rule} ::= "{name}(" (a-{rule} (", " a-{rule}){{0,{len(args) - 1}}})? ")"')
            lines.append(f"a-{rule} ::= " + " | ".join(f'"{param}=" {_value_rule(v)}' for param, v in args.items()))
        else:
            lines.append(f'c-{rule} ::= "{name}()"')
    lines += [f'str ::= "\\"" {_SAFE_CHAR}{{0,{MAX_STRING}}} "\\""',
              'int ::= "-"? [0-9]{1,9}',
              'num ::= int ("." [0-9]{1,6})?',
              'bool ::= "True" | "False"']
    return "\n".join(lines) + "\n"


class Forcing:
    """The text a plan's grammar admits as the only way on from what was written so far.

    A model writing ``restart_target(name="redis")`` chooses ``restart``, ``name`` and ``red``;
    the grammar fixes the rest (``_target(``, ``="``, ``is")``). The local provider reads such
    text as prompt (about a quarter of the cost of writing it) instead of writing it token by
    token. Built from the same argument specs as :func:`plan_grammar`; the provider still checks
    every forced token against the grammar, so a mistake here costs speed, never validity.
    """

    def __init__(self, tools: list[dict[str, Any]], entities: dict[str, list[str]]) -> None:
        self._calls = _calls(tools, entities)

    def __call__(self, written: str) -> str:
        fixed = ""
        while step := self._next(written + fixed):
            fixed += step
        return fixed

    def _next(self, written: str) -> str:
        lines = written.split("\n")
        line = lines[-1]
        if "(" not in line:
            starts = [f"{name}(" + ("" if args else ")") for name, args in self._calls.items()]
            if len(lines) == 1:
                starts += ["ask(", "escalate("]
            return _common_rest(line, starts)
        name, _, inside = line.partition("(")
        if name in ("ask", "escalate"):  # one quoted text, then ")"
            if not inside:
                return '"'
            return ")" if inside.count('"') == 2 and inside.endswith('"') else ""
        args = self._calls.get(name)
        if args is None or (inside.endswith(")") and _complete_args(inside[:-1], args)):
            return ""
        return _forced_in_args(inside, args)


def _common_rest(written: str, options: list[str]) -> str:
    """The longest text every option still open after ``written`` goes on with."""
    # Character by character is what is wanted here: these are call texts, not paths.
    return os.path.commonprefix([o[len(written):] for o in options if o.startswith(written)])  # noqa: RUF071


def _split_args(inside: str) -> tuple[list[tuple[str, str]], str]:
    """Complete ``param=value`` pairs, and the text of the one being written (quotes never nest)."""
    pairs: list[tuple[str, str]] = []
    start, quoted, depth = 0, False, 0
    for i, ch in enumerate(inside):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "[":
            depth += 1
        elif not quoted and ch == "]":
            depth -= 1
        elif not quoted and depth == 0 and inside.startswith(", ", i):
            param, _, value = inside[start:i].partition("=")
            pairs.append((param, value))
            start = i + 2
    return pairs, inside[start:]


def _complete_args(inside: str, args: dict[str, _Value]) -> bool:
    if not inside:
        return True
    _, last = _split_args(inside)
    param, eq, value = last.partition("=")
    return bool(eq) and param in args and _value_done(value, args[param])


def _value_done(value: str, spec: _Value) -> bool:
    """Whether ``value`` is a whole value of ``spec`` (it may still go on, e.g. ``12`` → ``123``)."""
    if spec.kind == "choices":
        return value in spec.choices
    if spec.kind == "bool":
        return value in ("True", "False")
    if spec.kind == "str":
        return len(value) >= 2 and value.startswith('"') and value.endswith('"')
    if spec.kind == "array":
        return value.startswith("[") and value.endswith("]") and value.count("[") == value.count("]")
    return bool(re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value))


def _forced_in_args(inside: str, args: dict[str, _Value]) -> str:
    pairs, last = _split_args(inside)
    param, eq, value = last.partition("=")
    if not eq:  # choosing a param, or ")" right after "("
        options = [f"{p}=" for p in args]
        if not pairs and not last:
            options.append(")")
        return _common_rest(last, options)
    spec = args.get(param)
    if spec is None:
        return ""
    if spec.kind == "choices":
        rest = _common_rest(value, list(spec.choices))
        done = value + rest
        if done in spec.choices and not any(c != done and c.startswith(done) for c in spec.choices):
            return rest + (")" if len(pairs) + 1 >= len(args) else "")
        return rest
    if spec.kind == "bool":
        rest = _common_rest(value, ["True", "False"])
        return rest + (")" if value + rest in ("True", "False") and len(pairs) + 1 >= len(args) else "")
    if spec.kind == "str":
        if not value:
            return '"'
        if _value_done(value, spec):
            return ")" if len(pairs) + 1 >= len(args) else ""
        return ""
    if spec.kind == "array":
        return "[" if not value else ""
    return ""


def _plain(value: Any) -> bool:
    """A string the grammar's ``str`` can hold: no quote, backslash or newline."""
    return isinstance(value, str) and not any(c in value for c in '"\\\n')


def literal(value: Any) -> str:
    """``value`` as the grammar writes it: ``"text"``, ``True``, ``12``, ``["a", "b"]``."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return '"' + str(value) + '"'


def render_call(intent: str, params: dict[str, Any]) -> str | None:
    """``intent(a="x", b=2)``: how a worked example's step is written; None if a value can't be."""
    if not all(_plain(v) or not isinstance(v, str) for v in params.values()):
        return None
    return f"{intent}(" + ", ".join(f"{k}={literal(v)}" for k, v in params.items()) + ")"


def signature(tool: dict[str, Any]) -> str:
    """``name(param: kind, other: int = ...)  # description. e.g. "example"``: one line of the prompt."""
    props = (tool.get("params") or {}).get("properties") or {}
    kinds = tool.get("entities") or {}
    required = tool_required(tool)
    args = []
    for param, spec in props.items():
        word = kinds.get(param) or _type_word(spec if isinstance(spec, dict) else {})
        args.append(f"{param}: {word}" + ("" if param in required else " = ..."))
    # The first clause says what it does; the rest (how, caveats) costs prompt tokens a plan doesn't need.
    description = re.split(r"\. |; | \(|: ", str(tool.get("description") or ""))[0].rstrip(".")
    examples = list(tool.get("examples") or [])[:1]
    hint = f'. e.g. "{examples[0]}"' if examples else ""
    return f"{tool['name']}({', '.join(args)})  # {description}{hint}"


def _type_word(spec: dict[str, Any]) -> str:
    spec = non_null(spec)
    if "enum" in spec:
        return "|".join(str(v) for v in spec["enum"])
    return {"integer": "int", "number": "float", "boolean": "bool", "array": "list"}.get(str(spec.get("type")), "str")


def parse_plan(text: str) -> ParsedPlan:
    """Read a model's answer in call syntax, evaluating nothing; :class:`CallSyntaxError` when it is not one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise CallSyntaxError("the answer is empty")
    if len(lines) > MAX_CALLS:
        raise CallSyntaxError(f"more than {MAX_CALLS} steps")
    calls: list[tuple[str, dict[str, Any]]] = []
    for line in lines:
        name, args, kwargs = _call(line)
        if name in ("ask", "escalate"):
            if len(lines) != 1 or kwargs or len(args) != 1 or not isinstance(args[0], str):
                raise CallSyntaxError(f"{name}() takes one text and stands alone")
            said = args[0].strip()[:500]
            return ParsedPlan(question=said or "Could you say more?") if name == "ask" else ParsedPlan(escalation=said)
        if args:
            raise CallSyntaxError(f"{name}: arguments must be given by name")
        calls.append((name, kwargs))
    return ParsedPlan(calls=calls)


def _call(line: str) -> tuple[str, list[Any], dict[str, Any]]:
    try:
        node = ast.parse(line, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CallSyntaxError(f"not a call: {line[:80]!r}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise CallSyntaxError(f"not a call: {line[:80]!r}")
    names = [k.arg for k in node.keywords]
    if None in names or len(set(names)) != len(names):
        raise CallSyntaxError(f"{node.func.id}: a repeated or unnamed argument")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise CallSyntaxError(f"{node.func.id}: arguments must be plain values") from None
    return node.func.id, args, kwargs
