"""train_packed / protocol.pack end to end on CPU: K folds trained together equal K ordinary runs, record for record."""

import pytest
import torch

from crelu.config import compose_config
from crelu.protocols import runner as packed_mod
from crelu.protocols.runner import member_configs, resolve_job, run, train_packed
from crelu.results.record import load_record
from crelu.training import DivergedError, train
from crelu.training import run as run_mod
from crelu.training.checkpoint import load_latest, load_model
from crelu.training.run import resolve_run_dir

NO_DROPOUT = ["model.dropout=0", "model.dropout_input=0", "model.dropout_first=0", "model.dropout_fc=0"]
TIMING = {"time_s", "images_per_s"}


def _over(tiny_overrides, root, *extra):
    return [o for o in tiny_overrides if not o.startswith("output.root")] + [
        f"dataset.root={root}", "protocol=kfold", "protocol.folds=3", *extra]


def _cfgs(over, out, folds=(0, 1, 2)):
    return [compose_config([*over, f"protocol.fold={f}", f"output.root={out}"]) for f in folds]


def _strip(epochs):
    return [{k: v for k, v in e.items() if k not in TIMING} for e in epochs]


@pytest.mark.parametrize("row,extra,grads", [
    ("table1/crelu", [], True),
    ("table1/avr", [], True),
    # float32 VGG+BN at width 1/8 is chaotic (rounding flips ReLUs next to zero, see test_packed.py, which checks
    # its SGD steps in float64): lr 0 still checks the data, BN batch/running statistics, records and logits
    ("table2/crelu_conv1_3_5", ["optim.lr=0"], False),
])
def test_packed_folds_equal_separate_runs(fake_cifar10, tiny_overrides, tmp_path, row, extra, grads):
    over = _over(tiny_overrides, fake_cifar10, f"experiment={row}", *NO_DROPOUT, *extra)
    sep = [train(c) for c in _cfgs(over, tmp_path / "sep")]
    pk = train_packed(_cfgs(over, tmp_path / "pk"))
    assert [r.status for r in pk] == ["finished"] * 3 and not any(r.skipped for r in pk)
    for a, b in zip(sep, pk):
        # the same run key and directory layout as an ordinary run: tables and relaunch-skip need nothing new
        assert a.run_dir.relative_to(tmp_path / "sep") == b.run_dir.relative_to(tmp_path / "pk")
        ra, rb = a.record, b.record
        assert ra["run_key"] == rb["run_key"] and ra["meta"] == rb["meta"]
        assert {**ra["config"], "output": None} == {**rb["config"], "output": None}  # output.root differs
        assert set(ra) <= set(rb) and ra["data"] == rb["data"] and ra["params"] == rb["params"]
        assert rb["env"]["packed"] == {"k": 3, "folds": [0, 1, 2]} and rb["status"] == "finished"
        assert [e.keys() for e in ra["epochs"]] == [e.keys() for e in rb["epochs"]]
        for ea, eb in zip(_strip(ra["epochs"]), _strip(rb["epochs"])):
            assert eb == pytest.approx(ea, rel=1e-4, abs=1e-4)
        assert set(ra["final"]) == set(rb["final"])
        assert rb["final"]["test_loss"] == pytest.approx(ra["final"]["test_loss"], rel=1e-4)
        sa, sb = load_latest(a.run_dir), load_latest(b.run_dir)
        assert sa.keys() == sb.keys() and sa["epoch"] == sb["epoch"] == 2
        for key, v in sa["model"].items():  # weights and BN running statistics
            torch.testing.assert_close(sb["model"][key], v, rtol=1e-4, atol=1e-4, msg=key)
        assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
        assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
        for idx, st in sa["optimizer"]["state"].items() if grads else ():
            torch.testing.assert_close(sb["optimizer"]["state"][idx]["momentum_buffer"], st["momentum_buffer"],
                                       rtol=1e-3, atol=1e-3)
        la, lb = (torch.load(r.run_dir / "test_logits.pt") for r in (a, b))
        assert torch.equal(la["labels"], lb["labels"])
        torch.testing.assert_close(lb["logits"], la["logits"], rtol=1e-3, atol=1e-3)
        model, cfg = load_model(b.run_dir)  # a packed member's checkpoint is an ordinary checkpoint
        assert cfg.protocol.fold == ra["meta"]["fold"] and cfg.protocol.pack == 1
        assert sum(p.numel() for p in model.parameters()) == ra["params"]


