"""The static HTML report: tables with intervals, claims, curves, tuning, figures; checked in a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crelu.report import build_report, write_report
from crelu.results.record import RunRecord

LABELS = np.arange(20) % 10


def _run(root: Path, row: str, seed: int, fold: int, err: float, *, rng, wandb=True) -> None:
    cfg = {"protocol": {"name": "kfold", "folds": 3, "fold": fold}}
    epochs = [{"epoch": e, "train_loss": 2.3 - 0.3 * e - 0.01 * fold, "val_error": 90 - 5 * e,
               "test_error": (91 - 5 * e) if e % 2 == 0 else None} for e in (1, 2, 3)]
    rec = RunRecord(root / row / f"s{seed}" / f"f{fold}", {
        "status": "finished", "config": cfg, "final": {"test_error": err}, "finished_at": "2025-01-01",
        "epochs": epochs, "params": 1000, "artifacts": {"test_logits": "test_logits.pt"},
        "meta": {"table": "table1", "row": row, "profile": "smoke", "dataset": "cifar10", "protocol": "kfold",
                 "fold": fold, "seed": seed, "config_hash": f"h-{row}"},
        **({"wandb": {"id": f"wb{row}{seed}{fold}"}} if wandb else {}),
    })
    rec.save()
    torch.save({"logits": torch.from_numpy(rng.normal(size=(20, 10)).astype(np.float32)),
                "labels": torch.from_numpy(LABELS)}, rec.run_dir / "test_logits.pt")


@pytest.fixture()
def smoke_results(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    runs, results = tmp_path / "runs" / "smoke", tmp_path / "results"
    for seed in (0, 1):
        for fold in range(3):
            _run(runs, "baseline", seed, fold, 80.0 + seed + fold, rng=rng)
            _run(runs, "crelu", seed, fold, 70.0 + seed - fold, rng=rng, wandb=False)
    (results / "tuning").mkdir(parents=True)
    pd.DataFrame({"table": "table1", "row": ["baseline"] * 4 + ["crelu"] * 4, "dataset": "cifar10",
                  "lr": [0.25, 0.1, 0.05, 0.01] * 2, "init_scale": 1.0,
                  "val_error": [np.nan, 60.0, 55.0, 70.0, np.nan, np.nan, 50.0, 52.0],
                  "diverged": [True, False, False, False, True, True, False, False]}
                 ).to_csv(results / "tuning" / "table1.csv", index=False)
    (results / "figures").mkdir()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(results / "figures" / "pairing.png")
    plt.close(fig)
    return runs, results


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_has_every_part_and_marks_what_is_missing(smoke_results):
    runs, results = smoke_results
    page, summary = build_report(runs, results, profile="smoke", tables=["table1", "table2"])
    assert "these numbers are meaningless" in page and 'id="banner"' in page
    # Table 1: both rows with seed intervals and the paper's value; other rows missing
    assert "Table 1: ConvPool-CNN-C on CIFAR" in page
    assert re.search(r"81\.50 ± \d+\.\d\d \(2 seeds\)", page)  # baseline: seed Averages 81 and 82
    assert "[75.15, 87.85]" in page  # 81.5 ± t(0.975, 1)·0.5
    assert "<code>wbbaseline00</code>" in page and "wbcrelu" not in page  # wandb ids where the records have them
    assert page.count('class="missing"') > 10  # the rows without runs
    # the claims: CReLU beats the baseline on the paired per-fold errors (6 pairs)
    assert "CReLU beats the ReLU baseline (Average)" in page and "<b>reproduced</b>" in page
    # Table 2 has no runs: shown as missing, not left out
    assert "no finished runs for table2" in page and "Missing: " in page
    assert "tuning/table2.csv" in page  # no tuning for table2
    assert "picked lr" in page and "0.05" in page  # baseline's best lr (55.0)
    assert "pairing.png" in page and "Parameter counts" in page and "685,834" in page
    imgs = _images(page)
    assert len(imgs) == 3 and all(  # curves (CIFAR-10), tuning, the figure
        i.startswith(b"\x89PNG") and len(i) > 1000 for i in imgs)
    assert summary[0].startswith("12 run record(s)")


@pytest.mark.slow
def test_cli_writes_the_page(smoke_results, tmp_path):
    runs, results = smoke_results
    out = tmp_path / "r.html"
    p = subprocess.run([sys.executable, "-m", "crelu.report", "--profile", "smoke", "--runs", str(runs),
                        "--results", str(results), "--out", str(out), "--tables", "table1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"wrote {out}" in p.stdout and out.read_text().startswith("<!DOCTYPE html>")


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render_in_browser(html_path: Path, tmp_path: Path) -> tuple[str, Path]:
    """Load the page in headless Chromium: the DOM after load (with each image's decoded size) and a screenshot."""
    exe = _browser()
    if exe is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    probe = tmp_path / "probe.html"  # a copy with a tiny script that records each <img>'s decoded size
    probe.write_text(html_path.read_text().replace(
        "</body>", "<script>addEventListener('load',()=>document.body.setAttribute('data-imgs',"
                   "[...document.images].map(i=>i.naturalWidth+'x'+i.naturalHeight).join(',')))</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([exe, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1400,2400", html_path.as_uri()],
                   capture_output=True, text=True, timeout=180)
    return dom.stdout, shot


def assert_rendered(dom: str, shot: Path) -> None:
    assert "<table" in dom and "Table 1: ConvPool-CNN-C on CIFAR" in dom
    sizes = re.search(r'data-imgs="([^"]*)"', dom)
    assert sizes, "the page's load script did not run"
    dims = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split(",") if s]
    assert dims and all(w > 50 and h > 50 for w, h in dims), dims  # every image decoded and non-empty
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(smoke_results, tmp_path):
    runs, results = smoke_results
    out = tmp_path / "report.html"
    write_report(out, runs=runs, results=results, profile="smoke", tables=["table1"])
    dom, shot = render_in_browser(out, tmp_path)
    assert_rendered(dom, shot)
    assert "these numbers are meaningless" in dom


def test_tuning_uses_the_files_picks_and_marks_diverged_points(tmp_path):
    from crelu.report.html import tuning_html

    path = tmp_path / "table1.csv"  # the columns `make tune` writes (crelu.protocols.tuning.COLUMNS)
    pd.DataFrame({"table": "table1", "row": ["crelu"] * 3, "dataset": "cifar10", "lr": [0.1, 0.05, 0.01],
                  "init_scale": 0.5, "val_error": ["", 41.0, 40.0], "val_loss": ["", 1.2, 1.1],
                  "diverged": ["True", "False", "False"], "picked": ["False", "True", "False"], "epochs": 3,
                  "run_dir": "x"}).to_csv(path, index=False)
    page = tuning_html(path, "table1")
    # the file's pick (0.05) is shown even where another lr has a lower error; the diverged point is counted
    assert "<td>0.5</td><td>0.05</td><td>41.00</td>" in page and "1 diverged" in page
    assert len(_images(page)) == 1
    assert "Missing: " in tuning_html(tmp_path / "none.csv", "table1")
