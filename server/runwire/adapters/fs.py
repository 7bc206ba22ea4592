"""The fs adapter: read, write, list and delete files inside the run workspace or a configured root."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from runwire.adapters._base import ActionFailed, ActionSpec, NodeContext, SandboxRefused
from runwire.adapters._base import is_templated as _templated
from runwire.v1 import events_pb2

__all__ = ["DEFAULT_MAX_BYTES", "MAX_LIST_ENTRIES", "FsAdapter", "parse_root", "path_problem"]

DEFAULT_MAX_BYTES = 1 << 20
"""Default cap on one read or write: file contents travel inside events."""
MAX_LIST_ENTRIES = 1000
"""`list-dir` returns at most this many entries and says when it stopped early."""

WORKSPACE = "workspace"
_ROOT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Overrides and isolates make a path read differently than it is, which matters
# most in the "Delete file: ..." line a person approves.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_PROC_FD = Path("/proc/self/fd")

_PATH = {
    "description": "Relative path inside the root; no `..`, no absolute path, no control"
    " characters.",
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
}
_ROOT = {
    "description": "A root the server names with --fs-root; the run's workspace when unset.",
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
}
_ENCODING = {
    "description": "How `content` is encoded: utf-8 text or base64 bytes.",
    "enum": ["utf-8", "base64"],
    "default": "utf-8",
}


def _schema(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"path": _PATH, "root": _ROOT, **properties},
        "required": required,
        "additionalProperties": False,
    }


def path_problem(path: str, *, allow_root: bool = False) -> str | None:
    """Why `path` cannot name something inside a root, or None when it can.

    The path must be relative, without `..` components, NUL, control or
    bidirectional control characters. Only `list-dir` may name the root itself
    (`.`).
    """
    if "\x00" in path:
        return "must not contain NUL characters"
    if any(unicodedata.category(c) == "Cc" for c in path):
        return "must not contain control characters"
    if any(c in _BIDI for c in path):
        return "must not contain bidirectional control characters"
    if path.startswith("/"):
        return f"must be relative to the workspace, got absolute path {path!r}"
    if ".." in path.split("/"):
        return f"must not contain '..' components, got {path!r}"
    if not allow_root and not _parts(path):
        return f"must name a file, not the root, got {path!r}"
    return None


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def parse_root(spec: str) -> tuple[str, Path]:
    """Parse `--fs-root [NAME=]PATH`; NAME defaults to the directory's name.

    Raises:
        ValueError: NAME is not a valid root name or PATH is empty.
    """
    name, sep, path = spec.partition("=")
    if not sep or "/" in name:
        name, path = Path(spec).name, spec
    if not path:
        raise ValueError(f"--fs-root {spec!r} names no directory")
    if not _ROOT_NAME.match(name) or name == WORKSPACE:
        raise ValueError(
            f"--fs-root {spec!r}: root name {name!r} must be 1-64 of [A-Za-z0-9_-] starting "
            f"with a letter, and not {WORKSPACE!r}; write NAME=PATH to choose one"
        )
    return name, Path(path)


@dataclass(frozen=True)
class _Where:
    """A checked request: the real root, the relative path inside it, and how to name it."""

    base: Path
    rel: PurePosixPath
    label: str  # what events and errors call the path, e.g. `build/out.bin` or `data:x.csv`
    place: str  # what errors call the root, e.g. `the run workspace`


class FsAdapter:
    """`read-file`, `write-file`, `list-dir` and `delete-file`, confined to a root.

    Paths are relative to the run's workspace, or to a server-configured root
    named by the `root` param. Validation refuses paths that could not stay
    inside (absolute, `..`, control characters); at run time every path is
    resolved through its symlinks and refused with a `SandboxViolation` if it
    lands outside its root. Each open is then re-checked against the file the
    kernel actually opened, so a symlink swapped in between resolving and
    opening cannot redirect it.
    """

    name = "fs"
    actions: Mapping[str, ActionSpec] = {
        "read-file": ActionSpec(
            "read-file",
            "Read a file; output {path, content, size}",
            _schema(["path"], encoding=_ENCODING),
        ),
        "write-file": ActionSpec(
            "write-file",
            "Write a file, creating its directories; output {path, size}",
            _schema(
                ["path", "content"],
                content={"description": "What to write, in `encoding`.", "type": "string"},
                encoding=_ENCODING,
                overwrite={
                    "description": "Replace an existing file; false fails the node with"
                    " EXISTS when the file is there.",
                    "type": "boolean",
                    "default": True,
                },
            ),
        ),
        "list-dir": ActionSpec(
            "list-dir",
            "List a directory; output {path, entries: [{name, type, size}], truncated}",
            _schema([]),
        ),
        "delete-file": ActionSpec(
            "delete-file",
            "Delete a file; output {path, deleted}",
            _schema(
                ["path"],
                missing_ok={
                    "description": "Succeed with `deleted: false` when the file is absent.",
                    "type": "boolean",
                    "default": False,
                },
            ),
            destructive=True,
        ),
    }

    def __init__(self, roots: tuple[str, ...] = (), *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Configure the adapter.

        Args:
            roots: Extra roots as `[NAME=]PATH`; flows pick one with `root: NAME`.
            max_bytes: Cap on the bytes one read or write may move.

        Raises:
            ValueError: A root is malformed, duplicated, or not a directory.
        """
        self.roots: dict[str, Path] = {}
        for spec in roots:
            name, path = parse_root(spec)
            if name in self.roots:
                raise ValueError(f"--fs-root {spec!r}: root name {name!r} is given twice")
            if not path.is_dir():
                raise ValueError(f"--fs-root {spec!r}: {str(path)!r} is not a directory")
            self.roots[name] = path.resolve()
        self.max_bytes = max_bytes

    def check(self, action: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Paths must stay inside a root; `root` must be configured; literal content fits."""
        problems: list[tuple[str, str]] = []
        path = params.get("path", ".")
        if isinstance(path, str) and (why := path_problem(path, allow_root=action == "list-dir")):
            problems.append(("path", why))
        root = params.get("root")
        if isinstance(root, str) and not _templated(root) and root not in self._root_names():
            problems.append(("root", f"unknown root {root!r}; known: {self._known()}"))
        content = params.get("content")
        if action == "write-file" and isinstance(content, str) and not _templated(content):
            try:
                size = len(_encode(content, str(params.get("encoding", "utf-8"))))
            except ValueError as exc:
                problems.append(("content", str(exc)))
            else:
                if size > self.max_bytes:
                    problems.append(
                        (
                            "content",
                            f"is {size} bytes, over this server's {self.max_bytes}-byte write limit",
                        )
                    )
        return problems

    def describe_destructive(self, action: str, params: Mapping[str, Any]) -> str | None:
        """`delete-file` destroys: `Delete file: <path>`."""
        if action != "delete-file":
            return None
        path = str(params.get("path", ""))
        # The person approving reads this line: show the path as it will be used,
        # and escaped if it holds characters that could disguise it (execution
        # refuses those anyway).
        label = "/".join(_parts(path)) if path_problem(path) is None else repr(path)
        root = params.get("root")
        if root and root != WORKSPACE:
            label = f"{root}:{label}"
        return f"Delete file: {label[:300]}"

    async def execute(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> Any:
        """Run one fs action on rendered params."""
        where = self._where(ctx, action, params)
        try:
            if action == "read-file":
                encoding = str(params.get("encoding", "utf-8"))
                return await asyncio.to_thread(self._read, where, encoding)
            if action == "write-file":
                data = self._content(where, params)
                overwrite = bool(params.get("overwrite", True))
                return await asyncio.to_thread(self._write, where, data, overwrite)
            if action == "list-dir":
                return await asyncio.to_thread(self._list, where)
            missing_ok = bool(params.get("missing_ok", False))
            return await asyncio.to_thread(self._delete, where, missing_ok)
        except PermissionError:
            raise ActionFailed("PERMISSION_DENIED", f"{where.label!r}: permission denied") from None
        except OSError as exc:
            raise ActionFailed("FS_ERROR", f"{where.label!r}: {exc.strerror or exc}") from None

    # -- resolving --------------------------------------------------------------

    def _root_names(self) -> list[str]:
        return [WORKSPACE, *self.roots]

    def _known(self) -> str:
        return ", ".join(self._root_names())

    def _where(self, ctx: NodeContext, action: str, params: Mapping[str, Any]) -> _Where:
        # Rendered params are checked again: a template may have produced any text.
        root = str(params.get("root") or WORKSPACE)
        path = str(params.get("path", "."))
        if root == WORKSPACE:
            ctx.workspace.mkdir(parents=True, exist_ok=True)
            base, place, label = ctx.workspace, "the run workspace", path
        elif root in self.roots:
            base, place, label = self.roots[root], f"root {root!r}", f"{root}:{path}"
        else:
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_PATH,
                root,
                f"unknown fs root {root!r}; known: {self._known()}",
            )
        if why := path_problem(path, allow_root=action == "list-dir"):
            raise SandboxRefused(events_pb2.SANDBOX_VIOLATION_KIND_PATH, label, f"path {why}")
        rel = PurePosixPath(*_parts(path)) if _parts(path) else PurePosixPath(".")
        label = str(rel) if root == WORKSPACE else f"{root}:{rel}"
        return _Where(Path(os.path.realpath(base)), rel, label, place)

    def _contain(self, where: _Where, path: Path) -> Path:
        """`path` with every symlink resolved, refused unless it stays inside the root."""
        real = Path(os.path.realpath(path))
        self._check_inside(where, real)
        return real

    def _check_inside(self, where: _Where, real: Path) -> None:
        if real != where.base and not real.is_relative_to(where.base):
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_PATH,
                where.label,
                f"{where.label!r} resolves outside {where.place} through a symlink",
            )

    def _verify_fd(self, where: _Where, fd: int) -> None:
        # Resolving a path and then opening it races with anything that can
        # rename or symlink in the root (a shell node of the same run). Asking
        # the kernel what the descriptor really is closes that window. Without
        # /proc (not Linux) the resolved-path check is all there is.
        try:
            opened = os.readlink(_PROC_FD / str(fd))
        except OSError:
            return
        self._check_inside(where, Path(opened.removesuffix(" (deleted)")))

    @contextlib.contextmanager
    def _open_dir(self, where: _Where, path: Path) -> Iterator[int]:
        try:
            fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except FileNotFoundError:
            raise ActionFailed(
                "NOT_FOUND", f"{where.label!r}: directory {_rel_name(where, path)!r} does not exist"
            ) from None
        except NotADirectoryError:
            raise ActionFailed(
                "NOT_A_DIRECTORY", f"{where.label!r}: {_rel_name(where, path)!r} is not a directory"
            ) from None
        try:
            self._verify_fd(where, fd)
            yield fd
        finally:
            os.close(fd)

    def _open_file(self, where: _Where, dir_fd: int, name: str, flags: int) -> int:
        try:
            fd = os.open(name, flags | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ActionFailed("NOT_FOUND", f"{where.label!r} does not exist") from None
        except FileExistsError:
            raise ActionFailed("EXISTS", f"{where.label!r} exists and overwrite is false") from None
        except IsADirectoryError:
            raise ActionFailed("NOT_A_FILE", f"{where.label!r} is a directory") from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            # ELOOP: the last component became a symlink after it was resolved.
            # ENXIO: a FIFO without a reader. Neither is a file we may touch.
            raise SandboxRefused(
                events_pb2.SANDBOX_VIOLATION_KIND_PATH,
                where.label,
                f"{where.label!r} is not a regular file inside {where.place} ({exc.strerror})",
            ) from None
        try:
            self._verify_fd(where, fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ActionFailed("NOT_A_FILE", f"{where.label!r} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- actions ----------------------------------------------------------------

    def _read(self, where: _Where, encoding: str) -> dict[str, Any]:
        target = self._contain(where, where.base / where.rel)
        if target == where.base:
            raise ActionFailed("NOT_A_FILE", f"{where.label!r} is a directory")
        with self._open_dir(where, target.parent) as dir_fd:
            fd = self._open_file(where, dir_fd, target.name, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size > self.max_bytes:
                    raise self._too_big(where, size, "read")
                # The file may grow after fstat; never read more than the cap allows.
                data = _read_up_to(fd, self.max_bytes + 1)
            finally:
                os.close(fd)
        if len(data) > self.max_bytes:
            raise self._too_big(where, len(data), "read")
        content = base64.b64encode(data).decode("ascii") if encoding == "base64" else _text(data)
        if content is None:
            raise ActionFailed(
                "NOT_TEXT",
                f"{where.label!r} is not UTF-8 text without NUL; read it with encoding base64",
            )
        return {"path": where.label, "content": content, "size": len(data)}

    def _content(self, where: _Where, params: Mapping[str, Any]) -> bytes:
        try:
            data = _encode(str(params["content"]), str(params.get("encoding", "utf-8")))
        except ValueError as exc:
            raise ActionFailed("PARAMS_INVALID", f"content: {exc}") from None
        if len(data) > self.max_bytes:
            raise self._too_big(where, len(data), "write")
        return data

    def _write(self, where: _Where, data: bytes, overwrite: bool) -> dict[str, Any]:
        target = self._contain(where, where.base / where.rel)
        if target == where.base:
            raise ActionFailed("NOT_A_FILE", f"{where.label!r} is a directory")
        # The parent is fully resolved and inside the root, so makedirs creates
        # plain directories there and follows no symlink out.
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ActionFailed(
                "NOT_A_DIRECTORY", f"{where.label!r}: a parent is not a directory"
            ) from None
        flags = os.O_WRONLY | os.O_CREAT | (0 if overwrite else os.O_EXCL)
        with self._open_dir(where, target.parent) as dir_fd:
            fd = self._open_file(where, dir_fd, target.name, flags)
            try:
                # Truncate only once the descriptor is known to be a regular file inside.
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        return {"path": where.label, "size": len(data)}

    def _list(self, where: _Where) -> dict[str, Any]:
        target = self._contain(where, where.base / where.rel)
        entries: list[dict[str, Any]] = []
        truncated = False
        with self._open_dir(where, target) as dir_fd, os.scandir(dir_fd) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if len(entries) == MAX_LIST_ENTRIES:
                    truncated = True
                    break
                info = entry.stat(follow_symlinks=False)
                kind = (
                    "symlink"
                    if stat.S_ISLNK(info.st_mode)
                    else "dir"
                    if stat.S_ISDIR(info.st_mode)
                    else "file"
                    if stat.S_ISREG(info.st_mode)
                    else "other"
                )
                entries.append(
                    {
                        # Names are bytes to the kernel; undecodable ones must still be JSON.
                        "name": os.fsencode(entry.name).decode("utf-8", errors="replace"),
                        "type": kind,
                        "size": info.st_size if kind == "file" else None,
                    }
                )
        return {"path": where.label, "entries": entries, "truncated": truncated}

    def _delete(self, where: _Where, missing_ok: bool) -> dict[str, Any]:
        # The last component is not resolved: deleting a symlink removes the link.
        parent = self._contain(where, where.base / where.rel.parent)
        name = where.rel.name
        with self._open_dir(where, parent) as dir_fd:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                if missing_ok:
                    return {"path": where.label, "deleted": False}
                raise ActionFailed("NOT_FOUND", f"{where.label!r} does not exist") from None
            if stat.S_ISDIR(info.st_mode):
                raise ActionFailed(
                    "NOT_A_FILE", f"{where.label!r} is a directory; delete-file removes files only"
                )
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                if not missing_ok:
                    raise ActionFailed("NOT_FOUND", f"{where.label!r} does not exist") from None
                return {"path": where.label, "deleted": False}
        return {"path": where.label, "deleted": True}

    def _too_big(self, where: _Where, size: int, verb: str) -> SandboxRefused:
        return SandboxRefused(
            events_pb2.SANDBOX_VIOLATION_KIND_LIMIT,
            where.label,
            f"{where.label!r} is {size} bytes, over this server's {self.max_bytes}-byte {verb} limit",
        )


def _rel_name(where: _Where, path: Path) -> str:
    try:
        return str(path.relative_to(where.base))
    except ValueError:
        return path.name


def _text(data: bytes) -> str | None:
    # NUL is valid UTF-8 but not text anyone means, and Postgres JSON cannot hold it.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _encode(content: str, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"is not valid base64: {exc}") from None
    return content.encode("utf-8")


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
