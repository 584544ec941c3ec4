"""ImageNet loader on a generated ImageFolder: layout errors, augmentation, reproducibility, rank sharding."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crelu.config import compose_config
from crelu.data import build_data
from crelu.data.cifar import DataNotFoundError
from crelu.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PCA_EIGVAL,
    PCA_EIGVEC,
    aug_params,
    build_imagenet,
    decode_squares,
    load_square,
    scan_split,
)
from crelu.training import environment as env

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def write_tiny(out: Path, **kw) -> Path:
    """scripts/make_tiny_imagenet.py's generator (4 classes, 6 train / 3 val JPEGs per class by default)."""
    spec = importlib.util.spec_from_file_location("make_tiny_imagenet", REPO / "scripts" / "make_tiny_imagenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_imagenet(out, **kw)


def tiny_cfg(root, *extra):
    return compose_config(["experiment=table4/baseline", "profile=smoke_imagenet", f"dataset.root={root}", *extra])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("tiny_imagenet"))


def test_generated_folder_has_the_ilsvrc_layout(tiny):
    train, val = scan_split(tiny, "train"), scan_split(tiny, "val")
    assert train.classes == val.classes and len(train.classes) == 4
    assert all(c.startswith("n") and len(c) == 9 and c[1:].isdigit() for c in train.classes)
    assert len(train.paths) == 24 and len(val.paths) == 12
    assert np.bincount(train.labels).tolist() == [6] * 4
    assert all(p.endswith(b".JPEG") for p in val.paths) and val.paths[0].split(b"/")[1].startswith(b"ILSVRC2012_val_")


def _copy(tiny: Path, dst: Path) -> Path:
    shutil.copytree(tiny, dst)
    return dst


@pytest.mark.parametrize("break_it, match", [
    (lambda r: shutil.rmtree(r), "is not a folder"),
    (lambda r: shutil.rmtree(r / "val"), r"val is not a folder"),
    (lambda r: shutil.rmtree(r / "train"), r"train is not a folder"),
    (lambda r: [f.unlink() for f in (r / "val" / sorted(p.name for p in (r / "val").iterdir())[1]).iterdir()],
     "Found no valid file"),
    (lambda r: shutil.rmtree(r / "val" / sorted(p.name for p in (r / "val").iterdir())[0]),
     "different class folders"),
])
def test_missing_or_malformed_folders_raise_actionable_errors(tiny, tmp_path, break_it, match):
    root = _copy(tiny, tmp_path / "imagenet")
    break_it(root)
    with pytest.raises(DataNotFoundError, match=match) as e:
        build_data(tiny_cfg(root), CPU)
    assert "CRELU_IMAGENET_ROOT" in str(e.value) and "dataset.root" in str(e.value)
    assert "train/<wnid>/*.JPEG" in str(e.value)


