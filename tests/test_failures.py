"""Honest failures: every known fault of the real CLI (``python -m crelu.train``) ends with exit status 2 and
one line ``crelu-train: error: ...`` naming the config key or the file, no traceback, and nothing lost.

The CLI runs are independent subprocesses; the quick ones are launched together by one module fixture and each
fault is asserted by its own test.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from crelu.config import ConfigError, compose_config
from crelu.config.checks import check_steps, check_values
from crelu.data.synthetic import write_fake_cifar

TINY = ["model.width_scale=0.125", "schedule.epochs=2", "schedule.milestones=[1]", "train.batch_size=32",
        "train.eval_batch_size=100", "train.max_steps_per_epoch=3", "train.quiet=true", "train.threads=1",
        "dataset.download=false"]
ERROR = "crelu-train: error: "


def cli(args: list[str], env: dict, *, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    pre = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
    return subprocess.run([sys.executable, "-m", "crelu.train", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pre)


def error_line(p: subprocess.CompletedProcess) -> str:
    """The one error line of a failed run (exactly one, and no traceback)."""
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(ERROR)]
    assert len(lines) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return lines[0][len(ERROR):]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated CIFAR-10 (good, truncated, garbage) and an environment whose outputs stay under tmp."""
    base = tmp_path_factory.mktemp("faults")
    good = write_fake_cifar(base / "good", "cifar10", n_train=400, n_test=100, seed=1)
    trunc = base / "trunc"
    shutil.copytree(good, trunc)
    batch = trunc / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    garbage = base / "garbage"
    shutil.copytree(good, garbage)
    (garbage / "cifar-10-batches-py" / "test_batch").write_bytes(os.urandom(3000))
    blocker = base / "a_file"
    blocker.write_text("not a folder")
    env = {**os.environ, "CRELU_DATA_ROOT": str(good), "CRELU_HYDRA_DIR": str(base / "hydra")}
    env.pop("CRELU_CIFAR100_ROOT", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return {"base": base, "good": good, "trunc": trunc, "garbage": garbage, "blocker": blocker, "env": env}


# name -> (overrides, extra env, pattern the one line must match)
QUICK = {
    "batch_size_zero": (["train.batch_size=0"], {}, r"^train\.batch_size=0 must be >= 1$"),
    "batch_larger_than_subset": (["dataset.train_subset=20"], {},
                                 r"^train\.batch_size=32 is larger than the 20 training images .*"
                                 r"dataset\.train_subset"),
    "batch_larger_than_train_set": (["train.batch_size=1000"], {},
                                    r"train\.batch_size=1000 is larger than the 400 training images"),
    "epochs_zero": (["schedule.epochs=0"], {}, r"^schedule\.epochs=0"),
    "width_scale_zero": (["model.width_scale=0"], {}, r"^model\.width_scale=0\.0 must be a finite number > 0$"),
    "lr_negative": (["optim.lr=-0.1"], {}, r"^optim\.lr=-0\.1 must be a finite number > 0$"),
    "lr_zero": (["optim.lr=0"], {}, r"^optim\.lr=0\.0 must be a finite number > 0$"),
    "train_subset_negative": (["dataset.train_subset=-5"], {}, r"^dataset\.train_subset=-5 must be >= 1"),
    "milestones_unsorted": (["schedule.milestones=[3,1]"], {},
                            r"^schedule\.milestones=\[3, 1\] must be strictly increasing"),
    "milestones_zero": (["schedule.milestones=[0]"], {}, r"^schedule\.milestones=\[0\]: every milestone"),
    "unknown_experiment": (["experiment=table1/nope"], {},
                           r"^unknown experiment 'table1/nope' .*available experiment options: table1/avr, "
                           r"table1/baseline, table1/crelu, table1/crelu_half, table1/double$"),
    "truncated_batch": (["dataset.root={trunc}"], {},
                        r"^CIFAR10 file {trunc}/cifar-10-batches-py/data_batch_3 is unreadable \(UnpicklingError"),
    "garbage_batch": (["dataset.root={garbage}"], {},
                      r"^CIFAR10 file {garbage}/cifar-10-batches-py/test_batch is unreadable"),
    "cifar100_missing": (["dataset=cifar100"], {"CRELU_CIFAR100_ROOT": "{base}/no_cifar100"},
                         r"^CIFAR100 not found: looked in {base}/no_cifar100/cifar-100-python .*"
                         r"\(CRELU_CIFAR100_ROOT={base}/no_cifar100, which takes precedence over CRELU_DATA_ROOT\)"),
    "output_root_unwritable": (["output.root={blocker}/runs"], {},
                               r"^cannot write {blocker}/runs/\S+: Not a directory \(choose a writable output "
                               r"folder: output\.root=DIR or output\.run_dir=DIR\)$"),
    "run_dir_unwritable": (["output.run_dir={blocker}/run"], {},
                           r"^cannot write {blocker}/run: Not a directory"),
    "hydra_dir_unwritable": (["hydra.run.dir={blocker}/hydra"], {},
                             r"^cannot create the output folder {blocker}/hydra \(hydra\.run\.dir\)"),
}


def _fill(text: str, w: dict) -> str:
    return text.format(**{k: str(v) for k, v in w.items() if isinstance(v, Path)})


@pytest.fixture(scope="module")
def quick_runs(world):
    def one(name):
        over, env, _ = QUICK[name]
        args = [*TINY, *[_fill(o, world) for o in over], f"output.root={world['base'] / 'runs' / name}"]
        if any(o.startswith("output.root=") for o in over):
            args = [*TINY, *[_fill(o, world) for o in over]]
        return name, cli(args, {**world["env"], **{k: _fill(v, world) for k, v in env.items()}})

    with ThreadPoolExecutor(4) as ex:
        return dict(ex.map(one, QUICK))


@pytest.mark.slow  # 17 CLI launches (run 4 at a time by the fixture)
@pytest.mark.parametrize("name", list(QUICK))
def test_fault_is_one_line_and_exit_2(name, quick_runs, world):
    p = quick_runs[name]
    assert p.returncode == 2, p.stderr[-3000:]
    pattern = QUICK[name][2]
    pattern = pattern.format(**{k: re.escape(str(v)) for k, v in world.items() if isinstance(v, Path)})
    assert re.search(pattern, error_line(p)), error_line(p)
    if name == "width_scale_zero":
        assert "width_mult" not in p.stderr
    records = list((world["base"] / "runs" / name).rglob("run.json"))
    assert records == []  # refused before a run record could claim anything


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_names_the_key(world, tmp_path):
    p = cli([*TINY, "train.device=cuda", f"output.root={tmp_path}"], world["env"])
    assert p.returncode == 2
    assert error_line(p) == ("train.device=cuda but CUDA is not available on this machine; use train.device=auto "
                             "(or cpu)")


def test_full_error_flag_keeps_the_traceback(world, tmp_path):
    p = cli([*TINY, "train.batch_size=0", f"output.root={tmp_path}"], {**world["env"], "HYDRA_FULL_ERROR": "1"})
    assert p.returncode == 2
    assert "Traceback" in p.stderr and "ConfigError" in p.stderr
    assert p.stderr.rstrip().endswith(f"{ERROR}train.batch_size=0 must be >= 1")


@pytest.mark.slow  # two CLI runs with training
def test_file_size_limit_on_checkpoint_is_one_line_and_loses_nothing(world, tmp_path):
    run = tmp_path / "run"
    p = cli([*TINY, f"output.run_dir={run}"], world["env"], fsize=64 * 1024)  # run.json fits, checkpoint not
    assert p.returncode == 2, p.stderr[-3000:]
    assert error_line(p) == (f"cannot write {run}/checkpoint.pt: file-size limit of {64 * 1024} bytes reached "
                             "(ulimit -f) or disk full; nothing was written")
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "failed" and rec["final"] == {}  # the record says what happened, claims nothing
    assert not list(run.glob(".*.tmp-*"))  # the half-written temporary file was removed
    again = cli([*TINY, f"output.run_dir={run}"], world["env"])  # space is back: the same command finishes
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_file_size_limit_on_the_record_is_one_line(world, tmp_path):
    run = tmp_path / "run"
    p = cli([*TINY, f"output.run_dir={run}", "hydra.output_subdir=null"], world["env"], fsize=3000)
    assert p.returncode == 2, p.stderr[-3000:]
    assert re.fullmatch(rf"cannot write {re.escape(str(run))}/run\.json: File too large: file-size limit of 3000 "
                        r"bytes reached \(ulimit -f\) or disk full; nothing was written", error_line(p))


_SAVE_UNDER_LIMIT = """
import resource, sys, torch
from crelu.training.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))
try:
    save_checkpoint(sys.argv[1], {"epoch": 2, "model": {"w": torch.zeros(100000)}})
except OSError as e:
    print(e)
"""


def test_a_checkpoint_that_does_not_fit_keeps_the_previous_one(tmp_path):
    from crelu.training.checkpoint import CKPT_NAME, load_latest, save_checkpoint

    save_checkpoint(tmp_path, {"epoch": 1, "model": {"w": torch.ones(10)}})
    before = (tmp_path / CKPT_NAME).read_bytes()
    p = subprocess.run([sys.executable, "-c", _SAVE_UNDER_LIMIT, str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert p.stdout.strip() == (f"cannot write {tmp_path / CKPT_NAME}: file-size limit of 50000 bytes reached "
                                "(ulimit -f) or disk full; the previous version is kept")
    assert (tmp_path / CKPT_NAME).read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == [CKPT_NAME]  # not rotated, no temp file left
    assert load_latest(tmp_path)["epoch"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions (the not-a-folder cases cover it)")
def test_read_only_output_folder_is_one_line(world, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        p = cli([*TINY, f"output.root={ro}"], world["env"])
    finally:
        ro.chmod(stat.S_IRWXU)
    assert p.returncode == 2
    assert re.match(rf"cannot write {re.escape(str(ro))}/\S+: Permission denied", error_line(p))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    from crelu.results.io import atomic_torch_save, atomic_write_json
    from crelu.training.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "run.json", {"a": 1})
        atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "test_logits.pt")
        save_checkpoint(tmp_path, {"epoch": 1, "model": {}})
        save_checkpoint(tmp_path, {"epoch": 2, "model": {}})
    finally:
        os.umask(old)
    got = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert got == dict.fromkeys(["run.json", "test_logits.pt", "checkpoint.pt", "checkpoint.prev.pt"], mode)


def test_cli_run_files_are_group_readable(world, tmp_path):
    p = cli([*TINY, f"output.run_dir={tmp_path / 'run'}"], world["env"])
    assert p.returncode == 0, p.stderr[-3000:]
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "run").iterdir() if f.is_file()}
    assert {"run.json", "checkpoint.pt", "test_logits.pt"} <= set(modes)
    mask = os.umask(0)
    os.umask(mask)
    assert all(m == 0o666 & ~mask for n, m in modes.items() if n != ".lock"), modes


@pytest.mark.parametrize(("over", "key"), [
    ("train.eval_batch_size=0", "train.eval_batch_size=0"), ("train.max_steps_per_epoch=0", "max_steps_per_epoch"),
    ("optim.momentum=-1", "optim.momentum=-1.0"), ("schedule.gamma=0", "schedule.gamma=0.0"),
    ("protocol.pack=0", "protocol.pack=0"), ("model.width_mult=0", "model.width_mult=0.0"),
    ("train.device=gpu", "train.device=gpu"), ("dataset.test_subset=0", "dataset.test_subset=0"),
])
def test_value_checks_name_their_key(over, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        check_values(compose_config(["experiment=table1/crelu", over]))


def test_check_steps_after_loading_names_batch_size_and_subset():
    cfg = compose_config(["experiment=table1/crelu", "train.batch_size=64", "dataset.train_subset=500"])
    check_steps(cfg, 64)  # one full batch: fine
    with pytest.raises(ConfigError, match=r"train\.batch_size=64 is larger than the 63 training images of this "
                                          r"run \(dataset\.train_subset=500\)"):
        check_steps(cfg, 63)
    check_steps(compose_config(["experiment=table1/crelu", "train.batch_size=64", "train.drop_last=false"]), 1)


def test_milestones_past_the_end_are_a_warning_not_an_error(caplog):
    check_values(compose_config(["experiment=table1/crelu", "schedule.epochs=3"]))  # paper milestones 200..300
    assert "schedule.milestones [200, 250, 300] are >= schedule.epochs=3" in caplog.text
