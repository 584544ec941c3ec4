"""Held-out images for the analyses: read with crelu.data, normalised as the run was."""

import pytest
import torch
from omegaconf import OmegaConf

from crelu.analysis.data import heldout_images
from crelu.config.schema import DatasetConfig
from crelu.data import write_fake_cifar
from crelu.data.tensor_loader import channel_stats

# generated CIFAR copies are "modified" datasets by design
pytestmark = pytest.mark.filterwarnings("ignore::crelu.data.ModifiedDatasetWarning")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_fake_cifar(tmp_path_factory.mktemp("c10"), "cifar10", n_train=100, n_test=30, seed=0)


def _cfg(root):
    cfg = OmegaConf.structured(DatasetConfig)
    cfg.name, cfg.root = "cifar10", str(root)
    return cfg


def test_record_stats_are_used_and_display_undoes_them(cifar):
    from crelu.data import load_cifar

    raw = torch.from_numpy(load_cifar("cifar10", cifar, train=False, download=False)[0][:5])
    stats = ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    s = heldout_images(_cfg(cifar), 5, stats=stats)
    assert s.images.shape == (5, 3, 32, 32)
    expected = (raw.permute(0, 3, 1, 2).double() / 255 - 0.5) / 0.25
    assert torch.allclose(s.images[:, 1].double(), expected[:, 1], atol=1e-5)
    assert torch.allclose(s.display(s.images), raw.permute(0, 3, 1, 2).double() / 255, atol=1e-5)
    other = s.renormalised(([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]))
    assert torch.allclose(other.images.double(), raw.permute(0, 3, 1, 2).double() / 255, atol=1e-5)
    assert s.renormalised(None) is s


def test_fallback_stats_are_the_training_split(cifar, monkeypatch):
    from crelu.data import load_cifar

    monkeypatch.delenv("CRELU_DATA_ROOT", raising=False)
    s = heldout_images(_cfg("/nonexistent"), 7, root=cifar)  # explicit root wins over the config's
    mean, std = channel_stats(torch.from_numpy(load_cifar("cifar10", cifar, train=True, download=False)[0]))
    assert torch.allclose(s.mean, mean) and torch.allclose(s.std, std) and len(s.images) == 7


def test_missing_data_is_a_file_not_found_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CRELU_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="no cifar10 test split"):
        heldout_images(_cfg(tmp_path), 3)