def test_flat_validation_folder_is_recognised(tiny, tmp_path):
    root = _copy(tiny, tmp_path / "imagenet")
    for f in list((root / "val").glob("*/*.JPEG")):
        f.rename(root / "val" / f.name)
    for d in (root / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(DataNotFoundError, match="flat validation layout"):
        build_data(tiny_cfg(root), CPU)


def test_class_count_must_match_num_classes(tiny):
    with pytest.raises(ValueError, match="4 class folders but dataset.num_classes=1000; pass dataset.num_classes=4"):
        build_data(tiny_cfg(tiny, "dataset.num_classes=1000"), CPU)
    with pytest.raises(ValueError, match="protocol=full"):
        build_data(tiny_cfg(tiny, "protocol=kfold"), CPU)


def _expected_train_image(root: Path, path: bytes, seed: int, resize=76, size=67, lighting=0.1) -> torch.Tensor:
    """Hand-made AlexNet augmentation of one image (PIL crop + flip, lighting, normalisation)."""
    top, left, mirror, alpha = aug_params(seed, resize, size, True, lighting)
    img = np.asarray(load_square(str(root / "train" / path.decode()), resize), dtype=np.float64)
    img = img[top : top + size, left : left + size] / 255.0
    if mirror:
        img = img[:, ::-1]
    rgb = np.asarray(PCA_EIGVEC) @ (alpha.astype(np.float64) * np.asarray(PCA_EIGVAL))
    img = (img + rgb - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return torch.from_numpy(img.transpose(2, 0, 1).copy()).float()


def test_training_batches_follow_the_alexnet_recipe_and_the_seeded_plan(tiny):
    bundle = build_imagenet(tiny_cfg(tiny), CPU)
    assert len(bundle.train) == 3 and bundle.train.num_examples == 24 and bundle.evals["test"].num_examples == 12
    plan = bundle.train.batches(env.data_generator(0), None)
    assert sorted(i for b in plan for i, _ in b) == list(range(24))  # a permutation of the 24 images
    x, y = next(bundle.train.epoch(env.data_generator(0)))
    assert x.shape == (8, 3, 67, 67) and x.dtype == torch.float32 and y.dtype == torch.int64
    ix = scan_split(tiny, "train")
    for k, (i, seed) in enumerate(plan[0]):
        assert y[k] == ix.labels[i]
        torch.testing.assert_close(x[k], _expected_train_image(tiny, ix.paths[i], seed), atol=1e-4, rtol=0)
    flips = [aug_params(s, 76, 67, True, 0.1)[2] for b in plan for _, s in b]
    assert 0 < sum(flips) < 24


def test_epochs_are_reproducible_whatever_the_worker_count(tiny):
    def epoch(workers, gen_seed=0, skip=0):
        bundle = build_imagenet(tiny_cfg(tiny, f"dataset.workers={workers}"), CPU)
        gen = env.data_generator(gen_seed)
        for _ in range(skip):
            list(bundle.train.epoch(gen))
        return [(x, y) for x, y in bundle.train.epoch(gen)]

    a, b = epoch(0), epoch(2)
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    second = epoch(0, skip=1)
    assert not torch.equal(second[0][0], a[0][0])  # the next epoch draws a new order and new augmentation


def test_validation_is_centre_crop_of_the_square_and_subsets_are_stratified(tiny):
    bundle = build_imagenet(tiny_cfg(tiny, "dataset.test_subset=8", "dataset.train_subset=12"), CPU)
    assert bundle.train.num_examples == 12 and bundle.evals["test"].num_examples == 8
    (full, y), = list(bundle.crop_eval.batches.epoch(None))
    (centre, y2), = list(bundle.evals["test"].epoch(None))
    assert full.shape == (8, 3, 76, 76) and centre.shape == (8, 3, 67, 67) and torch.equal(y, y2)
    assert np.bincount(y.numpy()).tolist() == [2, 2, 2, 2]
    torch.testing.assert_close(centre, full[:, :, 4:71, 4:71])  # round((76 - 67) / 2) = 4
    ix = scan_split(tiny, "val")
    first_path = tiny / "val" / ix.paths[bundle.crop_eval.batches.items[0]].decode()
    first = np.asarray(load_square(str(first_path), 76)) / 255.0
    expect = (first - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    torch.testing.assert_close(full[0], torch.from_numpy(expect.transpose(2, 0, 1)).float(), atol=1e-4, rtol=0)


def test_rank_blocks_of_each_global_batch_partition_the_single_process_batch(tiny):
    cfg = tiny_cfg(tiny)
    one = build_imagenet(cfg, CPU).train
    single = one.batches(env.data_generator(3), None)
    shards = []
    for r in range(2):
        part = type(one)(one.loader, one.plan, one.items, one.finish, batch_size=8, shuffle=True, drop_last=True,
                         rank=r, world=2)
        shards.append(part.batches(env.data_generator(3), None))
    for s, batch in enumerate(single):
        assert shards[0][s] + shards[1][s] == batch and len(shards[0][s]) == 4
    with pytest.raises(ValueError, match="divisible by 3"):
        type(one)(one.loader, one.plan, one.items, one.finish, batch_size=8, shuffle=True, drop_last=True,
                  rank=0, world=3)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_device_decode_path_matches_the_pil_path(tiny, monkeypatch):
    """The GPU path's decode/resize/crop code, run on the CPU: same squares as PIL up to resampling."""
    from torchvision.io import read_file

    from crelu.data.imagenet import use_device_decode

    ix = scan_split(tiny, "val")
    files = [str(tiny / "val" / p.decode()) for p in ix.paths[:6]]
    got = decode_squares([read_file(f) for f in files], CPU, 76)
    want = torch.stack([torch.from_numpy(np.array(load_square(f, 76))).permute(2, 0, 1) for f in files]).float()
    assert got.shape == want.shape == (6, 3, 76, 76)
    assert (got - want).abs().mean() < 3.0  # PIL vs torch antialiased bilinear: a few grey levels at most
    cfg = tiny_cfg(tiny)
    assert use_device_decode(cfg, CPU) is False  # CPU decoding is the default
    monkeypatch.setenv("CRELU_IMAGENET_DECODE", "gpu")
    with pytest.warns(RuntimeWarning, match="needs a CUDA device"):
        assert use_device_decode(cfg, CPU) is False
    monkeypatch.setenv("CRELU_IMAGENET_DECODE", "nvjpeg")
    with pytest.raises(ValueError, match="must be cpu or gpu"):
        use_device_decode(cfg, CPU)


@pytest.fixture(autouse=True)
def _no_decode_env(monkeypatch):
    monkeypatch.delenv("CRELU_IMAGENET_DECODE", raising=False)
