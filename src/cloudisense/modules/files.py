"""The file manager of CloudiSENSE: browse, read, write, delete and download files in configured roots.

Confinement, by construction:

* Only folders configured as ``[files.roots.<label>]`` are reachable, and only by their label:
  a client names ``<label>/<path inside it>`` and never sees the real folder (the label is the
  concealment map; error texts name files by label too).
* A path with a ``..`` part, a NUL, a backslash or a leading ``/`` is refused; so is any
  symbolic link on the way (each part is checked with ``lstat``, and files are opened with
  ``O_NOFOLLOW``), so a link swapped in later can't lead out either.
* Reading and writing need the file's extension in ``read_extensions`` / ``write_extensions``;
  writing, deleting and downloading need the root to be ``writable`` / ``downloadable``; sizes
  are bounded by ``max_read_bytes``, ``max_write_bytes`` and ``max_download_bytes``.
* Downloads are links (``/download/<token>``) that expire after ``download_ttl`` seconds; a
  ``dynamic`` link works once, a ``static`` one until it expires.

Every call goes through the router (the REST routes ``/file/read``, ``/file/write`` and
``/log/download/<mode>`` too), so roles, the assistant's policy and the audit log apply;
deleting is ``destructive``, writing is ``write``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: Text a browser or editor commonly shows; no key files, no ``.env``.
DEFAULT_READ = [".txt", ".log", ".json", ".yml", ".yaml", ".toml", ".ini", ".conf", ".cfg", ".md", ".csv",
                ".sh", ".py", ".xml", ".html", ".properties"]
DEFAULT_WRITE = [".txt", ".json", ".yml", ".yaml", ".toml", ".ini", ".conf", ".cfg", ".md", ".csv"]


class FileRoot(BaseModel):
    """One folder the file manager may reach."""

    model_config = ConfigDict(extra="forbid")

    #: The real folder (relative paths: against the config file's folder); never shown to clients.
    path: Path
    #: Files may be written and deleted here.
    writable: bool = False
    #: Files may be downloaded from here (``download_file``).
    downloadable: bool = False


class FilesSettings(BaseModel):
    """The file manager: its roots (by label), extension allow-lists, size limits and links."""

    model_config = ConfigDict(extra="forbid")

    #: Folders by label; clients see only the label (``demo/notes.txt``), never the real path.
    roots: dict[str, FileRoot] = Field(default_factory=dict)
    #: Extensions that may be read (lower case, with the dot).
    read_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_READ))
    #: Extensions that may be written.
    write_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_WRITE))
    #: Larger files are refused by ``read_file`` (download them instead).
    max_read_bytes: int = Field(1_048_576, ge=1)
    #: The WebSocket frame limit bounds this too (base64 adds a third).
    max_write_bytes: int = Field(512 * 1024, ge=1)
    #: Larger files get no download link.
    max_download_bytes: int = Field(200 * 1024 * 1024, ge=1)
    #: Seconds a download link works.
    download_ttl: int = Field(300, ge=5, le=86_400)
    #: Entries ``list_content`` returns at most.
    max_list_entries: int = Field(1000, ge=1, le=100_000)

    @field_validator("roots")
    @classmethod
    def _labels(cls, roots: dict[str, FileRoot]) -> dict[str, FileRoot]:
        for label in roots:
            if not _LABEL_RE.match(label) or ".." in label:
                raise ValueError(f"root label {label!r}: use 1-64 letters, digits, '_', '.', '-'")
        return roots

    @field_validator("read_extensions", "write_extensions")
    @classmethod
    def _extensions(cls, exts: list[str]) -> list[str]:
        out = []
        for ext in exts:
            if not re.fullmatch(r"\.[A-Za-z0-9_\-]{1,16}", ext):
                raise ValueError(f"extension {ext!r}: write it as .txt (a dot, then letters or digits)")
            out.append(ext.lower())
        return out


class ListContentParams(Params):
    """A folder inside a root."""

    root: str = Field(min_length=1, max_length=64, description="a root label from get_accessible_paths")
    path: str = Field("", max_length=4096, description="folder inside the root; empty for the root itself")


class PathParams(Params):
    """A file named ``<root>/<path inside it>``."""

    path: str = Field(min_length=1, max_length=4096, description="root label, then the path, e.g. demo/notes.txt")


class ReadFileParams(PathParams):
    """A file to read."""

    encoded: bool = Field(False, description="return the content base64-encoded (binary-safe)")


class WriteFileParams(PathParams):
    """A file to write."""

    content: str = Field(max_length=2_000_000, description="the new content (base64 when encoded is true)")
    update: bool = Field(True, description="replace the file when it exists (false: only create)")
    encoded: bool = Field(False, description="content is base64-encoded")


class DeleteFolderParams(Params):
    """A folder inside a root."""

    root: str = Field(min_length=1, max_length=64, description="a root label")
    dirname: str = Field(min_length=1, max_length=4096, description="folder inside the root")
    delete_non_empty: bool = Field(False, description="also delete what the folder holds")


class DownloadParams(PathParams):
    """A file to download."""

    mode: Literal["static", "dynamic"] = Field("static", description="static: reusable until it expires; "
                                                "dynamic: works once")


class DownloadLogParams(Params):
    """A configured log to download."""

    logname: str = Field(min_length=1, max_length=256, description="configured log name, e.g. app")
    mode: Literal["static", "dynamic"] = "static"


@dataclass
class Grant:
    """A download link: which file, until when, whether it works once."""

    path: Path
    name: str
    expires: float
    once: bool
    user: str
    role: str


class FilesModule(Module):
    """CloudiSENSE's file manager intents, and the download links behind ``/download/<token>``."""

    name = "files"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.settings: FilesSettings = node.settings.files
        self.grants: dict[str, Grant] = {}

    def intents(self) -> list[Intent]:
        return [
            Intent("get_accessible_paths", "The folders the file manager can reach, by label",
                   self.get_accessible_paths, NoParams, Risk.READ,
                   ("which folders can I browse", "list the file manager roots")),
            Intent("list_content", "Files and folders inside a file manager folder", self.list_content,
                   ListContentParams, Risk.READ, ("list the files in demo", "what is in the demo folder")),
            Intent("read_file", "The content of a file in a file manager folder", self.read_file,
                   ReadFileParams, Risk.READ, ("show demo/notes.txt", "read the file demo/config.json")),
            Intent("write_file", "Write a file in a writable file manager folder", self.write_file,
                   WriteFileParams, Risk.WRITE, ("write hello into demo/notes.txt",)),
            Intent("delete_file", "Delete a file in a writable file manager folder", self.delete_file,
                   PathParams, Risk.DESTRUCTIVE, ("delete demo/old.txt",)),
            Intent("delete_folder", "Delete a folder in a writable file manager folder", self.delete_folder,
                   DeleteFolderParams, Risk.DESTRUCTIVE, ("delete the folder tmp in demo",)),
            Intent("download_file", "A download link (that expires) for a file in a downloadable folder",
                   self.download_file, DownloadParams, Risk.READ, ("give me a download link for demo/report.csv",)),
            Intent("download_log", "A download link (that expires) for a configured log", self.download_log,
                   DownloadLogParams, Risk.READ, ("download the app log",), entities={"logname": "log"}),
        ]

    # -- confinement -----------------------------------------------------

    def _root(self, label: str) -> tuple[str, FileRoot, Path]:
        root = self.settings.roots.get(label)
        if root is None:
            known = ", ".join(sorted(self.settings.roots)) or "none are configured ([files.roots.<label>])"
            raise NotFound(f"no folder {label!r} in the file manager; folders: {known}")
        real = root.path.expanduser().resolve()
        if not real.is_dir():
            raise Unavailable(f"folder {label!r} is configured but missing on this node")
        return label, root, real

    @staticmethod
    def _parts(rel: str) -> list[str]:
        if "\x00" in rel or "\\" in rel or rel.startswith("/"):
            raise BadRequest(f"path {rel[:200]!r} is refused: give a path inside the folder, with / between parts")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise Forbidden(f"path {rel[:200]!r} is refused: '..' may not be used to leave a folder")
        return parts

    def _locate(self, label: str, rel: str) -> tuple[FileRoot, Path, str]:
        """The real path of ``rel`` in root ``label``, refusing links on the way; and its public name."""
        label, root, real = self._root(label)
        parts = self._parts(rel)
        path = real
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = path.lstat()
            except FileNotFoundError:
                if i < len(parts) - 1:
                    raise NotFound(f"no folder {'/'.join([label, *parts[:i + 1]])}") from None
                break
            except OSError as exc:
                raise BadRequest(f"{'/'.join([label, *parts[:i + 1]])} can't be read ({exc.strerror})") from None
            if stat.S_ISLNK(st.st_mode):
                raise Forbidden(f"{'/'.join([label, *parts[:i + 1]])} is a symbolic link; links are refused")
        return root, path, "/".join([label, *parts])

    def _split(self, virtual: str) -> tuple[FileRoot, Path, str]:
        label, _, rel = virtual.lstrip("/").partition("/")
        if not rel:
            raise BadRequest(f"path {virtual[:200]!r} names no file: give <folder label>/<file>, e.g. "
                             f"{next(iter(self.settings.roots), 'demo')}/notes.txt")
        return self._locate(label, rel)

    def _check_ext(self, name: str, allowed: list[str], what: str) -> None:
        ext = os.path.splitext(name)[1].lower()
        if ext not in allowed:
            raise Forbidden(f"{name} can't be {what}: only {', '.join(allowed)} files may be")

    # -- intents ---------------------------------------------------------

    async def get_accessible_paths(self, p: NoParams, ctx: ActionContext) -> list[str]:
        return sorted(self.settings.roots)

    async def list_content(self, p: ListContentParams, ctx: ActionContext) -> dict[str, Any]:
        root, folder, public = self._locate(p.root, p.path)
        limit = self.settings.max_list_entries

        def scan() -> tuple[list[dict[str, Any]], bool]:
            if not folder.is_dir():
                raise NotFound(f"{public} is not a folder")
            items: list[dict[str, Any]] = []
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries[:limit]:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else \
                    "file" if stat.S_ISREG(st.st_mode) else "other"
                items.append({"name": entry.name, "path": f"{public}/{entry.name}", "type": kind,
                              "size": st.st_size if kind == "file" else None, "modified": int(st.st_mtime * 1000)})
            return items, len(entries) > limit

        items, truncated = await asyncio.to_thread(scan)
        return {"root": p.root, "path": public, "items": items, "count": len(items), "truncated": truncated,
                "writable": root.writable, "downloadable": root.downloadable}

    async def read_file(self, p: ReadFileParams, ctx: ActionContext) -> dict[str, Any]:
        root, path, public = self._split(p.path)
        self._check_ext(public, self.settings.read_extensions, "read")
        raw = await asyncio.to_thread(self._read_bytes, path, public, self.settings.max_read_bytes)
        if p.encoded:
            content = base64.b64encode(raw).decode("ascii")
        else:
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{public} is not UTF-8 text; read it with encoded=true") from None
        return {"path": public, "content": content, "encoded": p.encoded, "size": len(raw)}

    @staticmethod
    def _read_bytes(path: Path, public: str, limit: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound(f"no file {public}") from None
        except OSError as exc:
            raise Forbidden(f"{public} can't be opened ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BadRequest(f"{public} is not a regular file")
            if st.st_size > limit:
                raise BadRequest(f"{public} has {st.st_size} bytes; at most {limit} may be read at once "
                                 "(download it instead)")
            return fh.read(limit + 1)[:limit]

    async def write_file(self, p: WriteFileParams, ctx: ActionContext) -> dict[str, Any]:
        root, path, public = self._split(p.path)
        if not root.writable:
            raise Forbidden(f"{public.split('/')[0]} is read-only in the file manager")
        self._check_ext(public, self.settings.write_extensions, "written")
        if p.encoded:
            try:
                data = base64.b64decode(p.content, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("params.content: not valid base64 (or send it as text with encoded=false)") from None
        else:
            data = p.content.encode("utf-8", errors="surrogateescape")
        if len(data) > self.settings.max_write_bytes:
            raise BadRequest(f"the content has {len(data)} bytes; at most {self.settings.max_write_bytes} may be written")

        def write() -> bool:
            exists = os.path.lexists(path)
            if exists:
                if not p.update:
                    raise Conflict(f"{public} exists; pass update=true to replace it")
                if not path.is_file() or path.is_symlink():
                    raise BadRequest(f"{public} is not a regular file")
            if not path.parent.is_dir():
                raise NotFound(f"no folder {public.rsplit('/', 1)[0]}")
            fd, tmp = tempfile.mkstemp(prefix=".cs-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return not exists

        created = await asyncio.to_thread(write)
        return {"path": public, "size": len(data), "created": created, "updated": not created}

    async def delete_file(self, p: PathParams, ctx: ActionContext) -> dict[str, Any]:
        root, path, public = self._split(p.path)
        if not root.writable:
            raise Forbidden(f"{public.split('/')[0]} is read-only in the file manager")

        def delete() -> None:
            try:
                st = path.lstat()
            except FileNotFoundError:
                raise NotFound(f"no file {public}") from None
            if not stat.S_ISREG(st.st_mode):
                raise BadRequest(f"{public} is not a file; use delete_folder for folders")
            path.unlink()

        await asyncio.to_thread(delete)
        return {"path": public, "deleted": True}

    async def delete_folder(self, p: DeleteFolderParams, ctx: ActionContext) -> dict[str, Any]:
        root, path, public = self._locate(p.root, p.dirname)
        if not root.writable:
            raise Forbidden(f"{p.root} is read-only in the file manager")
        if public == p.root:
            raise Forbidden(f"{p.root} is a configured folder itself; only folders inside it can be deleted")

        def delete() -> None:
            try:
                st = path.lstat()
            except FileNotFoundError:
                raise NotFound(f"no folder {public}") from None
            if not stat.S_ISDIR(st.st_mode):
                raise BadRequest(f"{public} is not a folder; use delete_file for files")
            if any(path.iterdir()):
                if not p.delete_non_empty:
                    raise Conflict(f"{public} is not empty; pass delete_non_empty=true to delete it with its content")
                shutil.rmtree(path)  # never follows links inside: it removes the links themselves
            else:
                path.rmdir()

        await asyncio.to_thread(delete)
        return {"root": p.root, "dirname": public, "deleted": True}

    async def download_file(self, p: DownloadParams, ctx: ActionContext) -> dict[str, Any]:
        root, path, public = self._split(p.path)
        if not root.downloadable:
            raise Forbidden(f"files in {public.split('/')[0]} can't be downloaded")
        return await self._grant(path, public, p.mode, ctx)

    async def download_log(self, p: DownloadLogParams, ctx: ActionContext) -> dict[str, Any]:
        logs = self.node.module("logs")
        if logs is None:
            raise Unavailable("the logs module is not loaded on this node")
        path = logs.resolve(p.logname)  # its name and confinement checks
        return await self._grant(path, f"{p.logname}.log", p.mode, ctx)

    async def _grant(self, path: Path, public: str, mode: str, ctx: ActionContext) -> dict[str, Any]:
        def check() -> int:
            try:
                st = path.lstat()
            except FileNotFoundError:
                raise NotFound(f"no file {public}") from None
            if not stat.S_ISREG(st.st_mode):
                raise BadRequest(f"{public} is not a regular file")
            return st.st_size

        size = await asyncio.to_thread(check)
        if size > self.settings.max_download_bytes:
            raise BadRequest(f"{public} has {size} bytes; downloads are limited to {self.settings.max_download_bytes}")
        now = time.time()
        self.grants = {t: g for t, g in self.grants.items() if g.expires > now}
        token = secrets.token_urlsafe(24)
        expires = now + self.settings.download_ttl
        self.grants[token] = Grant(path, public.rsplit("/", 1)[-1], expires, mode == "dynamic", ctx.user,
                                    ctx.client.role.value)
        return {"path": public, "url": f"/download/{token}", "mode": mode, "size": size,
                "expires": int(expires * 1000)}

    def redeem(self, token: str) -> Grant:
        """The grant behind a download link (a ``dynamic`` one is used up), or :class:`NotFound`."""
        grant = self.grants.get(token)
        if grant is None or grant.expires <= time.time():
            self.grants.pop(token, None)
            raise NotFound("this download link is unknown or has expired; ask for a new one")
        if grant.once:
            del self.grants[token]
        return grant
