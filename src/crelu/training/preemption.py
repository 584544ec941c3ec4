"""Preemption: a signal asks the run to checkpoint at the next step boundary, then stop or requeue.

Handled signals: SIGTERM, SIGUSR1 and the signal submitit's SLURM jobs requeue on (read from the installed
submitit, see :func:`submitit_signal`; submitit >= 1.5 uses SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says
otherwise, and asks SLURM for it ``signal_delay_s`` seconds before the time limit with ``--signal``).

A signal handler only sets a flag (a checkpoint taken inside a handler could catch the optimiser half-way
through a step); the training loop checks the flag after every step -- a Python bool, no device sync -- writes
a mid-epoch checkpoint and raises :class:`Preempted`.  The trainer then hands the signal over:

* in a job of the submitit launcher (submitit installed its handlers before ours): submitit's requeue handler
  -- the one it bound to its signal -- is called, whichever of SIGUSR1 / submitit's signal arrived.  It
  requeues the job (counting a timeout against ``hydra.launcher.max_num_timeout`` when the time limit is
  near) and exits; the requeued job finds the checkpoint through its run key and resumes.  When the timeouts
  are used up it raises submitit's ``UncompletedJobError`` instead, which the launcher reports.  SIGTERM only
  checkpoints and training goes on: SLURM sends it ahead of a kill (``scontrol requeue``, preemption), and
  submitit ignores it on purpose -- SLURM requeues such a job itself, or submitit's signal follows;
* anywhere else (a plain ``kill``, torchrun shutting down, a laptop), the process exits with 128 + signal
  after the checkpoint and the record's status is ``interrupted``; relaunching the same command resumes.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_SUBMITIT_REQUEUE_HANDLER = "checkpoint_and_try_requeue"  # submitit.core.job_environment.SignalHandler


@functools.lru_cache(maxsize=1)
def submitit_signal() -> int | None:
    """The signal submitit requeues on, as the installed submitit defines it (None without submitit).

    submitit >= 1.5 keeps it in ``JobEnvironment.USR_SIG`` ("USR2" unless the environment variable
    ``SUBMITIT_PREEMPT_SIGNAL`` was set when submitit was imported); its sbatch scripts request exactly it.
    """
    try:
        from submitit import JobEnvironment
    except ImportError:
        return None
    name = getattr(JobEnvironment, "USR_SIG", None)
    sig = getattr(signal, f"SIG{name}", None) if name else None
    return int(sig) if sig is not None else None


def handled_signals() -> tuple[int, ...]:
    names = ("SIGTERM", "SIGUSR1")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    sub = submitit_signal()
    if sub is not None and sub not in sigs:
        sigs.append(sub)
    return tuple(sigs)


def _is_submitit(handler: Any) -> bool:
    return callable(handler) and "submitit" in (getattr(handler, "__module__", "") or "") + repr(handler)


class Preempted(BaseException):
    """Raised by the training loop after it checkpointed because a preemption signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}; checkpoint written")
        self.signum = signum


class PreemptionGuard:
    """Install flag-setting handlers for the preemption signals for the duration of a run (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in handled_signals():
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
        return any(_is_submitit(h) for h in self._previous.values())

    def submitit_requeue(self) -> tuple[int, Callable[[int, Any], Any]] | None:
        """(signal, handler) of submitit's requeue handler as installed in this process, if any."""
        for sig, h in self._previous.items():
            if _is_submitit(h) and getattr(h, "__name__", "") == _SUBMITIT_REQUEUE_HANDLER:
                return sig, h
        return None

    def keep_going(self) -> bool:
        """Under submitit a SIGTERM only asks for a checkpoint: SLURM's requeue or submitit's signal follows."""
        return self.signum == signal.SIGTERM and self.under_submitit()

    def hand_over(self, signum: int) -> None:
        """After the checkpoint: let submitit requeue the job, or exit with 128 + signum."""
        prev = self._previous.get(signum)
        requeue = self.submitit_requeue()
        self.__exit__()
        if requeue is not None and signum != signal.SIGTERM:
            sig, handler = requeue
            log.warning("%s: handing over to submitit (requeue on %s)", signal.Signals(signum).name,
                        signal.Signals(sig).name)
            # The requeue makes SLURM send SIGTERM to every process of the job, the `scontrol requeue` submitit is
            # running included: if it lands before scontrol exits, scontrol dies and submitit reports the job as
            # failed although SLURM requeued it (seen on a loaded 2-core node).  An ignored signal is inherited
            # across exec, so scontrol finishes; this process exits right after anyway.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            handler(sig, None)  # requeues and exits (SystemExit), or raises UncompletedJobError when out of tries
        elif callable(prev) and prev not in (signal.SIG_DFL, signal.SIG_IGN):
            prev(signum, None)
        raise SystemExit(128 + signum)
