"""train(cfg) end to end on CPU: run records, logits, skip/resume, determinism, divergence, Single protocol."""

import json

import numpy as np
import pytest
import torch
from tests.conftest import shared_cifar_root

from crelu.config import compose_config
from crelu.data.cifar import load_cifar
from crelu.protocols.runner import reach_target, run
from crelu.results.record import load_record
from crelu.training import DivergedError, train
from crelu.training import run as trainer_mod


def _cfg(root, over, *extra):
    return compose_config(["experiment=table1/crelu", f"dataset.root={root}", *over, *extra])


def test_train_writes_a_complete_run_record(fake_cifar10, tiny_overrides):
    res = train(_cfg(fake_cifar10, tiny_overrides))
    assert res.status == "finished" and not res.skipped
    rec = load_record(res.run_dir)
    d = rec.data
    assert d["status"] == "finished" and d["schema_version"] == 1
    assert d["meta"]["table"] == "table1" and d["meta"]["row"] == "crelu" and d["meta"]["dataset"] == "cifar10"
    assert d["run_key"].startswith("table1/crelu/cifar10/full/seed0-")
    assert str(res.run_dir).endswith(d["run_key"]) and "/paper/" in str(res.run_dir)
    assert d["config"]["model"]["activation_layers"] == {"crelu": [1, 2, 3, 4, 5, 6, 7, 8]}
    assert d["params"] == sum(p.numel() for p in trainer_mod.build_model(
        compose_config(["experiment=table1/crelu", "model.width_scale=0.125"]).model, 10).parameters())
    assert len(d["epochs"]) == 2 and [e["lr"] for e in d["epochs"]] == pytest.approx([0.01, 0.001])
    for key in ("train_loss", "train_error", "test_loss", "test_error", "images_per_s", "steps"):
        assert key in d["epochs"][-1]  # the test set is evaluated every train.eval_test_every epochs and at the end
    assert "test_error" not in d["epochs"][0] and d["epochs"][0]["steps"] == 3
    f = d["final"]
    assert 0 <= f["test_error"] <= 100 and f["stop_reason"] == "schedule_end" and f["epoch"] == 2
    assert d["env"]["device"] == "cpu" and d["wall_time_s"] > 0 and d["data"]["train_size"] == 400
    assert "commit" in d["git"]
    logits = torch.load(res.run_dir / "test_logits.pt")
    assert logits["logits"].shape == (100, 10) and logits["labels"].shape == (100,)
    wrong = (logits["logits"].argmax(1) != logits["labels"]).double().mean().item() * 100
    assert wrong == pytest.approx(f["test_error"], abs=1e-6)
    assert not list(res.run_dir.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_finished_run_is_skipped_on_relaunch(fake_cifar10, tiny_overrides):
    cfg = _cfg(fake_cifar10, tiny_overrides)
    first = train(cfg)
    mtime = (first.run_dir / "run.json").stat().st_mtime_ns
    again = train(cfg)
    assert again.skipped and again.final == first.final
    assert (first.run_dir / "run.json").stat().st_mtime_ns == mtime


def test_interrupted_run_resumes_to_identical_result(fake_cifar10, tiny_overrides, tmp_path, monkeypatch):
    over = [o for o in tiny_overrides if not o.startswith("output.root")]
    ref = train(_cfg(fake_cifar10, over, f"output.run_dir={tmp_path / 'ref'}"))

    real_epoch = trainer_mod.train_epoch
    calls = {"n": 0}

    def dying_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated preemption")
        return real_epoch(*a, **k)

    monkeypatch.setattr(trainer_mod, "train_epoch", dying_epoch)
    cfg = _cfg(fake_cifar10, over, f"output.run_dir={tmp_path / 'resumed'}")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert load_record(tmp_path / "resumed").status == "interrupted"
    monkeypatch.setattr(trainer_mod, "train_epoch", real_epoch)
    res = train(cfg)
    assert res.resumed_from_epoch == 1 and res.status == "finished"
    a = torch.load(ref.run_dir / "test_logits.pt")["logits"]
    b = torch.load(res.run_dir / "test_logits.pt")["logits"]
    assert torch.equal(a, b)
    strip = lambda es: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in es]  # noqa: E731
    assert strip(ref.record["epochs"]) == strip(res.record["epochs"])


