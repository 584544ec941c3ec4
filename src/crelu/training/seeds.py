"""The seed rule: every network of a table row starts from its own seeds.

A table row trains 10 fold networks and the two networks of the Single protocol.  If they all used
``train.seed`` directly they would start from identical weights and see their data in related orders: the fold
errors would be correlated (the reported ± SE too small) and the Vote ensemble less diverse than the paper's.
So each job derives three independent seeds from ``(train.seed, job)`` with NumPy's ``SeedSequence``::

    job  = "full" | "fold<k>" | "single-phase1" | "single-phase2" | "tune"
    init, dropout, data = SeedSequence([train.seed, SALT, *utf8(job)]).generate_state(3)

* ``init``    seeds torch (and Python/NumPy) right before the model is built: the initial weights;
* ``dropout`` reseeds torch's global generator after the model is built: dropout masks during training;
* ``data``    seeds the CPU generator that draws each epoch's order, flips and shifts.

Fold/hold-out *splits* never depend on these (they use ``protocol.split_seed``), so every row and seed sees the
same folds.  ``train.job_seeds=false`` restores the shared seeds of earlier versions (every job uses
``train.seed`` for init and dropout, and the data generator derived from it).  Packed folds follow the same rule
per member (init and data order); a pack's dropout masks come from one stream seeded from its members' dropout
seeds.  The seeds a run used are recorded in ``run.json`` under ``seeds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SALT = 0x5EED_C4E1


@dataclass(frozen=True)
class JobSeeds:
    base: int  # train.seed
    job: str
    init: int
    dropout: int
    data: int
    rule: str  # "per-job" | "shared"

    def as_dict(self) -> dict:
        return asdict(self)


def job_name(protocol, phase: str | None) -> str:
    """``full``, ``fold<k>``, ``single-phase1``/``single-phase2`` or ``tune``."""
    if protocol.name == "kfold":
        return f"fold{protocol.fold}"
    if phase is not None:
        return f"{protocol.name}-{phase}"
    return str(protocol.name)


def job_seeds(cfg, phase: str | None = None) -> JobSeeds:
    """The seeds of the run ``cfg`` describes (and, for Single, of its ``phase``)."""
    seed, job = int(cfg.train.seed), job_name(cfg.protocol, phase)
    if not cfg.train.job_seeds:
        data = int(np.random.SeedSequence([seed, 0xDA7A]).generate_state(1)[0])  # the data generator of old runs
        return JobSeeds(seed, job, seed, seed, data, "shared")
    init, dropout, data = (int(v) for v in np.random.SeedSequence([seed, SALT, *job.encode()]).generate_state(3))
    return JobSeeds(seed, job, init, dropout, data, "per-job")


def pack_dropout_seed(members: list[JobSeeds]) -> int:
    """One dropout stream for K packed members, from their own dropout seeds."""
    return int(np.random.SeedSequence([SALT, 0x9AC4, *(m.dropout for m in members)]).generate_state(1)[0])
