"""Shared fixtures: generated CIFAR copies in the official layout, the shared real subset, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crelu.data.synthetic import write_fake_cifar

REPO = Path(__file__).resolve().parents[1]


_SHARED_MARKERS = {"cifar10": "cifar-10-batches-py/data_batch_1", "cifar100": "cifar-100-python/train"}


def shared_cifar_root(dataset: str = "cifar10") -> Path | None:
    """The folder holding the real CIFAR-10 (or CIFAR-100) images beside the repo, if there is one.

    Looked up in ``$CRELU_SHARED_DATA``, else ``../shared/data``.  Tests that need it skip when it is absent, so a
    clone without that folder still passes.
    """
    env = os.environ.get("CRELU_SHARED_DATA")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "data"]
    for c in candidates:
        if (c / _SHARED_MARKERS[dataset]).exists():
            return c
    return None


@pytest.fixture(scope="session", autouse=True)
def _hydra_logs_outside_the_repo(tmp_path_factory):
    """Hydra's run/sweep folders go to a session temp folder (configs/config.yaml reads CRELU_HYDRA_DIR).

    Set in os.environ, so the ``python -m crelu.train`` subprocesses that tests start inherit it.
    """
    before = os.environ.get("CRELU_HYDRA_DIR")
    os.environ["CRELU_HYDRA_DIR"] = str(tmp_path_factory.mktemp("hydra"))
    yield
    if before is None:
        os.environ.pop("CRELU_HYDRA_DIR", None)
    else:
        os.environ["CRELU_HYDRA_DIR"] = before


@pytest.fixture(scope="session")
def fake_cifar10(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("gen_c10_"), "cifar10", n_train=400, n_test=100, seed=1)


@pytest.fixture(scope="session")
def fake_cifar100(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("gen_c100_"), "cifar100", n_train=600, n_test=120, seed=2)


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides that make any CIFAR experiment a few-second CPU run writing under tmp_path."""
    return [
        "model.width_scale=0.125",
        "schedule.epochs=2",
        "schedule.milestones=[1]",
        "train.batch_size=32",
        "train.eval_batch_size=100",
        "train.max_steps_per_epoch=3",
        "train.quiet=true",
        "train.deterministic=true",
        "dataset.download=false",
        f"output.root={tmp_path / 'runs'}",
    ]
