"""Progress output that suits both a terminal and a log file, and an ETA for a whole run.

:func:`progress_bar` is tqdm on a terminal.  When stderr is not a terminal (SLURM logs, ``nohup``, CI, a pipe),
tqdm's ``\\r`` redraws would fill the log with thousands of partial lines, so the bar instead prints one plain
ASCII line every :data:`LOG_INTERVAL_S` seconds (and the last one at the end).

:func:`run_eta` estimates the time left for a run from the epochs done so far, so a run can print
``epoch 3/350, ETA 2h41m`` rather than only the current epoch's remaining time.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TypeVar

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # seconds between two progress lines when the output is a file

T = TypeVar("T")


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class _Lines:
    """File wrapper that drops the bare newlines tqdm writes when it closes or moves a bar."""

    def __init__(self, file: IO) -> None:
        self.file = file

    def write(self, s: str) -> int:
        return 0 if s in ("\n", "\r", "") else self.file.write(s)

    def flush(self) -> None:
        getattr(self.file, "flush", lambda: None)()


class _LineTqdm(tqdm):
    """tqdm that writes whole lines (``\\n`` instead of ``\\r`` redraws) for log files."""

    @staticmethod
    def status_printer(file):
        fp_flush = getattr(file, "flush", lambda: None)

        def print_status(s):
            if s:
                file.write(s.rstrip() + "\n")
                fp_flush()

        return print_status


def progress_bar(
    total: int | None,
    *,
    desc: str = "",
    initial: int = 0,
    disable: bool = False,
    unit: str = "step",
    file: IO | None = None,
    interval_s: float = LOG_INTERVAL_S,
    leave: bool = True,
) -> tqdm:
    """A tqdm bar for ``total`` units; plain periodic lines when ``file`` (default stderr) is not a terminal.

    ``initial`` starts the bar part-way (a resumed epoch).  ``disable=True`` returns a bar that prints nothing
    (tqdm then ignores updates).  Use it as a context manager or call ``close()``.
    """
    file = sys.stderr if file is None else file
    if is_terminal(file):
        return tqdm(total=total, desc=desc, initial=initial, disable=disable, unit=unit, file=file,
                    dynamic_ncols=True, leave=leave)
    return _LineTqdm(total=total, desc=desc, initial=initial, disable=disable, unit=unit, file=_Lines(file),
                     ascii=True, ncols=100, mininterval=interval_s, maxinterval=interval_s * 4,
                     miniters=1, leave=True)  # a log keeps its last line (leave=False would erase it with \r)


def track(
    items: Iterable[T], *, desc: str = "", total: int | None = None, disable: bool = False, unit: str = "it",
    leave: bool = False,
) -> Iterator[T]:
    """Iterate over ``items`` with a :func:`progress_bar` (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else None
    with progress_bar(total, desc=desc, disable=disable, unit=unit, leave=leave) as bar:
        for item in items:
            yield item
            bar.update(1)


@dataclass(frozen=True)
class RunEta:
    """Time left for a run, from the epochs done in this process and the time they took."""

    epochs_done: int
    epochs_total: int
    seconds_left: float | None  # None until one epoch has been timed

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_total if self.epochs_total else 1.0

    def __str__(self) -> str:
        eta = "?" if self.seconds_left is None else format_duration(self.seconds_left)
        return f"epoch {self.epochs_done}/{self.epochs_total}, ETA {eta}"


def run_eta(epochs_done: int, epochs_total: int, elapsed_s: float, epochs_at_start: int = 0) -> RunEta:
    """ETA of a run: the mean time per epoch so far times the epochs left.

    ``elapsed_s`` is the time spent on the epochs ``epochs_at_start..epochs_done`` (a resumed run passes the
    epoch it resumed from, so the estimate uses only epochs timed in this process).  Early stopping (Single phase
    2) can end a run sooner; the estimate is then an upper bound.
    """
    if epochs_total < 0 or not 0 <= epochs_at_start <= epochs_done:
        raise ValueError(f"bad epoch counts: done={epochs_done}, total={epochs_total}, start={epochs_at_start}")
    left = max(epochs_total - epochs_done, 0)
    timed = epochs_done - epochs_at_start
    if left == 0:
        return RunEta(epochs_done, epochs_total, 0.0)
    if timed == 0 or elapsed_s < 0:
        return RunEta(epochs_done, epochs_total, None)
    return RunEta(epochs_done, epochs_total, elapsed_s / timed * left)


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h41m``, ``3d04h``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"
