"""Learning rates picked on validation, as the paper did: ``make tune T=table1`` then ``make table1``.

The paper keeps Springenberg et al.'s (2015) recipe for ConvPool-CNN-C, whose learning rate is picked from
{0.25, 0.1, 0.05, 0.01} on validation data; our rows' configs list that grid as ``optim.lr_grid``.  Tuning is
a sweep of *tune* jobs (``protocol.job=tune``): every row × dataset × learning rate trains on the training set
minus the Single protocol's stratified hold-out (``protocol.holdout``) and is scored on that hold-out.  The
test set is never looked at.  The budget is the profile's schedule (the paper profile: the full 350 epochs; pass
``ARGS="schedule.epochs=N"`` for a cheaper, documented budget); a run whose loss becomes NaN/Inf is recorded as
diverged and never picked.

``python -m crelu.protocols.tuning summarize table1 --runs results/runs/paper --out results/tuning`` writes
``tuning/table1.csv`` (one line per point: table, row, dataset, lr, init_scale, val_error, val_loss, diverged,
picked, run_dir) and ``table1.md``.  A table sweep given ``optim.lr_from=<that csv>`` (``make table1`` passes it
when the file exists) trains every row at its own picked learning rate (and init scale): the value is written
into ``optim.lr`` of the job's config before its run key is computed, so it shows in every ``run.json``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from crelu.config.schema import ConfigError
from crelu.results.record import RecordError, iter_records

COLUMNS = ["table", "row", "dataset", "lr", "init_scale", "val_error", "val_loss", "diverged", "picked", "epochs",
           "run_dir"]


def tuning_points(runs_root: str | Path, table: str, profile: str | None = None) -> tuple[list[dict], list[str]]:
    """One point per (row, dataset, lr, init_scale) from the tune runs under ``runs_root`` (newest wins).

    Returns the points and notes on records that could not be used (unfinished, crashed, unreadable).
    """
    best: dict[tuple, tuple[str, dict]] = {}
    notes = []
    for rec in iter_records(runs_root):
        if isinstance(rec, RecordError):
            notes.append(f"unreadable record skipped: {rec}")
            continue
        m = rec.meta
        if m.get("protocol") != "tune" or m.get("table") != table or (profile and m.get("profile") != profile):
            continue
        cfg = rec.data.get("config") or {}
        lr, scale = cfg.get("optim", {}).get("lr"), cfg.get("model", {}).get("init_scale")
        failure = rec.data.get("failure") or {}
        diverged = rec.status == "failed" and failure.get("type") == "DivergedError"
        if rec.status != "finished" and not diverged:
            notes.append(f"{rec.run_dir}: {rec.status} tune run not counted")
            continue
        final = rec.final if rec.status == "finished" else {}
        point = {"table": table, "row": m.get("row"), "dataset": m.get("dataset"), "lr": lr, "init_scale": scale,
                 "val_error": final.get("val_error"), "val_loss": final.get("val_loss"), "diverged": diverged,
                 "picked": False, "epochs": len(rec.epochs), "run_dir": str(rec.run_dir)}
        if not diverged and not _finite(point["val_error"]):
            point["diverged"] = True  # a finished run whose hold-out error is not a number
        key = (point["row"], point["dataset"], lr, scale)
        when = str(rec.data.get("finished_at") or rec.data.get("started_at") or "")
        if key not in best or when > best[key][0]:
            best[key] = (when, point)
    points = sorted((p for _, p in best.values()), key=lambda p: (p["row"], p["dataset"], -float(p["lr"])))
    for p in pick(points).values():
        p["picked"] = True
    return points, notes


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(float(v))


def pick(points: list[dict]) -> dict[tuple[str, str], dict]:
    """The point with the lowest hold-out error for each (row, dataset); ties go to the lower hold-out loss."""
    out: dict[tuple[str, str], dict] = {}
    for p in points:
        if p["diverged"] or not _finite(p["val_error"]):
            continue
        k = (p["row"], p["dataset"])
        score = (float(p["val_error"]), float(p["val_loss"]) if _finite(p["val_loss"]) else math.inf)
        if k not in out or score < (float(out[k]["val_error"]), float(out[k]["val_loss"] or math.inf)):
            out[k] = p
    return out


def write_tuning(points: list[dict], out_dir: str | Path, table: str, notes: list[str] = ()) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{table}.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(points)
    lines = [f"# Learning rates of {table}, picked on the Single hold-out (never the test set)", "",
             "| row | dataset | lr | init scale | hold-out error (%) | hold-out loss | |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        err = "diverged" if p["diverged"] else f"{float(p['val_error']):.2f}"
        loss = "" if p["diverged"] or not _finite(p["val_loss"]) else f"{float(p['val_loss']):.4f}"
        lines.append(f"| {p['row']} | {p['dataset']} | {p['lr']} | {p['init_scale']} | {err} | {loss} | "
                     f"{'**picked**' if p['picked'] else ''} |")
    lines += ["", *[f"* {n}" for n in notes]]
    (out / f"{table}.md").write_text("\n".join(lines) + "\n")
    return path


def read_picks(path: str | Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(table, row, dataset) -> {"lr", "init_scale"}`` of the picked points of a tuning CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {(r["table"], r["row"], r["dataset"]): {"lr": float(r["lr"]), "init_scale": float(r["init_scale"])}
            for r in rows if r.get("picked") in ("True", "true", "1")}


def apply_tuned(cfg: DictConfig) -> DictConfig:
    """Put the picked learning rate (and init scale) of ``optim.lr_from`` into ``cfg`` (tune jobs: unchanged)."""
    src = cfg.optim.lr_from
    if not src or cfg.protocol.name == "tune":
        return cfg
    path = Path(src)
    if not path.is_file():
        raise ConfigError(f"optim.lr_from={src}: no such tuning file (make tune T={cfg.experiment.table} writes it)")
    key = (cfg.experiment.table, cfg.experiment.row, cfg.dataset.name)
    picks = read_picks(path)
    if key not in picks:
        raise ConfigError(f"optim.lr_from={src} has no picked learning rate for {key[0]}/{key[1]} on {key[2]} "
                          f"(it covers {sorted({f'{t}/{r}/{d}' for t, r, d in picks})}); re-run make tune")
    cfg = cfg.copy()
    cfg.optim.lr = picks[key]["lr"]
    cfg.model.init_scale = picks[key]["init_scale"]
    return cfg


def lr_grid(table: str) -> list[float]:
    """The ``optim.lr_grid`` the rows of ``table`` declare (they must agree)."""
    from crelu.config.compose import compose_config, config_dir

    rows = sorted(p.stem for p in (config_dir() / "experiment" / table).glob("*.yaml"))
    if not rows:
        raise ConfigError(f"no rows under configs/experiment/{table}/")
    grids = {tuple(compose_config([f"experiment={table}/{r}"]).optim.lr_grid) for r in rows}
    if len(grids) != 1:
        raise ConfigError(f"the rows of {table} declare different optim.lr_grid values: {sorted(grids)}")
    grid = list(grids.pop())
    if not grid:
        raise ConfigError(f"the rows of {table} declare no optim.lr_grid (their recipe fixes the learning rate); "
                          "pass LR_GRID=a,b,c to tune anyway")
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m crelu.protocols.tuning", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grid", help="print the table's learning-rate grid as a Hydra sweep list")
    g.add_argument("table")
    s = sub.add_parser("summarize", help="tune runs -> <out>/<table>.csv and .md, with the picks")
    s.add_argument("table")
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--profile", default=None)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "grid":
            print(",".join(f"{v:g}" for v in lr_grid(a.table)))
            return 0
        points, notes = tuning_points(a.runs, a.table, a.profile)
    except ConfigError as e:
        print(f"crelu-tune: error: {e}", file=sys.stderr)
        return 2
    if not points:
        print(f"crelu-tune: error: no tune runs of {a.table} under {a.runs} (run make tune T={a.table} first)",
              file=sys.stderr)
        return 2
    path = write_tuning(points, a.out, a.table, notes)
    picks = pick(points)
    for (row, ds), p in sorted(picks.items()):
        print(f"{a.table} {row:>16} {ds:>9}: lr {p['lr']:g} (hold-out error {float(p['val_error']):.2f}%)")
    missing = sorted({(p["row"], p["dataset"]) for p in points} - set(picks))
    for row, ds in missing:
        print(f"{a.table} {row:>16} {ds:>9}: every learning rate diverged; nothing picked")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
