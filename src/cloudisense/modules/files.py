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
import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudisense.config import ConfigPath
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: Text a browser or editor commonly shows; no key files, no ``.env``.
DEFAULT_READ = [".txt", ".log", ".json", ".yml", ".yaml", ".toml", ".ini", ".conf", ".cfg", ".md", ".csv",
                ".sh", ".py", ".xml", ".html", ".properties"]
#: Download links open at once (each is small, but clients must not make the node hold unbounded many).
MAX_GRANTS = 1000
DEFAULT_WRITE = [".txt", ".json", ".yml", ".yaml", ".toml", ".ini", ".conf", ".cfg", ".md", ".csv"]


class FileRoot(BaseModel):
    """One folder the file manager may reach."""

    model_config = ConfigDict(extra="forbid")

    #: The real folder (relative paths: against the config file's folder); never shown to clients.
    path: ConfigPath
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
    mode: Literal["static", "dynamic"] = Field("static", description="static: reusable until it expires; "
                                                "dynamic: works once")


@dataclass
class Located:
    """A checked file manager path: its root, and the parts below it (not yet opened)."""

    root: FileRoot
    real: Path
    label: str
    parts: list[str]

    @property
    def public(self) -> str:
        """What clients see: the label, then the parts (never the real folder)."""
        return "/".join([self.label, *self.parts])

    @property
    def name(self) -> str:
        """The last part."""
        return self.parts[-1]

    def child(self, name: str) -> str:
        """The public path of an entry of this folder."""
        return f"{self.public}/{name}"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def open_dir(loc: Located, parts: list[str]) -> int:
    """A descriptor of the folder ``parts`` below the root, opened one level at a time without
    following any link, so a link swapped in anywhere on the way is refused, not followed."""
    fd = os.open(loc.real, os.O_RDONLY | os.O_DIRECTORY)
    for i, part in enumerate(parts):
        shown = "/".join([loc.label, *parts[:i + 1]])
        try:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            raise NotFound(f"no folder {shown}") from None
        except OSError as exc:
            try:
                link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
            except OSError:
                link = False
            os.close(fd)
            if link:
                raise Forbidden(f"{shown} is a symbolic link; links are refused") from None
            if exc.errno == errno.ENOTDIR:
                raise BadRequest(f"{shown} is not a folder") from None
            raise Forbidden(f"{shown} can't be opened ({exc.strerror})") from None
        os.close(fd)
        fd = nfd
    return fd


