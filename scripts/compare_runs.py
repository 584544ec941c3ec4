#!/usr/bin/env python
"""Compare the metrics of two run trees record by record (e.g. one sweep before and after a refactor).

    python scripts/compare_runs.py results/runs/smoke /tmp/before/runs/smoke

Pairs ``run.json`` files by their path below each root and compares every per-epoch and final metric (losses,
errors, learning rates, stop reasons, Single's L*), ignoring times, throughput and keys only one side has (a
newer version may record more).  Prints one line per differing record and exits 1 if any differs or either side
has records the other lacks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRIC_SUFFIXES = ("loss", "error", "lr", "epoch", "L_star", "reached", "stop_reason", "stop_epoch")


def _metrics(d: dict) -> dict:
    return {k: v for k, v in d.items() if any(k == m or k.endswith(m) for m in METRIC_SUFFIXES)}


def _common(a: dict, b: dict) -> tuple[dict, dict]:
    keys = set(a) & set(b)
    return {k: a[k] for k in keys}, {k: b[k] for k in keys}


def compare(a_root: Path, b_root: Path) -> tuple[list[str], int]:
    fa = {p.relative_to(a_root): p for p in a_root.rglob("run.json")}
    fb = {p.relative_to(b_root): p for p in b_root.rglob("run.json")}
    out = [f"only in {a_root}: {k}" for k in sorted(set(fa) - set(fb))]
    out += [f"only in {b_root}: {k}" for k in sorted(set(fb) - set(fa))]
    for k in sorted(set(fa) & set(fb)):
        ra, rb = (json.loads(f[k].read_text()) for f in (fa, fb))
        why = []
        if len(ra.get("epochs", [])) != len(rb.get("epochs", [])):
            why.append(f"{len(ra['epochs'])} vs {len(rb['epochs'])} epochs")
        for i, (ea, eb) in enumerate(zip(ra.get("epochs", []), rb.get("epochs", []))):
            x, y = _common(_metrics(ea), _metrics(eb))
            if x != y:
                why.append(f"epoch {i + 1}: {x} vs {y}")
                break
        x, y = _common(_metrics(ra.get("final") or {}), _metrics(rb.get("final") or {}))
        if x != y:
            why.append(f"final: {x} vs {y}")
        pa = {kk: v for kk, v in (ra.get("protocol") or {}).items() if kk != "phase1"}
        pb = {kk: v for kk, v in (rb.get("protocol") or {}).items() if kk != "phase1"}
        if _common(pa, pb)[0] != _common(pa, pb)[1]:
            why.append(f"protocol: {pa} vs {pb}")
        if why:
            out.append(f"{k}: " + "; ".join(why))
    return out, len(set(fa) & set(fb))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    a = ap.parse_args()
    diffs, n = compare(a.a, a.b)
    for line in diffs:
        print(line)
    print(f"{n} records compared, {len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
