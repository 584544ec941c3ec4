"""Preemption: SIGTERM / SIGUSR1 ask the run to checkpoint at the next step boundary, then stop or requeue.

A signal handler only sets a flag (a checkpoint taken inside a handler could catch the optimiser half-way
through a step); the training loop checks the flag after every step -- a Python bool, no device sync -- writes
a mid-epoch checkpoint and raises :class:`Preempted`.  The trainer then hands the signal over:

* under SLURM with the submitit launcher, submitit's own SIGUSR1 handler (installed before ours) is called: it
  resubmits the job, which finds the checkpoint through its run key and resumes -- so
  ``hydra.launcher.max_num_timeout`` > 0 is safe.  Submitit ignores SIGTERM on purpose (SLURM sends it before
  the USR1 grace period ends); we checkpoint on it and keep going, exactly as submitit expects;
* anywhere else (a plain ``kill``, torchrun shutting down, a laptop), the process exits with 128 + signal
  after the checkpoint and the record's status is ``interrupted``; relaunching the same command resumes.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)


class Preempted(BaseException):
    """Raised by the training loop after it checkpointed because a preemption signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}; checkpoint written")
        self.signum = signum


class PreemptionGuard:
    """Install flag-setting handlers for SIGTERM/SIGUSR1 for the duration of a run (main thread only)."""

    usr1 = getattr(signal, "SIGUSR1", None)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handler(self, signum: int, frame) -> None:
        if self.signum is None:
            log.warning("%s received: checkpointing at the next step", signal.Signals(signum).name)
        self.signum = signum

    def under_submitit(self) -> bool:
        """True when submitit installed its handlers before us (a SLURM job of the submitit launcher)."""
        return any(callable(h) and "submitit" in getattr(h, "__module__", "") + repr(h)
                   for h in self._previous.values())

    def keep_going(self) -> bool:
        """Under submitit a SIGTERM only asks for a checkpoint: its USR1 (requeue) follows."""
        return self.signum != self.usr1 and self.under_submitit()

    def hand_over(self, signum: int) -> None:
        """After the checkpoint: let submitit requeue the job, or exit with 128 + signum."""
        prev = self._previous.get(signum)
        self.__exit__()
        if callable(prev) and prev not in (signal.SIG_DFL, signal.SIG_IGN):
            prev(signum, None)  # submitit: checkpoint_and_try_requeue -> resubmits and exits
        raise SystemExit(128 + signum)
