"""An exclusive lock on a run directory, so two identical jobs never train the same run at once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from crelu.results.record import now_iso

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock and ``output.lock_wait_s`` ran out."""


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, which names its owner (``host:pid``).

    The kernel drops the lock when its owner dies (SIGKILL included), so a lock left by a dead job never blocks
    a relaunch: there is nothing stale to break.  On filesystems without ``flock`` support the run goes on
    unlocked, with a warning.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def owner(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(self.path.read_text())
            return f"{info['host']}:{info['pid']}"
        return "another process"

    def acquire(self, wait_s: float | None) -> bool:
        """Take the lock, waiting up to ``wait_s`` seconds (None: forever).  True if it had to wait."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        waited, t0, told = False, time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = True
                if not told:
                    log.warning("run directory %s is locked by %s: waiting for it", self.path.parent, self.owner())
                    told = True
                if wait_s is not None and time.monotonic() - t0 >= wait_s:
                    owner = self.owner()
                    os.close(fd)
                    raise RunLockedError(f"run directory {self.path.parent} is locked by {owner} (another job is "
                                         f"training this run); gave up after output.lock_wait_s={wait_s}") from None
                time.sleep(0.5)
            except OSError as e:  # no flock on this filesystem
                log.warning("cannot lock %s (%s): running without a lock", self.path, e)
                os.close(fd)
                return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": now_iso()}).encode())
        self._fd = fd
        return waited

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
