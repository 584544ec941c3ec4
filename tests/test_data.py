"""CIFAR through torchvision's real dataset classes: generated copies, the shared real subset, bad input."""

import pickle
import shutil

import numpy as np
import pytest
import torch
from tests.conftest import shared_cifar_root

from crelu.config import compose_config
from crelu.data import DataNotFoundError, ModifiedDatasetWarning, TensorBatches, build_data, load_cifar
from crelu.data.tensor_loader import channel_stats, normalise, random_shift


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    import crelu.data.cifar as cifar_mod

    monkeypatch.setattr(cifar_mod, "_WARNED", set())  # each test sees the once-per-folder warning


def test_generated_cifar10_loads_through_torchvision_with_a_warning(fake_cifar10):
    with pytest.warns(ModifiedDatasetWarning, match="MD5 mismatch"):
        x, y = load_cifar("cifar10", fake_cifar10, train=True, download=False)
    assert x.shape == (400, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (400,) and set(np.unique(y)) <= set(range(10))
    xt, yt = load_cifar("cifar10", fake_cifar10, train=False, download=False)
    assert xt.shape == (100, 32, 32, 3)


def test_generated_cifar100_uses_fine_labels(fake_cifar100):
    x, y = load_cifar("cifar100", fake_cifar100, train=True, download=False)
    assert x.shape == (600, 32, 32, 3) and y.max() < 100 and len(np.unique(y)) > 50


def test_modified_copy_refused_when_not_allowed(fake_cifar10):
    with pytest.raises(DataNotFoundError, match="allow_modified=false"):
        load_cifar("cifar10", fake_cifar10, train=True, download=False, allow_modified=False)


def test_missing_data_error_names_path_files_and_fix(tmp_path):
    with pytest.raises(DataNotFoundError) as ei:
        load_cifar("cifar10", tmp_path / "nowhere", train=True, download=False)
    msg = str(ei.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "test_batch" in msg and "batches.meta" in msg
    assert "CRELU_DATA_ROOT" in msg and "dataset.root" in msg and "cifar-10-python.tar.gz" in msg


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tvc

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvc, "download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError, match="download failed .*network unreachable"):
        load_cifar("cifar100", tmp_path, train=True, download=True)


def test_partially_missing_files_are_reported(fake_cifar10, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fake_cifar10, root)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="data_batch_3"):
        load_cifar("cifar10", root, train=True, download=False)


def test_corrupt_batch_file_is_reported(fake_cifar10, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fake_cifar10, root)
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises((DataNotFoundError, pickle.UnpicklingError, EOFError, ValueError)):
        load_cifar("cifar10", root, train=True, download=False)


@pytest.mark.skipif(shared_cifar_root() is None, reason="real CIFAR-10 images (../shared/data) not present")
def test_shared_real_cifar10_loads_with_the_counts_of_its_files():
    root = shared_cifar_root()
    folder = root / "cifar-10-batches-py"

    def labels(*names):  # counts come from the files themselves (subset or full release alike)
        out = []
        for n in names:
            with open(folder / n, "rb") as f:
                out.append(pickle.load(f, encoding="latin1")["labels"])
        return np.concatenate(out)

    x, y = load_cifar("cifar10", root, train=True, download=False)
    xt, yt = load_cifar("cifar10", root, train=False, download=False)
    first, train_labels = labels("data_batch_1"), labels(*(f"data_batch_{i}" for i in range(1, 6)))
    assert (len(y), len(yt)) == (len(train_labels), len(labels("test_batch"))) and len(x) == len(y)
    assert np.bincount(y[: len(first)], minlength=10).tolist() == np.bincount(first, minlength=10).tolist()
    assert np.bincount(yt, minlength=10).tolist() == np.bincount(labels("test_batch"), minlength=10).tolist()


def test_normalisation_uses_training_statistics():
    imgs = torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8)
    mean, std = channel_stats(imgs)
    x = normalise(imgs, mean, std)
    assert x.shape == (50, 3, 32, 32)
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


def test_random_shift_equals_pad_and_crop():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    dx, dy = torch.tensor([2, -1]), torch.tensor([-2, 1])
    out = random_shift(x, dx, dy, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        r0, c0 = 2 + int(dy[i]), 2 + int(dx[i])
        torch.testing.assert_close(out[i], padded[i, :, r0:r0 + 6, c0:c0 + 6])


def test_batches_are_seeded_flipped_and_cover_the_epoch():
    x = torch.randn(70, 3, 4, 4)
    y = torch.arange(70)
    b = TensorBatches(x, y, batch_size=16, shuffle=True, drop_last=True, flip=True)
    e1 = list(b.epoch(torch.Generator().manual_seed(3)))
    e2 = list(b.epoch(torch.Generator().manual_seed(3)))
    assert len(e1) == 4 == len(b)
    for (xa, ya), (xb, yb) in zip(e1, e2):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    seen = torch.cat([yb for _, yb in e1])
    assert len(seen.unique()) == 64  # no repeats within an epoch
    flipped = sum(int(not torch.equal(xb[i], x[yb[i]])) for xb, yb in e1 for i in range(len(yb)))
    assert 15 < flipped < 49  # about half of 64
    for xb, yb in e1:
        for i in range(len(yb)):
            assert torch.equal(xb[i], x[yb[i]]) or torch.equal(xb[i], x[yb[i]].flip(2))


def test_protocol_splits_of_the_bundle(fake_cifar10):
    base = [f"dataset.root={fake_cifar10}", "dataset.download=false", "train.eval_batch_size=64"]
    full = build_data(compose_config(base), torch.device("cpu"))
    assert full.sizes() == {"train_size": 400, "test_size": 100, "train_eval_size": 400}
    fold = build_data(compose_config([*base, "protocol=kfold", "protocol.folds=4", "protocol.fold=1"]),
                      torch.device("cpu"))
    assert fold.sizes()["train_size"] == 300 and fold.sizes()["val_size"] == 100
    p1 = build_data(compose_config([*base, "protocol=single", "protocol.holdout=80"]), torch.device("cpu"),
                    phase="phase1")
    p2 = build_data(compose_config([*base, "protocol=single", "protocol.holdout=80"]), torch.device("cpu"),
                    phase="phase2")
    assert (p1.sizes()["train_size"], p1.sizes()["val_size"]) == (320, 80)
    assert (p2.sizes()["train_size"], p2.sizes()["val_size"]) == (400, 80)
    def pixels(bundle):  # undo each phase's own normalisation
        v = bundle.evals["val"]
        return v.x * torch.tensor(bundle.std).view(1, 3, 1, 1) + torch.tensor(bundle.mean).view(1, 3, 1, 1)

    assert torch.equal(p1.evals["val"].y, p2.evals["val"].y)  # the same hold-out in both phases
    torch.testing.assert_close(pixels(p1), pixels(p2), atol=1e-5, rtol=0)
    assert p1.mean != p2.mean  # statistics come from each phase's own training images
    sub = build_data(compose_config([*base, "dataset.train_subset=100", "dataset.test_subset=30"]),
                     torch.device("cpu"))
    assert sub.sizes()["train_size"] == 100 and sub.sizes()["test_size"] == 30
