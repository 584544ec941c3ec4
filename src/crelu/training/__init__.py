"""Training: ``train(cfg) -> RunResult`` and its parts.

``run``      the one run lifecycle (skip, lock, resume, epoch loop, record, fail, finalise), packed folds included
``lock``     the run-directory lock (flock naming its owner)
``member``   one run inside the lifecycle: RunSpec, its state, its record (fresh, resumed, failed, finalised)
``engine``   the one training loop (``train_epoch`` over a step adapter) and evaluation
``packed``   the K-fold step adapter (``PackedStep``)
``optim``, ``checkpoint``, ``loggers``, ``preemption``, ``distributed``, ``environment``: its parts
"""

from crelu.training.engine import DivergedError
from crelu.training.run import RunResult, RunSpec, train, train_runs

__all__ = ["DivergedError", "RunResult", "RunSpec", "train", "train_runs"]
