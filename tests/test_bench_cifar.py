"""benchmarks/bench_cifar.py on CPU with tiny settings: every row is there, numbers are consistent, JSON is atomic."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from crelu.config import compose_config
from crelu.models import build_model
from crelu.models.flops import train_step_flops

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cifar.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_cifar", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peak_table():
    bench = _load()
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("cpu") is None


@pytest.mark.parametrize("peak", [None, 2.0])
def test_bench_cpu_tiny_run_writes_consistent_rows(tmp_path, capsys, peak):
    bench = _load()
    out = tmp_path / "bench" / "cifar.json"
    args = ["--device", "cpu", "--models", "convpool_c:crelu,vgg:crelu_conv1_3_5", "--batch", "4", "--steps", "2",
            "--warmup", "1", "--repeats", "1", "--width-scale", "0.0625", "--pack", "2", "--threads", "1",
            "--out", str(out)]
    result = bench.main(args + (["--peak-tflops", str(peak)] if peak else []))
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    assert not list(out.parent.glob(".*tmp*"))
    assert data["device"] == "cpu" and data["torch"] and "cuda" in data and data["peak_tflops"] == peak
    assert data["settings"]["batch"] == 4 and data["settings"]["pack"] == 2 and data["settings"]["amp"] == "fp32"
    rows = data["results"]
    assert [(r["family"], r["row"], r["variant"]) for r in rows] == [
        (f, r, v) for f, r in [("convpool_c", "crelu"), ("vgg", "crelu_conv1_3_5")]
        for v in ("suite", "reference", "packed", "sequential")]
    for fam, exp in [("convpool_c", "table1/crelu"), ("vgg", "table2/crelu_conv1_3_5")]:
        model = build_model(compose_config([f"experiment={exp}", "model.width_scale=0.0625"]).model, 10)
        fpi = train_step_flops(model, 32, batch=2) / 2
        mine = {r["variant"]: r for r in rows if r["family"] == fam}
        for r in mine.values():
            assert r["flops_per_image"] == fpi > 0
            assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
            assert r["tflops"] == pytest.approx(r["images_per_s"] * fpi / 1e12)
            assert r["mfu"] == (pytest.approx(r["tflops"] / peak) if peak else None)
        assert mine["suite"]["ratio"] == pytest.approx(
            mine["suite"]["images_per_s"] / mine["reference"]["images_per_s"])
        assert mine["packed"]["ratio"] == pytest.approx(
            mine["packed"]["images_per_s"] / mine["sequential"]["images_per_s"])
        assert mine["packed"]["k"] == mine["sequential"]["k"] == 2
    text = capsys.readouterr().out
    assert "vs reference" in text and "vs sequential" in text and ("n/a" in text) == (peak is None)


def test_bench_rejects_unknown_model(tmp_path):
    with pytest.raises(SystemExit, match="unknown model"):
        _load().main(["--device", "cpu", "--models", "vgg:nope", "--out", str(tmp_path / "x.json")])


def test_measured_matmul_rate_on_cpu():
    import torch

    m = _load().measure_matmul_tflops(torch.device("cpu"), n=128, reps=3, warmup=1)
    assert m["n"] == 128 and m["dtype"] == "float32" and m["reps"] == 3
    assert m["min_s"] <= m["median_s"] <= m["max_s"]
    assert m["tflops"] == pytest.approx(2 * 128**3 / m["median_s"] / 1e12)


def test_bench_compile_and_measured_peak_are_recorded(tmp_path):
    """--compile with the eager backend (Dynamo tracing, no code generation) and --measure-peak on the CPU."""
    out = tmp_path / "c.json"
    data = _load().main(["--device", "cpu", "--models", "convpool_c:baseline", "--batch", "4", "--steps", "2",
                         "--warmup", "1", "--repeats", "1", "--width-scale", "0.0625", "--pack", "1", "--threads",
                         "1", "--compile", "--compile-backend", "eager", "--measure-peak", "--out", str(out)])
    assert data["settings"]["compile"] is True and data["settings"]["compile_backend"] == "eager"
    assert data["measured_matmul"]["tflops"] > 0 and data["peak_tflops"] is None  # CPU: no bf16 peak for MFU
    assert [r["variant"] for r in data["results"]] == ["suite", "reference"]
    assert all(r["images_per_s"] > 0 and r["mfu"] is None for r in data["results"])