def test_same_seed_same_result_other_seed_other_result(fake_cifar10, tiny_overrides, tmp_path):
    over = [o for o in tiny_overrides if not o.startswith("output.root")]
    a = train(_cfg(fake_cifar10, over, f"output.run_dir={tmp_path / 'a'}"))
    b = train(_cfg(fake_cifar10, over, f"output.run_dir={tmp_path / 'b'}"))
    c = train(_cfg(fake_cifar10, over, f"output.run_dir={tmp_path / 'c'}", "train.seed=1"))
    la, lb, lc = (torch.load(r.run_dir / "test_logits.pt")["logits"] for r in (a, b, c))
    assert torch.equal(la, lb) and not torch.equal(la, lc)


def test_nan_loss_stops_records_failure_and_keeps_checkpoint(fake_cifar10, tiny_overrides):
    cfg = _cfg(fake_cifar10, tiny_overrides, "optim.lr=1e30", "schedule.epochs=3")
    with pytest.raises(DivergedError, match="NaN/Inf"):
        train(cfg)
    run_dir = trainer_mod.resolve_run_dir(cfg)[0]
    d = json.loads((run_dir / "run.json").read_text())
    assert d["status"] == "failed" and d["failure"]["type"] == "DivergedError"
    assert not (run_dir / "test_logits.pt").exists()


def test_kfold_run_validates_on_its_fold(fake_cifar10, tiny_overrides):
    res = run(_cfg(fake_cifar10, tiny_overrides, "protocol=kfold", "protocol.folds=4", "protocol.fold=2"))
    d = res.record
    assert d["meta"]["protocol"] == "kfold" and d["meta"]["fold"] == 2
    assert d["data"]["train_size"] == 300 and d["data"]["val_size"] == 100
    assert "val_error" in d["epochs"][-1] and "/kfold-2/" in str(res.run_dir)


def test_single_protocol_runs_both_phases_in_one_job(fake_cifar10, tiny_overrides):
    cfg = _cfg(fake_cifar10, tiny_overrides, "protocol=single", "protocol.holdout=80")
    res = run(cfg)
    top = load_record(res.run_dir)
    p1, p2 = load_record(res.run_dir / "phase1"), load_record(res.run_dir / "phase2")
    assert top.meta["phase"] is None and p1.meta["phase"] == "phase1" and p2.meta["phase"] == "phase2"
    assert p1.data["data"]["train_size"] == 320 and p2.data["data"]["train_size"] == 400
    proto = top.data["protocol"]
    assert proto["L_star"] == pytest.approx(p1.final["train_eval_loss"])
    assert p2.data["protocol"]["target_loss"] == pytest.approx(proto["L_star"])
    reached_at = [e["epoch"] for e in p2.epochs if e["val_loss"] <= proto["L_star"]]
    assert proto["reached"] == bool(reached_at)
    assert proto["stop_epoch"] == (reached_at[0] if reached_at else 2) == len(p2.epochs)
    assert proto["train_error_full"] == p2.final["train_eval_error"]
    assert top.final["test_error"] == p2.final["test_error"]
    assert run(cfg).skipped


def test_single_stops_at_the_first_epoch_below_target(fake_cifar10, tiny_overrides, tmp_path):
    cfg = _cfg(fake_cifar10, tiny_overrides, "protocol=single", "protocol.holdout=80", "schedule.epochs=5",
               f"output.run_dir={tmp_path / 'p2'}")
    res = train(cfg, phase="phase2", stop_when=reach_target(1e9))
    assert res.final["stop_reason"] == "target_loss_reached" and len(res.record["epochs"]) == 1


@pytest.mark.skipif(shared_cifar_root() is None, reason="real CIFAR-10 subset (../shared/data) not present")
def test_training_on_the_real_cifar10_subset(tiny_overrides):
    cfg = compose_config(["experiment=table1/baseline", f"dataset.root={shared_cifar_root()}", *tiny_overrides,
                          "dataset.test_subset=200"])
    res = train(cfg)
    fp = res.record["data"]["fingerprint"]
    x, y = load_cifar("cifar10", shared_cifar_root(), train=True)  # counts from the data itself
    assert res.record["data"]["train_size"] == len(y) == fp["train"]["images"]
    assert res.record["data"]["test_size"] == 200
    assert fp["train"]["class_counts"] == np.bincount(y, minlength=10).tolist()
    assert fp["train"]["official"] is False  # a subset: its checksums are not the official ones
    assert fp["test"]["official"] is True and fp["test"]["images"] == 10000  # the official test batch
    assert res.record["epochs"][0]["train_loss"] < 10 and 0 <= res.final["test_error"] <= 100
