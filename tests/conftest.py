"""Shared fixtures: generated CIFAR copies in the official layout, the shared real subset, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crelu.data.synthetic import write_fake_cifar

REPO = Path(__file__).resolve().parents[1]


def shared_cifar_root() -> Path | None:
    """The real CIFAR-10 subset, if the environment points at it (CRELU_SHARED_DATA or ../shared/data)."""
    env = os.environ.get("CRELU_SHARED_DATA")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "data"]
    for c in candidates:
        if (c / "cifar-10-batches-py" / "data_batch_1").exists():
            return c
    return None


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
