"""Training: ``train(cfg) -> RunResult`` and its parts (optimiser/schedule, hot loop, checkpoints, loggers)."""

from crelu.training.engine import DivergedError
from crelu.training.trainer import RunResult, train

__all__ = ["DivergedError", "RunResult", "train"]
