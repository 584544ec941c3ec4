"""The one training entrypoint: ``python -m crelu.train [overrides]`` (console script ``crelu-train``).

Examples::

    python -m crelu.train experiment=table1/crelu dataset=cifar100 protocol=kfold protocol.fold=3
    python -m crelu.train -m experiment=table1/baseline,table1/crelu protocol=kfold protocol.fold='range(10)'
    python -m crelu.train experiment=table1/crelu profile=smoke logger=wandb

A thin ``@hydra.main`` over :func:`crelu.protocols.runner.run` (which calls ``crelu.training.train``).
Known user errors (missing data, impossible model, bad config values) print one clear message and exit 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from crelu.config.compose import config_dir
from crelu.config.schema import register_configs

log = logging.getLogger("crelu")
register_configs()


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from crelu.data.cifar import DataNotFoundError
    from crelu.models.plan import ModelConfigError
    from crelu.protocols.runner import SkippedJob, run
    from crelu.results.record import RecordError
    from crelu.training.checkpoint import CheckpointError
    from crelu.training.engine import DivergedError

    try:
        result = run(cfg)
    except SkippedJob as e:
        log.info("nothing to do: %s", e)
        return None
    except (DataNotFoundError, ModelConfigError, CheckpointError, DivergedError, RecordError, ValueError) as e:
        print(f"\ncrelu-train: error: {e}", file=sys.stderr, flush=True)
        if _in_sweep() and isinstance(e, DivergedError):
            # one diverged job must not stop a table sweep: its record says "failed" and the table shows the gap
            return None
        sys.exit(2)
    status = "skipped (already finished)" if result.skipped else result.status
    err = result.final.get("test_error")
    log.info("%s: %s, test error %s", result.run_dir, status, f"{err:.2f}%" if err is not None else "n/a")
    return err


if __name__ == "__main__":
    main()
