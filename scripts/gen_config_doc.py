"""Regenerate docs/configuration.md from the typed settings (tests check it is current).

Usage: .venv/bin/python scripts/gen_config_doc.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cloudisense.config import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

HEAD = """# Configuration

Settings come from a TOML file (`--config FILE` or `CLOUDISENSE_CONFIG`), then from
`CLOUDISENSE_*` environment variables (the environment wins), then from command-line flags.
Nested keys join with `__`: `[server] port` is `CLOUDISENSE_SERVER__PORT`. Environment values
are read as JSON when they parse as JSON (`true`, `8080`, `["a", "b"]`), else as strings.
Every key is typed and checked at start-up: an unknown key or a wrong type stops the server
with a message naming the key. Relative paths in a config file are relative to the file.

With no file at all the server starts with the defaults below: it binds to 127.0.0.1:8000,
keeps its data in `$XDG_DATA_HOME/cloudisense` (`~/.local/share/cloudisense`), names itself
after the host, and plans with the built-in offline planner. `CLOUDISENSE_URL`,
`CLOUDISENSE_USER` and `CLOUDISENSE_PASSWORD` are read by the `cloudisense rpc`/`ask` client
commands, not by the server. The demo node's file is `examples/demo/cloudisense.toml`.

This page is generated from `src/cloudisense/config.py` by `scripts/gen_config_doc.py`.
"""


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "none")
    args = ", ".join(type_name(a) for a in get_args(annotation))
    name = getattr(origin, "__name__", str(origin)).replace("UnionType", "union")
    if name in ("union", "Union"):
        return " | ".join(type_name(a) for a in get_args(annotation))
    if name == "Literal":
        return " | ".join(repr(a) for a in get_args(annotation))
    return f"{name}[{args}]"


def default_of(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        if field.default_factory.__name__ in ("gethostname", "_default_data_dir"):
            return "(host name)" if "host" in field.default_factory.__name__ else "(XDG data dir)"
        return repr(value) if value not in ({}, []) else ("{}" if value == {} else "[]")
    if field.is_required():
        return "(required)"
    if field.default is None:
        return "unset"
    return f"`{field.default!r}`" if not isinstance(field.default, str) else f'`"{field.default}"`'


def section(model: type[BaseModel], path: list[str], out: list[str]) -> None:
    rows = []
    subs = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            subs.append((name, ann))
            continue
        if get_origin(ann) is dict and len(get_args(ann)) == 2 and isinstance(get_args(ann)[1], type) \
                and issubclass(get_args(ann)[1], BaseModel):
            subs.append((name + ".<name>", get_args(ann)[1]))
            continue
        env = ENV_PREFIX + "__".join(p.upper() for p in [*path, name])
        doc = (field.description or "").replace("\n", " ")
        attr_doc = _attribute_docs(model).get(name, "")
        text = " ".join(x for x in (attr_doc, f"({doc})" if doc and doc not in attr_doc else "") if x)
        shown_type = type_name(ann).replace("|", "\\|")
        rows.append(f"| `{name}` | {shown_type} | {default_of(field)} | `{env}` | {text} |")
    title = "[" + ".".join(path) + "]" if path else "top level"
    out.append(f"\n## {title}\n")
    if model.__doc__:
        out.append(model.__doc__.strip().splitlines()[0] + "\n")
    if rows:
        out.append("| key | type | default | environment | meaning |\n|---|---|---|---|---|")
        out.extend(rows)
    for name, sub in subs:
        section(sub, [*path, name], out)


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """``#:`` comments above fields in the source, as docs."""
    import inspect

    docs: dict[str, str] = {}
    try:
        lines = inspect.getsource(model).splitlines()
    except OSError:
        return docs
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif ":" in stripped and not stripped.startswith(("#", '"', "class", "def")) and pending:
            docs[stripped.split(":", 1)[0].strip()] = " ".join(pending)
            pending = []
        elif not stripped.startswith("#"):
            pending = []
    return docs


def render() -> str:
    out = [HEAD]
    section(Settings, [], out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")
