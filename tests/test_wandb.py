"""wandb logging through real training runs in offline mode, read back from the run files without any network."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from crelu.config import compose_config
from crelu.protocols.runner import run
from crelu.results.record import load_record
from crelu.training.loggers import make_logger, offline_runs, read_offline_run, run_name, wandb_id

pytest.importorskip("wandb")

FLAT = ("profile", "table", "row", "dataset", "protocol", "fold", "seed", "lr")


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline wandb whose every file (runs, settings, caches) lands under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    return tmp_path / "wandb"


def _read_finished(run_dir: Path, wait_s: float = 20.0) -> dict:
    """The offline run, once wandb has written its exit record (the file may lag run.finish() under load)."""
    deadline = time.monotonic() + wait_s
    while True:
        r = read_offline_run(run_dir)
        if r["exit_code"] is not None or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def _runs_by_id(wandb_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in offline_runs(wandb_dir):
        r = _read_finished(d)
        out.setdefault(r["id"], []).append(r)
    return out


def _assert_summary_is_final(summary: dict, final: dict) -> None:
    assert final, "run.json has no final metrics"
    for k, v in final.items():
        assert k in summary, f"summary lacks final.{k}"
        assert summary[k] == (pytest.approx(v, rel=0, abs=0) if isinstance(v, float) else v), k


def test_single_phases_are_two_readable_wandb_runs(fake_cifar10, tiny_overrides, tmp_path, wandb_env):
    over = ["experiment=table1/crelu", f"dataset.root={fake_cifar10}", *tiny_overrides, "protocol=single",
            "protocol.holdout=80", "logger=wandb", f"logger.dir={wandb_env}", "optim.lr=0.05"]
    res = run(compose_config(over))
    runs = _runs_by_id(wandb_env)
    assert len(runs) == 2  # phase 1 and phase 2: two run directories, two wandb runs
    by_name = {rs[0]["name"]: rs[0] for rs in runs.values()}
    assert set(by_name) == {"table1 crelu cifar10 single phase1 seed 0", "table1 crelu cifar10 single phase2 seed 0"}
    for phase in ("phase1", "phase2"):
        r = by_name[f"table1 crelu cifar10 single {phase} seed 0"]
        rec = load_record(res.run_dir / phase)
        assert r["group"] == "paper/table1/crelu/cifar10"
        assert r["job_type"] == f"single-{phase}"
        assert r["exit_code"] == 0
        assert {k: r["config"][k] for k in FLAT} == {
            "profile": "paper", "table": "table1", "row": "crelu", "dataset": "cifar10", "protocol": "single",
            "fold": None, "seed": 0, "lr": 0.05}
        assert r["config"]["phase"] == phase
        assert r["config"]["config"]["model"] == rec.data["config"]["model"]  # the full config, nested
        assert r["id"] == wandb_id(res.run_dir / phase, rec.data["started_at"]) == rec.data["wandb"]["id"]
        assert rec.data["wandb"]["name"] == r["name"] and rec.data["wandb"]["group"] == r["group"]
        assert [h["_step"] for h in r["history"]] == list(range(1, len(rec.epochs) + 1))
        _assert_summary_is_final(r["summary"], rec.final)
    assert load_record(res.run_dir).data["wandb"]["id"] == by_name["table1 crelu cifar10 single phase2 seed 0"]["id"]


@pytest.mark.slow
def test_resume_continues_the_wandb_run_and_overwrite_starts_a_new_one(fake_cifar10, tiny_overrides, wandb_env):
    over = ["experiment=table1/baseline", f"dataset.root={fake_cifar10}", *tiny_overrides, "protocol=kfold",
            "protocol.fold=1", "protocol.folds=3", "logger=wandb", f"logger.dir={wandb_env}"]
    res = run(compose_config(over))
    rec = json.loads((res.run_dir / "run.json").read_text())
    rec["status"] = "running"  # as if killed after the last checkpoint, before the final evaluation
    (res.run_dir / "run.json").write_text(json.dumps(rec))
    resumed = run(compose_config(over))
    assert resumed.resumed_from_epoch == 2 and not resumed.skipped
    runs = _runs_by_id(wandb_env)
    assert len(runs) == 1  # one wandb run, written by two processes' worth of offline folders
    (only,) = runs.values()
    assert len(only) == 2 and only[0]["name"] == "table1 baseline cifar10 fold 1 seed 0"
    assert only[0]["config"]["fold"] == 1 and only[0]["group"] == "paper/table1/baseline/cifar10"
    _assert_summary_is_final(only[1]["summary"], load_record(res.run_dir).final)

    time.sleep(1.1)  # an attempt is named by its start second: make the overwrite start in another one
    again = run(compose_config([*over, "output.overwrite=true"]))
    assert again.run_dir == res.run_dir and not again.skipped
    runs2 = _runs_by_id(wandb_env)
    assert len(runs2) == 2 and set(runs) < set(runs2)  # the overwrite is a new wandb run


def test_names_for_every_protocol_and_profile():
    base = {"table": "table1", "row": "crelu", "dataset": "cifar10", "seed": 0, "profile": "paper"}
    assert run_name({**base, "protocol": "kfold", "fold": 0}) == "table1 crelu cifar10 fold 0 seed 0"
    assert run_name({**base, "protocol": "single", "phase": "phase1"}) == "table1 crelu cifar10 single phase1 seed 0"
    assert run_name({**base, "protocol": "kfold", "fold": 3, "profile": "smoke"}) == (
        "table1 crelu cifar10 fold 3 seed 0 [smoke]")
    assert run_name({"table": None, "row": None, "name": "mine", "dataset": "cifar100", "protocol": "full",
                     "seed": 2, "profile": "paper"}) == "mine cifar100 full seed 2"


def test_ids_depend_on_directory_and_attempt_only(tmp_path):
    a = wandb_id(tmp_path / "x", "2026-01-01T00:00:00+00:00")
    assert a == wandb_id(tmp_path / "x", "2026-01-01T00:00:00+00:00") and len(a) == 16
    assert a != wandb_id(tmp_path / "y", "2026-01-01T00:00:00+00:00")
    assert a != wandb_id(tmp_path / "x", "2026-01-01T00:00:01+00:00")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_online_without_a_server_falls_back_to_offline_quickly(tmp_path, monkeypatch, wandb_env):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    cfg = SimpleNamespace(name="wandb", project="p", entity=None, mode="online", dir=str(wandb_env), tags=[])
    meta = {"table": "table1", "row": "avr", "dataset": "cifar100", "protocol": "kfold", "fold": 2, "seed": 1,
            "profile": "smoke", "phase": None}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = make_logger(cfg, meta, "table1/avr/cifar100/kfold-2/seed1-abc", {"optim": {"lr": 0.1}},
                             run_dir=tmp_path / "r", attempt="t0")
        elapsed = time.perf_counter() - t0
        logger.log({"test_error": 50.0}, step=1)
        logger.summary({"test_error": 42.0})
        logger.finish(0)
    ours = [w for w in caught if "wandb" in str(w.message)]
    assert len(ours) == 1 and "offline" in str(ours[0].message) and "unreachable" in str(ours[0].message)
    assert elapsed < 30, f"fallback took {elapsed:.1f} s"
    (r,) = (_read_finished(d) for d in offline_runs(wandb_env))
    assert r["id"] == wandb_id(tmp_path / "r", "t0") and r["group"] == "smoke/table1/avr/cifar100"
    assert r["summary"]["test_error"] == 42.0 and r["config"]["lr"] == 0.1 and r["config"]["fold"] == 2


@pytest.mark.slow
def test_online_with_a_silent_server_is_bounded_by_the_init_timeout(tmp_path, monkeypatch, wandb_env):
    """The server accepts connections but never answers: wandb.init gives up after WANDB_INIT_TIMEOUT (~20 s)."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []

    def accept_and_say_nothing():
        try:
            while True:
                held.append(srv.accept())
        except OSError:  # the socket was closed at the end of the test
            pass

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{srv.getsockname()[1]}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    cfg = SimpleNamespace(name="wandb", project="p", entity=None, mode="online", dir=str(wandb_env), tags=[])
    meta = {"table": "table2", "row": "vgg", "dataset": "cifar10", "protocol": "full", "seed": 0, "profile": "paper"}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = make_logger(cfg, meta, "k", {}, run_dir=tmp_path / "r", attempt="a")
        elapsed = time.perf_counter() - t0
        logger.summary({"test_error": 7.5})
        logger.finish(0)
    srv.close()
    ours = [w for w in caught if "wandb" in str(w.message)]
    assert len(ours) == 1 and "online init failed" in str(ours[0].message) and logger.mode == "offline"
    assert held, "wandb never contacted the server"
    assert elapsed < 45, f"online init without an answering server took {elapsed:.1f} s"
    (r,) = (_read_finished(d) for d in offline_runs(wandb_env))
    assert r["summary"].get("test_error") == 7.5, r
    assert r["name"] == "table2 vgg cifar10 full seed 0"


def test_wandb_sync_picks_the_offline_runs_of_one_profile(tmp_path, wandb_env):
    cfg = SimpleNamespace(name="wandb", project="p", entity=None, mode="offline", dir=str(wandb_env), tags=[])
    ids = {}
    for profile, fold in (("smoke", 0), ("paper", 0)):
        meta = {"table": "table1", "row": "crelu", "dataset": "cifar10", "protocol": "kfold", "fold": fold,
                "seed": 0, "profile": profile}
        logger = make_logger(cfg, meta, f"k{fold}", {}, run_dir=tmp_path / profile / str(fold), attempt="a")
        logger.finish(0)
        ids[(profile, fold)] = logger.id
    script = Path(__file__).resolve().parents[1] / "scripts" / "wandb_sync.py"
    res = subprocess.run([sys.executable, str(script), "--profile", "smoke", "--dir", str(wandb_env), "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    listed = [line for line in res.stdout.splitlines() if line.startswith("would sync: ")]
    assert [line.rsplit("-", 1)[-1] for line in listed] == [ids["smoke", 0]]
    assert "1 offline run(s) of profile 'smoke'" in res.stdout
