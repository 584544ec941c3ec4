"""Atomic file writes: write a temporary file in the same folder, fsync, then ``os.replace``.

A reader (a table aggregation running while sweep jobs write) sees either the old complete file or the new
complete file, never a half-written one; a full disk or a kill mid-write leaves the previous file intact and
only a ``.tmp-*`` file behind, which is removed on error.

Written files get the permissions of an ordinary ``open()`` (0666 minus the umask: 0644 by default), not the
0600 of :func:`tempfile.mkstemp`, so results on a shared filesystem stay readable by the group.  A write that
fails for lack of space (disk full, quota, the file-size limit of ``ulimit -f``) raises :class:`DiskFullError`,
whose one-line message names the file and says that the previous version is kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_UMASK_LOCK = threading.Lock()


class DiskFullError(OSError):
    """A write failed for lack of space or the file-size limit; the previous file is unchanged."""

    def __init__(self, path: str | os.PathLike, message: str):
        super().__init__(errno.ENOSPC, message, str(path))

    def __str__(self) -> str:
        return self.strerror


def current_umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _space_error(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in _SPACE_ERRNOS
    # torch.save's zip writer turns a short write into "enforce fail at inline_container.cc ... unexpected pos"
    return isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "inline_container" in str(e))


def _why_no_space(folder: Path, e: BaseException) -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if (isinstance(e, OSError) and e.errno == errno.EFBIG) or soft != resource.RLIM_INFINITY:
        limit = f" of {soft} bytes" if soft != resource.RLIM_INFINITY else ""
        return f"file-size limit{limit} reached (ulimit -f) or disk full"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "disk full or quota exceeded"
    return f"disk full or quota exceeded ({free / 2**20:.1f} MiB free on that filesystem)"


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike, mode: str,
                   before_replace: Callable[[], None] | None = None) -> Iterator[IO[Any]]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 -> what open() would have created
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _space_error(e):
            kept = "the previous version is kept" if path.exists() else "nothing was written"
            os_says = f"{e.strerror}: " if isinstance(e, OSError) and e.strerror else ""
            raise DiskFullError(path, f"cannot write {path}: {os_says}{_why_no_space(path.parent, e)}; {kept}") from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with _atomic_target(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_bytes(path: str | os.PathLike, writer: Callable[[IO[bytes]], None],
                       before_replace: Callable[[], None] | None = None) -> None:
    """Write ``path`` through ``writer(f)``; ``before_replace()`` runs once the new file is complete and synced,
    right before it takes ``path``'s place (e.g. to move the current file aside)."""
    with _atomic_target(path, "wb", before_replace) as f:
        writer(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike, before_replace: Callable[[], None] | None = None) -> None:
    import torch

    atomic_write_bytes(path, lambda f: torch.save(obj, f), before_replace)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
