"""DDP: rank sharding of CIFAR batches, single-process no-ops, and 2 gloo processes (torchrun) vs one process.

Run as a script by torchrun (``python -m torch.distributed.run --nproc-per-node 2 tests/test_distributed.py
CFGS.json``), it trains every config in CFGS.json in each rank: that is the DDP half of the equivalence test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _worker_main(cfg_file: str) -> None:
    from omegaconf import OmegaConf

    from crelu.training import train

    for c in json.loads(Path(cfg_file).read_text()):
        train(OmegaConf.create(c))


if __name__ == "__main__":
    _worker_main(sys.argv[1])
    sys.exit(0)

import pytest  # noqa: E402  (the worker above needs neither pytest nor the fixtures)
from omegaconf import OmegaConf  # noqa: E402

from crelu.config import compose_config  # noqa: E402
from crelu.data.sharding import EvalShard, RankShard, block  # noqa: E402
from crelu.data.synthetic import write_fake_cifar  # noqa: E402
from crelu.data.tensor_loader import TensorBatches  # noqa: E402
from crelu.results.record import load_record  # noqa: E402
from crelu.training import distributed as ddp  # noqa: E402
from crelu.training import environment as env  # noqa: E402
from crelu.training import train  # noqa: E402


def test_rank_shards_of_cifar_batches_rebuild_the_single_process_batches():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(70, 3, 8, 8, generator=g), torch.arange(70)
    tb = TensorBatches(x, y, batch_size=16, shuffle=True, drop_last=True, flip=True, shift=2)
    single = list(tb.epoch(env.data_generator(1)))
    shards = [list(RankShard(tb, r, 2).epoch(env.data_generator(1))) for r in range(2)]
    assert len(single) == len(shards[0]) == len(shards[1]) == 4 and len(RankShard(tb, 1, 2)) == 4
    for (xs, ys), (x0, y0), (x1, y1) in zip(single, *shards):
        assert x0.shape[0] == x1.shape[0] == 8
        assert torch.equal(torch.cat([x0, x1]), xs) and torch.equal(torch.cat([y0, y1]), ys)
    resumed = list(RankShard(tb, 1, 2).epoch(env.data_generator(1), start=2))
    assert len(resumed) == 2 and torch.equal(resumed[0][0], shards[1][2][0])
    with pytest.raises(ValueError, match="divisible by 3"):
        RankShard(tb, 0, 3)
    no_drop = TensorBatches(x, y, batch_size=16, drop_last=False)
    with pytest.raises(ValueError, match="drop_last=true"):
        RankShard(no_drop, 0, 2)


def test_eval_shards_are_contiguous_blocks_with_the_global_size():
    x, y = torch.randn(11, 3, 4, 4), torch.arange(11)
    tb = TensorBatches(x, y, batch_size=4, shuffle=False, drop_last=False)
    parts = [EvalShard(tb, r, 3) for r in range(3)]
    assert [p.num_examples for p in parts] == [11] * 3
    got = torch.cat([yb for p in parts for _, yb in p.epoch(None)])
    assert torch.equal(got, y) and [block(11, r, 3) for r in range(3)] == [(0, 3), (3, 7), (7, 11)]


def _clear(monkeypatch, *names: str) -> None:
    """Unset ``names`` for one test and restore them afterwards (delenv alone forgets absent variables)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_single_process_helpers_are_no_ops(monkeypatch):
    _clear(monkeypatch, "RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID")
    assert ddp.setup("cpu") is False and not ddp.is_distributed()
    assert ddp.rank() == 0 and ddp.world_size() == 1 and ddp.is_main() and ddp.rank_seed(7) == 7
    a, b = torch.tensor(1.5, dtype=torch.float64), torch.tensor(3)
    assert ddp.reduce_sums(a, b, 4) == (a, b, 4)
    t = torch.randn(3, 2)
    assert ddp.all_gather_cat(t) is t and ddp.reduce_counts({"n": t}) == {"n": t}
    model = torch.nn.Linear(2, 2)
    assert ddp.wrap(model, torch.device("cpu")) is model
    bundle = type("B", (), {})()
    assert ddp.shard_bundle(bundle) is bundle
    ddp.barrier()


def test_slurm_variables_become_torchrun_variables(monkeypatch):
    _clear(monkeypatch, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-node-7")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol here: the node list is used as is
    assert ddp._slurm_env() is True
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "gpu-node-7" and os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)
    assert ddp._slurm_env() is False  # RANK is set now: torchrun-style variables win
    monkeypatch.setenv("CRELU_DDP", "0")
    assert ddp.setup("cpu") is False and not ddp.is_distributed()  # WORLD_SIZE=4, but DDP is switched off


def _tiny_imagenet(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_tiny_imagenet", REPO / "scripts" / "make_tiny_imagenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_imagenet(out)


def _configs(tmp_path: Path, tag: str) -> list:
    common = ["model.dropout=0", "model.dropout_input=0", "schedule.epochs=2", "train.quiet=true",
              "train.deterministic=true", "train.max_steps_per_epoch=3"]
    cifar = compose_config(["experiment=table1/baseline", f"dataset.root={tmp_path / 'cifar'}", *common,
                            "model.width_scale=0.125", "train.batch_size=32", "train.eval_batch_size=64",
                            "dataset.download=false", f"output.run_dir={tmp_path / tag / 'cifar'}"])
    imnet = compose_config(["experiment=table4/baseline", "profile=smoke_imagenet", *common,
                            f"dataset.root={tmp_path / 'imagenet'}", "train.eval_batch_size=5",
                            f"output.run_dir={tmp_path / tag / 'imagenet'}"])
    return [cifar, imnet]


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    _clear(monkeypatch, "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID")
    write_fake_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=50, seed=3)
    _tiny_imagenet(tmp_path / "imagenet")
    cfg_file = tmp_path / "cfgs.json"
    cfg_file.write_text(json.dumps([OmegaConf.to_container(c, resolve=True) for c in _configs(tmp_path, "ddp")]))
    envs = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).resolve()), str(cfg_file)]
    proc = subprocess.run(cmd, env={**envs, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for cfg in _configs(tmp_path, "single"):
        train(cfg)
    for name in ("cifar", "imagenet"):
        one, two = load_record(tmp_path / "single" / name), load_record(tmp_path / "ddp" / name)
        assert two.data["env"]["world_size"] == 2 and "world_size" not in one.data["env"]
        assert two.data["data"] == one.data["data"]  # global sizes, not a rank's share
        for key, value in one.final.items():
            if isinstance(value, float):
                assert two.final[key] == pytest.approx(value, abs=1e-4), (name, key)
        for e1, e2 in zip(one.epochs, two.epochs):
            assert e2["train_loss"] == pytest.approx(e1["train_loss"], abs=1e-5)
        w1 = torch.load(tmp_path / "single" / name / "checkpoint.pt", weights_only=False)["model"]
        w2 = torch.load(tmp_path / "ddp" / name / "checkpoint.pt", weights_only=False)["model"]
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=1e-4)
        l1, l2 = (torch.load(tmp_path / t / name / "test_logits.pt") for t in ("single", "ddp"))
        assert torch.equal(l1["labels"], l2["labels"])  # the ranks' blocks gathered back in order
        torch.testing.assert_close(l2["logits"], l1["logits"], atol=1e-4, rtol=1e-4)
    assert load_record(tmp_path / "ddp" / "imagenet").final["top1_10patch"] >= 0