def test_runner_packs_folds_and_relaunch_skips(fake_cifar10, tiny_overrides, tmp_path):
    over = _over(tiny_overrides, fake_cifar10, "experiment=table1/crelu", f"output.root={tmp_path}")
    cfg = compose_config([*over, "protocol.job=fold1", "protocol.pack=2"])
    assert [c.protocol.fold for c in member_configs(resolve_job(cfg))] == [1, 2]
    res = run(cfg)
    assert res.status == "finished" and res.record["meta"]["fold"] == 1
    fold2 = res.run_dir.parent.parent / "kfold-2"
    recs = [load_record(p) for p in fold2.iterdir()]
    assert len(recs) == 1 and recs[0].status == "finished" and recs[0].data["env"]["packed"]["folds"] == [1, 2]
    assert not (res.run_dir.parent.parent / "kfold-0").exists()
    # relaunches: the packed job, an ordinary job of a packed fold, and a pack clipped at the last fold all skip
    assert run(cfg).skipped
    assert run(compose_config([*over, "protocol.job=fold2"])).skipped
    assert run(compose_config([*over, "protocol.job=fold2", "protocol.pack=5"])).skipped
    # a Single job ignores pack and keeps its ordinary run key
    single = compose_config([*over, "protocol.job=single", "protocol.pack=2", "protocol.holdout=80"])
    plain = compose_config([*over, "protocol.job=single", "protocol.holdout=80"])
    assert packed_mod.unpacked_config(single).protocol.pack == 1
    assert resolve_run_dir(packed_mod.unpacked_config(resolve_job(single))) == resolve_run_dir(resolve_job(plain))


def test_interrupted_pack_resumes_to_identical_result(fake_cifar10, tiny_overrides, tmp_path, monkeypatch):
    over = _over(tiny_overrides, fake_cifar10, "experiment=table1/crelu")  # dropout on: the shared RNG resumes
    ref = train_packed(_cfgs(over, tmp_path / "ref", folds=(0, 1)))
    real = run_mod.train_epoch
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated preemption")
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "train_epoch", dying)
    cfgs = _cfgs(over, tmp_path / "resumed", folds=(0, 1))
    with pytest.raises(KeyboardInterrupt):
        train_packed(cfgs)
    dirs = [packed_mod.resolve_run_dir(c)[0] for c in cfgs]
    assert [load_record(d).status for d in dirs] == ["interrupted"] * 2
    assert [load_latest(d)["epoch"] for d in dirs] == [1, 1]
    monkeypatch.setattr(run_mod, "train_epoch", real)
    res = train_packed(cfgs)
    assert [r.resumed_from_epoch for r in res] == [1, 1] and [r.status for r in res] == ["finished"] * 2
    for a, b in zip(ref, res):
        assert torch.equal(torch.load(a.run_dir / "test_logits.pt")["logits"],
                           torch.load(b.run_dir / "test_logits.pt")["logits"])
        assert _strip(a.record["epochs"]) == _strip(b.record["epochs"])


def test_unmatched_checkpoints_fall_back_to_ordinary_runs(fake_cifar10, tiny_overrides, tmp_path, monkeypatch):
    over = _over(tiny_overrides, fake_cifar10, "experiment=table1/baseline")
    cfgs = _cfgs(over, tmp_path, folds=(0, 1))
    done = train(cfgs[0])  # fold 0 already finished by an ordinary run: skipped, fold 1 alone trains normally
    res = train_packed(cfgs)
    assert res[0].skipped and res[0].record["finished_at"] == done.record["finished_at"]
    assert res[1].status == "finished" and "packed" not in res[1].record["env"]


def test_diverged_members_are_recorded_and_raised(fake_cifar10, tiny_overrides, tmp_path):
    over = _over(tiny_overrides, fake_cifar10, "experiment=table1/baseline", "optim.lr=1e30", "schedule.epochs=3")
    cfgs = _cfgs(over, tmp_path, folds=(0, 1))
    with pytest.raises(DivergedError, match="NaN/Inf"):
        train_packed(cfgs)
    for c in cfgs:
        d = packed_mod.resolve_run_dir(c)[0]
        rec = load_record(d)
        assert rec.status == "failed" and rec.data["failure"]["type"] == "DivergedError"
        assert not (d / "test_logits.pt").exists()


def test_pack_config_validation(fake_cifar10, tiny_overrides, tmp_path):
    over = _over(tiny_overrides, fake_cifar10, "experiment=table1/baseline")
    with pytest.raises(ValueError, match="run_dir"):
        member_configs(compose_config([*over, "protocol.fold=0", "protocol.pack=2", f"output.run_dir={tmp_path}"]))
    with pytest.raises(ValueError, match="pack must be"):
        member_configs(compose_config([*over, "protocol.fold=0", "protocol.pack=0"]))
    a = compose_config([*over, "protocol.fold=0"])
    b = compose_config([*over, "protocol.fold=1", "train.seed=3"])
    with pytest.raises(ValueError, match="differ only in protocol.fold"):
        train_packed([a, b])


