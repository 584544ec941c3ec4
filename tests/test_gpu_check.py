"""The GPU evidence kit (scripts/gpu_check.py) in dry mode, its carry helper, and the wheel bootstrap."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.conftest import shared_cifar_root

from crelu.data.synthetic import write_fake_cifar

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "scripts" / "gpu_check.py"
HELPER = REPO / "scripts" / "prepare_gpu_carry.py"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.slow
def test_dry_mode_writes_every_section_with_numbers(tmp_path):
    """GPU_CHECK_DRY=1: the whole kit on the CPU; JSON and markdown hold every section, measured."""
    out = tmp_path / "out"
    real = shared_cifar_root()
    env = {k: v for k, v in os.environ.items() if k not in ("CRELU_DATA_ROOT", "GPU_CHECK_DRY")}
    env.update(GPU_CHECK_DRY="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(KIT), "--out", str(out), "--carry", str(tmp_path / "no_carry"), "--budget-s", "400"]
    if real is not None:
        cmd += ["--data-root", str(real)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=580, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads((out / "gpu_check.json").read_text())
    assert r["dry"] is True and r["device_type"] == "cpu" and r["errors"] == {}
    assert set(r["sections"]) == {"peak", "bench", "profile", "compile", "train", "estimate"}
    assert r["versions"]["torch"] and r["versions"]["hydra"] and r["created_at"].startswith("20")
    sec = r["sections"]

    assert _finite(sec["peak"]["matmul"]["tflops"]) and sec["peak"]["matmul"]["tflops"] > 0
    assert r["peak_tflops"] == sec["peak"]["matmul"]["tflops"] and sec["peak"]["copy"]["gb_per_s"] > 0

    rows = sec["bench"]["rows"]
    assert [(x["family"], x["row"]) for x in rows] == [("convpool_c", "baseline"), ("convpool_c", "crelu"),
                                                        ("vgg", "baseline")]
    k = r["settings"]["pack"]
    for x in rows:
        for v in ("suite", "plain", f"packed{k}"):
            assert x[f"{v}_images_per_s"] > 0 and _finite(x[f"{v}_tflops"])
            assert x[f"{v}_tflops"] == pytest.approx(x[f"{v}_images_per_s"] * x["flops_per_image"] / 1e12)
            assert x[f"{v}_mfu"] == pytest.approx(x[f"{v}_tflops"] / r["peak_tflops"])
        assert x["suite_vs_plain"] == pytest.approx(x["suite_images_per_s"] / x["plain_images_per_s"])
        assert x["packed_time_ratio"] == pytest.approx(k * x["suite_images_per_s"] / x[f"packed{k}_images_per_s"])
    comp = sec["compile"]["rows"][0]
    assert comp["backend"] == "eager" and comp["compiled_images_per_s"] > 0
    assert comp["speedup"] == pytest.approx(comp["compiled_images_per_s"] / rows[0]["suite_images_per_s"])

    prof = sec["profile"]["models"][0]
    assert (prof["family"], prof["row"]) == ("convpool_c", "baseline")
    assert all(_finite(prof[f]) for f in ("host_ms_per_step", "syncs_per_step", "kernels_per_step",
                                          "wall_ms_per_step_unprofiled", "device_busy_fraction"))
    assert prof["syncs_per_epoch_fixed"] >= 1  # the epoch's final read-back of its loss sums
    assert prof["top"] and prof["top"][0]["ms"] > 0 and prof["top"][0]["name"].startswith("aten::")
    trace = json.loads(gzip.decompress((out / r["trace"]["file"]).read_bytes()))
    assert trace["traceEvents"]

    tr = sec["train"]
    assert tr["data"]["source"] == ("given" if real is not None else "generated")
    assert tr["plan"]["epochs"] >= 1 and tr["plan"]["pack"] >= 1
    done = [c for c in tr["configs"] if c["status"] == "finished"]
    assert done, tr["configs"]
    assert {c["lr"] for c in tr["configs"]} <= {0.25, 0.1, 0.05, 0.01}
    for c in done:
        assert c["folds_finished"] == c["pack"] == len(c["folds"])
        assert 0 <= c["val_error_mean"] <= 100 and 0 <= c["test_error_mean"] <= 100
        assert all(f["epochs"] == tr["plan"]["epochs"] for f in c["folds"])
        assert f"optim.lr={c['lr']}" in c["overrides"] and "protocol=kfold" in c["overrides"]
    assert set(tr["best_lr"]) <= {"baseline", "crelu"} and tr["best_lr"]

    est = sec["estimate"]["tables"]["table1"]["folds_packed"]
    assert est["returncode"] == 0 and est["gpu_hours"] > 0 and est["jobs"] == 10  # 5 rows x 2 datasets, fold0
    assert f"protocol.pack={k}" in est["command"] and "--tflops" in est["command"]

    md = (out / "gpu_check.md").read_text()
    assert r["device_name"] in md and "DRY MODE" in md
    for head in ("## 1.", "## 2.", "## 3.", "## 4."):
        assert head in md
    assert f"{rows[0]['suite_images_per_s']:,.0f}" in md


def test_carry_roundtrip_and_printed_call(tmp_path, capsys):
    """The helper re-packs a CIFAR folder byte for byte; the kit unpacks and checks it against the manifest."""
    helper, kit = _load(HELPER, "prepare_gpu_carry"), _load(KIT, "gpu_check")
    data = write_fake_cifar(tmp_path / "data", "cifar10", n_train=50, n_test=20, seed=3)
    carry = tmp_path / "carry"
    res = helper.main(["--out", str(carry), "--data-root", str(data), "--no-wheels"])
    manifest = json.loads((carry / "MANIFEST.json").read_text())
    assert manifest["data"]["train_images"] == 50 and manifest["data"]["test_images"] == 20
    assert len(manifest["data"]["files"]) == 7 and "wheels" not in manifest
    assert res["travel"]["carry"] == sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    assert res["travel"]["total"] == res["travel"]["tree"] + res["travel"]["carry"] > 0
    assert res["inside_checkout"] is False  # a tmp folder: the call could not send it, and the helper says so
    call = json.loads((carry / "RUN_CALL.json").read_text())
    assert call == res["run"] and call["carry"] == ["carry"] and call["timeout_s"] <= 600
    assert len(call["command"]) <= 2000 and "scripts/gpu_check.py --out $OUT" in call["command"]
    text = capsys.readouterr().out
    assert "outside the checkout" in text and call["command"] in text

    got = kit.unpack_cifar_archive(carry, tmp_path / "unpacked")
    assert got["sha256_checked"] and got["train_images"] == 50
    for rel in manifest["data"]["files"]:
        assert (tmp_path / "unpacked" / rel).read_bytes() == (data / rel).read_bytes()

    # unchanged source: the archive is kept; a changed manifest digest is caught on unpacking
    stamp = (carry / "cifar10.tar.xz").stat().st_mtime_ns
    helper.main(["--out", str(carry), "--data-root", str(data), "--no-wheels"])
    assert (carry / "cifar10.tar.xz").stat().st_mtime_ns == stamp
    manifest["data"]["files"]["cifar-10-batches-py/test_batch"]["sha256"] = "0" * 64
    (carry / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="test_batch: sha256"):
        kit.unpack_cifar_archive(carry, tmp_path / "again")


def test_download_commands_target_the_device_python():
    helper = _load(HELPER, "prepare_gpu_carry")
    dl, wheel = helper.download_commands(Path("w"))
    assert dl[3:5] == ["download", "--no-deps"] and "--only-binary=:all:" in dl
    assert dl[dl.index("--python-version") + 1] == "3.12" and "manylinux2014_x86_64" in dl
    assert {a.split("==")[0] for a in dl if "==" in a} == {"hydra-core", "omegaconf", "PyYAML", "packaging"}
    assert wheel[-1] == "antlr4-python3-runtime==4.9.3" and "wheel" in wheel  # sdist only on PyPI: built here


def _fake_wheel(folder: Path, name: str, value: int) -> Path:
    """A minimal pure-Python wheel (module ``name`` with ``VALUE = value``), installable offline."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {f"{name}.py": f"VALUE = {value}\n",
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n"}
    record = [f"{k},sha256={hashlib.sha256(v.encode()).hexdigest()},{len(v)}" for k, v in files.items()]
    files[f"{name}-1.0.dist-info/RECORD"] = "\n".join([*record, f"{name}-1.0.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return path


def test_bootstrap_installs_only_missing_modules_from_carried_wheels(tmp_path):
    """A module the machine lacks is installed from <carry>/wheels with pip --no-index; present ones are not."""
    carry = tmp_path / "carry"
    _fake_wheel(carry / "wheels", "gpucheck_fake_mod", 41)
    _fake_wheel(carry / "wheels", "json", 0)  # json is importable: its wheel must be left alone
    code = (f"import sys; sys.path.insert(0, {str(KIT.parent)!r}); import gpu_check, json\n"
            f"from pathlib import Path\n"
            f"info = gpu_check.bootstrap(Path({str(carry)!r}), {{'gpucheck_fake_mod': 'gpucheck_fake_mod', "
            f"'json': 'json'}}, site=Path({str(tmp_path / 'site')!r}))\n"
            "import gpucheck_fake_mod\n"
            "print(json.dumps({'value': gpucheck_fake_mod.VALUE, **info}))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    info = json.loads(p.stdout.strip().splitlines()[-1])
    assert info["value"] == 41 and info["missing_modules"] == ["gpucheck_fake_mod"]
    assert info["installed_wheels"] == ["gpucheck_fake_mod-1.0-py3-none-any.whl"]
    assert info["added_paths"][0] == str(tmp_path / "site")

    code_missing = (f"import sys; sys.path.insert(0, {str(KIT.parent)!r}); import gpu_check\n"
                    f"from pathlib import Path\n"
                    f"gpu_check.bootstrap(Path({str(tmp_path / 'empty')!r}), {{'gpucheck_other_mod': 'x'}})\n")
    p = subprocess.run([sys.executable, "-c", code_missing], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "gpucheck_other_mod" in p.stderr and "prepare_gpu_carry" in p.stderr


def test_per_step_separates_step_and_epoch_costs():
    kit = _load(KIT, "gpu_check")
    base = dict(wall_ms=0.0, device_busy_ms=0.0, kernel_ms=0.0, host_self_ms=0.0, sync_wait_ms=0.0, dtoh=0, htod=0,
                items=0, top_kind="device kernels")

    def summ(steps):  # 40 kernels and 1 sync per step, plus 3 syncs and 2 read-backs once per epoch
        return {**base, "kernels": 40 * steps, "syncs": steps + 3, "dtoh": 2, "device_busy_ms": 1.5 * steps + 0.5,
                "wall_ms": 2.0 * steps + 4.0}

    m = kit.per_step({10: summ(10), 30: summ(30)}, 10, 30)
    assert m["kernels_per_step"] == 40 and m["kernels_per_epoch_fixed"] == 0
    assert m["syncs_per_step"] == 1 and m["syncs_per_epoch_fixed"] == 3
    assert m["dtoh_per_step"] == 0 and m["dtoh_per_epoch_fixed"] == 2
    assert m["device_busy_ms_per_step"] == pytest.approx(1.5)
    assert m["wall_ms_per_step_profiled"] == pytest.approx(2.0) and m["sync_counted"] == "CUDA sync API calls"


@pytest.mark.slow
def test_real_cifar_subset_carry_fits_one_device_call(tmp_path):
    """The real CIFAR-10 subset, re-packed, plus the checkout stays under the 64 MiB a call may send."""
    real = shared_cifar_root()
    if real is None:
        pytest.skip("no real CIFAR-10 subset beside the repo (../shared/data or $CRELU_SHARED_DATA)")
    helper = _load(HELPER, "prepare_gpu_carry")
    res = helper.main(["--out", str(tmp_path / "carry"), "--data-root", str(real), "--no-wheels"])
    data = res["manifest"]["data"]
    assert data["train_images"] == 10000 and data["test_images"] == 10000
    assert data["archive_bytes"] < 50 * 2**20 and res["travel"]["total"] < res["travel"]["limit"]


@pytest.mark.parametrize("left_s, want_pack", [(600.0, 10), (200.0, 2), (60.0, 1)])
def test_training_plan_fits_the_time_left(left_s, want_pack):
    """The lr grid's 8 configs are planned to end inside the time left; folds are packed as far as it allows."""
    from types import SimpleNamespace

    kit = _load(KIT, "gpu_check")
    st = dict(kit.SETTINGS["gpu"])
    rates = {("convpool_c", "baseline"): {"suite_images_per_s": 40000.0, "packed10_images_per_s": 80000.0},
             ("convpool_c", "crelu"): {"suite_images_per_s": 22000.0, "packed10_images_per_s": 45000.0}}
    fake = SimpleNamespace(st=st, rates=rates, budget=SimpleNamespace(left=lambda: left_s))
    plan = kit.Kit.plan_training(fake, 10000, 10000, 10, 0.5)
    assert plan["pack"] == want_pack and 1 <= plan["epochs"] <= st["train_max_epochs"]
    total = len(kit.LR_GRID) * sum(plan["predicted_s"].values())
    assert total <= left_s - st["reserve_s"]
    if want_pack > 1:
        assert plan["epochs"] >= st["train_min_epochs"]
    ms = plan["milestones"]
    assert ms == sorted(set(ms)) and all(1 <= m < plan["epochs"] for m in ms)
    if plan["epochs"] >= 7:
        assert len(ms) == 3  # the paper's three drops, scaled


def test_markdown_of_a_partial_run_names_what_is_missing():
    """A run cut short or with failures still renders: failed, skipped and unmeasured parts are named."""
    kit = _load(KIT, "gpu_check")
    r = {"device_name": "NVIDIA H200", "device_type": "cuda", "created_at": "2026-12-01T00:00:00+00:00",
         "dry": False, "versions": {"torch": "2.11.0"}, "git": {"commit": "abc"}, "budget_s": 420, "elapsed_s": 400,
         "settings": {"pack": 10, "batch": 128, "width_scale": 1.0}, "errors": {"bench:vgg:baseline": "OOM"},
         "timings": {"bench": 100.0},
         "sections": {
             "bench": {"rows": [
                 {"family": "convpool_c", "row": "baseline", "suite_images_per_s": 1000.0, "suite_tflops": 1.2,
                  "suite_mfu": 0.0015, "plain_images_per_s": 500.0, "suite_vs_plain": 2.0, "flops_per_image": 1.2e9,
                  "notes": {"packed10": "RuntimeError"}},
                 {"family": "convpool_c", "row": "crelu", "skipped": "time budget"},
                 {"family": "vgg", "row": "baseline", "error": "OOM"}]},
             "profile": {"steps": [10, 30], "models": [{"family": "convpool_c", "row": "baseline",
                                                        "error": "RuntimeError: CUPTI"}], "note": ""},
             "train": {"data": {"source": "carried", "root": "/tmp/x"}, "train_images": 10000, "test_images": 10000,
                       "folds": 10, "plan": {"pack": 2, "epochs": 12, "schedule": "multistep"},
                       "configs": [{"row": "baseline", "lr": 0.01, "pack": 2, "epochs": 12,
                                    "status": "skipped: time budget"}]},
             "estimate": {"tables": {"table1": {"single": {"error": "TimeoutError: "}}}, "note": ""}}}
    md = kit.render_markdown(r)
    assert "NVIDIA H200" in md and "DRY MODE" not in md
    assert "not measured: time budget" in md and "not measured: OOM" in md and "not measured: RuntimeError: CUPTI" in md
    assert "| convpool_c:baseline | 1,000 | 1.20 | 0.1% | 500 | 2.00x |" in md
    assert "skipped: time budget" in md and "TimeoutError" in md and "- bench:vgg:baseline: OOM" in md