def lstat_in(parent: int, loc: Located) -> os.stat_result:
    """The last part's own status (a link is not followed), or :class:`NotFound`."""
    try:
        return os.stat(loc.name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound(f"no file or folder {loc.public}") from None


def require_kind(st: os.stat_result, loc: Located, is_kind: Callable[[int], bool], not_it: str) -> None:
    """Refuse a link, then an entry that is not of the wanted kind (``not_it`` ends the message)."""
    if stat.S_ISLNK(st.st_mode):
        raise Forbidden(f"{loc.public} is a symbolic link; links are refused")
    if not is_kind(st.st_mode):
        raise BadRequest(f"{loc.public} {not_it}")


def open_file(loc: Located) -> int:
    """A read descriptor of a regular file (no link anywhere on its path)."""
    parent = open_dir(loc, loc.parts[:-1])
    try:
        require_kind(lstat_in(parent, loc), loc, stat.S_ISREG, "is not a regular file")
        try:
            fd = os.open(loc.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            raise Forbidden(f"{loc.public} can't be opened ({exc.strerror})") from None
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the check and the open
        os.close(fd)
        raise BadRequest(f"{loc.public} is not a regular file")
    return fd


def file_size(loc: Located) -> int:
    """The size of a regular file."""
    fd = open_file(loc)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_bytes(loc: Located, limit: int) -> bytes:
    """A whole file of at most ``limit`` bytes."""
    with os.fdopen(open_file(loc), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise BadRequest(f"{loc.public} has {size} bytes; at most {limit} may be read at once "
                             "(download it instead)")
        return fh.read(limit + 1)[:limit]


def write_bytes(loc: Located, data: bytes, update: bool) -> bool:
    """Write through a temporary file in the same folder and rename it over; ``True`` when created."""
    parent = open_dir(loc, loc.parts[:-1])
    try:
        try:
            st = os.stat(loc.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            require_kind(st, loc, stat.S_ISREG, "is not a regular file")
            if not update:
                raise Conflict(f"{loc.public} exists; pass update=true to replace it")
        tmp = f".cs-{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, loc.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except FileNotFoundError:
                pass
            raise
        return st is None
    finally:
        os.close(parent)


@dataclass
class Grant:
    """A download link: which file (a checked path, or a configured log), until when, whether it works once."""

    loc: Located | None
    path: Path | None
    name: str
    expires: float
    once: bool
    user: str
    role: str

    def open(self) -> int:
        """A read descriptor of the file, checked again now (a link swapped in since is refused)."""
        if self.loc is not None:
            return open_file(self.loc)
        from cloudisense.modules.logs import confined

        assert self.path is not None
        if not confined(self.path):  # the logs module's rule: a log may be a link, but only inside its folder
            raise Forbidden(f"{self.name} now resolves outside its folder; the download is refused")
        return os.open(self.path, os.O_RDONLY)


class FilesModule(Module):
    """CloudiSENSE's file manager intents, and the download links behind ``/download/<token>``."""

    name = "files"
    settings_model = FilesSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
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

    def _root(self, label: str) -> tuple[FileRoot, Path]:
        root = self.settings.roots.get(label)
        if root is None:
            known = ", ".join(sorted(self.settings.roots)) or "none are configured ([files.roots.<label>])"
            raise NotFound(f"no folder {label!r} in the file manager; folders: {known}")
        real = root.path.expanduser().resolve()
        if not real.is_dir():
            raise Unavailable(f"folder {label!r} is configured but missing on this node")
        return root, real

    @staticmethod
    def _parts(rel: str) -> list[str]:
        if "\x00" in rel or "\\" in rel or rel.startswith("/") or "//" in rel:
            raise BadRequest(f"path {rel[:200]!r} is refused: give a path inside the folder, with one / between parts")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise Forbidden(f"path {rel[:200]!r} is refused: '..' may not be used to leave a folder")
        return parts

    def _locate(self, label: str, rel: str) -> Located:
        """Check a path's words (no file system access yet): a known root, no ``..``, no absolute path."""
        root, real = self._root(label)
        parts = self._parts(rel)
        return Located(root, real, label, parts)

    def _split(self, virtual: str) -> Located:
        label, _, rel = virtual.partition("/")
        if not label or not rel:
            raise BadRequest(f"path {virtual[:200]!r} names no file: give <folder label>/<file>, e.g. "
                             f"{next(iter(self.settings.roots), 'demo')}/notes.txt")
        loc = self._locate(label, rel)
        if not loc.parts:
            raise BadRequest(f"path {virtual[:200]!r} names a folder, not a file")
        return loc

    @staticmethod
    def _check_ext(name: str, allowed: list[str], what: str) -> None:
        ext = os.path.splitext(name)[1].lower()
        if ext not in allowed:
            raise Forbidden(f"{name} can't be {what}: only {', '.join(allowed)} files may be")

    # -- intents ---------------------------------------------------------

    async def get_accessible_paths(self, p: NoParams, ctx: ActionContext) -> list[str]:
        return sorted(self.settings.roots)

    async def list_content(self, p: ListContentParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._locate(p.root, p.path)
        limit = self.settings.max_list_entries

        def scan() -> tuple[list[dict[str, Any]], bool]:
            fd = open_dir(loc, loc.parts)
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                items: list[dict[str, Any]] = []
                for entry in entries[:limit]:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    items.append({"name": entry.name, "path": loc.child(entry.name), "type": _kind(st.st_mode),
                                  "size": st.st_size if stat.S_ISREG(st.st_mode) else None,
                                  "modified": int(st.st_mtime * 1000)})
                return items, len(entries) > limit
            finally:
                os.close(fd)

        items, truncated = await asyncio.to_thread(scan)
        return {"root": p.root, "path": loc.public, "items": items, "count": len(items), "truncated": truncated,
                "writable": loc.root.writable, "downloadable": loc.root.downloadable}

    async def read_file(self, p: ReadFileParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._split(p.path)
        self._check_ext(loc.public, self.settings.read_extensions, "read")
        raw = await asyncio.to_thread(read_bytes, loc, self.settings.max_read_bytes)
        if p.encoded:
            content = base64.b64encode(raw).decode("ascii")
        else:
            try:
                content = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{loc.public} is not UTF-8 text; read it with encoded=true") from None
        return {"path": loc.public, "content": content, "encoded": p.encoded, "size": len(raw)}

    async def write_file(self, p: WriteFileParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._split(p.path)
        if not loc.root.writable:
            raise Forbidden(f"{loc.label} is read-only in the file manager")
        self._check_ext(loc.public, self.settings.write_extensions, "written")
        if p.encoded:
            try:
                data = base64.b64decode(p.content, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("params.content: not valid base64 (or send it as text with encoded=false)") from None
        else:
            data = p.content.encode("utf-8", errors="surrogateescape")
        if len(data) > self.settings.max_write_bytes:
            raise BadRequest(f"the content has {len(data)} bytes; "
                             f"at most {self.settings.max_write_bytes} may be written")
        created = await asyncio.to_thread(write_bytes, loc, data, p.update)
        return {"path": loc.public, "size": len(data), "created": created, "updated": not created}

    async def delete_file(self, p: PathParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._split(p.path)
        if not loc.root.writable:
            raise Forbidden(f"{loc.label} is read-only in the file manager")

        def delete() -> None:
            parent = open_dir(loc, loc.parts[:-1])
            try:
                require_kind(lstat_in(parent, loc), loc, stat.S_ISREG, "is not a file; use delete_folder for folders")
                os.unlink(loc.name, dir_fd=parent)
            finally:
                os.close(parent)

        await asyncio.to_thread(delete)
        return {"path": loc.public, "deleted": True}

    async def delete_folder(self, p: DeleteFolderParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._locate(p.root, p.dirname)
        if not loc.root.writable:
            raise Forbidden(f"{p.root} is read-only in the file manager")
        if not loc.parts:
            raise Forbidden(f"{p.root} is a configured folder itself; only folders inside it can be deleted")

        def delete() -> None:
            parent = open_dir(loc, loc.parts[:-1])
            try:
                require_kind(lstat_in(parent, loc), loc, stat.S_ISDIR, "is not a folder; use delete_file for files")
                try:
                    os.rmdir(loc.name, dir_fd=parent)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    if not p.delete_non_empty:
                        raise Conflict(f"{loc.public} is not empty; pass delete_non_empty=true to delete it "
                                       "with its content") from None
                    # rmtree with dir_fd works on descriptors and removes links, never what they point to.
                    shutil.rmtree(loc.name, dir_fd=parent)
            finally:
                os.close(parent)

        await asyncio.to_thread(delete)
        return {"root": p.root, "dirname": loc.public, "deleted": True}

    async def download_file(self, p: DownloadParams, ctx: ActionContext) -> dict[str, Any]:
        loc = self._split(p.path)
        if not loc.root.downloadable:
            raise Forbidden(f"files in {loc.label} can't be downloaded")
        size = await asyncio.to_thread(file_size, loc)
        return self._grant(loc, None, size, p.mode, ctx)

    async def download_log(self, p: DownloadLogParams, ctx: ActionContext) -> dict[str, Any]:
        logs = self.node.module("logs")
        if logs is None:
            raise Unavailable("the logs module is not loaded on this node")
        path = logs.resolve(p.logname)  # the logs module's name and confinement checks
        size = (await asyncio.to_thread(path.stat)).st_size
        return self._grant(None, path, size, p.mode, ctx, name=f"{p.logname}.log")

    def _grant(self, loc: Located | None, path: Path | None, size: int, mode: str, ctx: ActionContext,
               name: str | None = None) -> dict[str, Any]:
        public = loc.public if loc is not None else name or "download"
        if size > self.settings.max_download_bytes:
            raise BadRequest(f"{public} has {size} bytes; downloads are limited to {self.settings.max_download_bytes}")
        now = time.time()
        self.grants = {t: g for t, g in self.grants.items() if g.expires > now}
        if len(self.grants) >= MAX_GRANTS:
            raise TooManyRequests(f"{MAX_GRANTS} download links are open; try again when some have expired")
        token = secrets.token_urlsafe(24)
        expires = now + self.settings.download_ttl
        self.grants[token] = Grant(loc, path, public.rsplit("/", 1)[-1], expires, mode == "dynamic", ctx.user,
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