@pytest.mark.slow
def test_packed_folds_survive_a_mid_epoch_sigkill(fake_cifar10, tiny_overrides, tmp_path):
    """A real SIGKILL after a mid-epoch checkpoint of a packed job; the relaunch resumes bit-identically."""
    import os
    import signal
    import subprocess
    import sys
    import time

    over = [o for o in _over(tiny_overrides, fake_cifar10, "experiment=table1/crelu")
            if not o.startswith(("train.max_steps_per_epoch", "schedule.epochs"))]
    over += ["protocol.fold=0", "protocol.pack=2", "train.max_steps_per_epoch=12", "schedule.epochs=2",
             "train.checkpoint_every_steps=2", "train.threads=1", "model.width_scale=0.25", "train.quiet=true"]

    def command(out):
        return [sys.executable, "-m", "crelu.train", *over, f"output.root={out}",
                f"hydra.run.dir={tmp_path / 'hydra'}"]

    ref = subprocess.run(command(tmp_path / "ref"), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    dirs = [resolve_run_dir(c)[0] for c in member_configs(compose_config([*over, f"output.root={tmp_path / 'k'}"]))]
    assert len(dirs) == 2
    proc = subprocess.Popen(command(tmp_path / "k"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        state = load_latest(dirs[1]) if (dirs[1] / "checkpoint.pt").exists() else None
        if state is not None and state.get("mid_epoch") and state["mid_epoch"]["progress"]["step"] >= 4:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = (state["epoch"], state["mid_epoch"]["progress"]["step"])
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_at is not None, "the packed job finished before a mid-epoch checkpoint could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert all(load_record(d).status == "running" for d in dirs)  # SIGKILL: no chance to write anything
    again = subprocess.run(command(tmp_path / "k"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for d in dirs:
        ref_dir = tmp_path / "ref" / d.relative_to(tmp_path / "k")
        a, b = load_record(ref_dir), load_record(d)
        assert b.status == "finished" and b.data["resumes"][0]["epoch"] == killed_at[0]
        assert _strip(a.epochs) == _strip(b.epochs) and a.final == b.final
        assert torch.equal(torch.load(ref_dir / "test_logits.pt")["logits"], torch.load(d / "test_logits.pt")["logits"])


def test_a_pack_killed_between_its_members_checkpoints_resumes_as_one(fake_cifar10, tiny_overrides, tmp_path,
                                                                      monkeypatch):
    over = [o for o in _over(tiny_overrides, fake_cifar10, "experiment=table1/crelu")
            if not o.startswith("train.max_steps_per_epoch")]
    over += ["train.max_steps_per_epoch=6", "train.checkpoint_every_steps=2"]
    ref = train_packed(_cfgs(over, tmp_path / "ref", folds=(0, 1)))
    real = run_mod.save_checkpoint

    def dies_after_save(n):  # the n-th save of a launch is member 0's when n is odd: member 1 is left behind
        calls = {"n": 0}

        def save(run_dir, state):
            calls["n"] += 1
            real(run_dir, state)
            if calls["n"] == n:
                raise KeyboardInterrupt("killed between the members' checkpoint writes")
        return save

    cfgs = _cfgs(over, tmp_path / "k", folds=(0, 1))
    dirs = [resolve_run_dir(c)[0] for c in cfgs]
    for n in (5, 1):  # the second kill lands right after the resumed pack's first write
        monkeypatch.setattr(run_mod, "save_checkpoint", dies_after_save(n))
        with pytest.raises(KeyboardInterrupt):
            train_packed(cfgs)
        pos = [(s["epoch"], (s.get("mid_epoch") or {}).get("progress", {}).get("step"))
               for s in map(load_latest, dirs)]
        assert pos[0] != pos[1]  # one checkpoint apart
    monkeypatch.setattr(run_mod, "save_checkpoint", real)
    res = train_packed(cfgs)
    assert all("packed" in r.record["env"] for r in res)  # trained as a pack again, not one after another
    for a, b in zip(ref, res):
        assert _strip(a.record["epochs"]) == _strip(b.record["epochs"])
        assert torch.equal(torch.load(a.run_dir / "test_logits.pt")["logits"],
                           torch.load(b.run_dir / "test_logits.pt")["logits"])
