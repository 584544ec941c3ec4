"""Render the reproduction report as one static HTML page (see :mod:`crelu.report`)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crelu.results.io import atomic_write_text
from crelu.results.record import RunRecord
from crelu.tables import TABLES, RunIndex, build_table
from crelu.tables.cells import Cell, Table
from crelu.tables.claims import TEST_DESCRIPTION, ClaimResult, check_claims
from crelu.tables.reference import PaperReference
from crelu.tables.render import DATASET_TITLES, fmt_diff, fmt_ours, fmt_paper
from crelu.tables.rows import ROWS

__all__ = ["TUNING_COLUMNS", "build_report", "write_report"]

TUNING_COLUMNS = ["table", "row", "dataset", "lr", "init_scale", "val_error", "diverged"]
CURVE_KEYS = (("train_loss", "train loss"), ("val_error", "validation error %"), ("test_error", "test error %"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1300px;color:#222;
     padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top;white-space:nowrap}
.scroll{overflow-x:auto} td.wrap{white-space:normal;text-align:left;min-width:22em}
th{background:#f3f3f3} td.label{text-align:left;white-space:nowrap}
td.missing{color:#999;background:#fafafa} .ok{color:#17803d;font-weight:bold} .bad{color:#c0392b;font-weight:bold}
.banner{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;font-size:1.05em;margin:1em 0}
.missingpart{background:#f4f4f4;border:1px dashed #aaa;padding:.6em 1em;color:#555}
.notes{font-size:.82em;color:#444} .small{font-size:.8em;color:#555}
.v-reproduced{background:#e3f6e8} .v-not{background:#fbe3e0} .v-inconclusive{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
code{font-size:.9em}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _png(fig) -> str:
    """The figure as an inline base64 PNG ``<img>`` (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _missing(text: str) -> str:
    return f'<div class="missingpart">Missing: {_e(text)}</div>'


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# -- tables -----------------------------------------------------------------------------------------------------


def _ours_html(c: Cell) -> str:
    s = _e(fmt_ours(c))
    return s.replace("✓", '<span class="ok" title="paper value inside our 95% interval">✓</span>').replace(
        "✗", '<span class="bad" title="paper value outside our 95% interval">✗</span>')


def _ci(c: Cell) -> str:
    if c.reference_only or _nan(c.ci_low):
        return ""
    return f"[{c.ci_low:.2f}, {c.ci_high:.2f}]"


def _wandb_cell(t: Table, row: str, ds: str, records: dict[str, RunRecord]) -> str:
    runs = [r for r in t.runs if r["row"] == row and r["dataset"] == ds and r["used"]]
    if not runs:
        return '<td class="missing">no runs</td>'
    dirs = list(dict.fromkeys(r["run_dir"] for r in runs))
    variants = sorted({r["variant"] for r in runs})
    links = []
    for d in dirs:
        rec = records.get(d)
        w = (rec.data.get("wandb") if rec is not None else None) or {}
        if isinstance(w, dict) and w.get("id"):
            url = w.get("url")
            links.append(f'<a href="{_e(url)}">{_e(w["id"])}</a>' if url else f"<code>{_e(w['id'])}</code>")
    text = f"{len(dirs)} run(s); variant(s): " + ", ".join(f"<code>{_e(v)}</code>" for v in variants)
    if links:
        text += "<br>wandb: " + ", ".join(links)
    return f'<td class="wrap small">{text}</td>'


def table_html(t: Table, records: dict[str, RunRecord]) -> str:
    out = []
    ours = [c for c in t.cells if not c.reference_only]
    filled = sum(1 for c in ours if c.n_runs)
    out.append(f'<p class="small">{filled}/{len(ours)} cells of ours have runs.</p>')
    if not filled:
        out.append(_missing(f"no finished runs for {t.name} (run `make {t.name}`)"))
    for ds in dict.fromkeys(c.dataset for c in t.cells):
        out.append(f"<h4>{_e(DATASET_TITLES.get(ds, ds))}</h4><div class='scroll'><table><tr><th>Model</th>")
        for m in t.spec.shown:
            out.append(f'<th colspan="4">{_e(t.header(m))}</th>')
        out.append("<th>runs</th></tr><tr><th></th>" + "<th>ours</th><th>95% CI</th><th>paper</th><th>Δ</th>"
                   * len(t.spec.shown) + "<th></th></tr>")
        for row in dict.fromkeys(c.row for c in t.cells if c.dataset == ds):
            cells = {c.metric: c for c in t.cells if c.dataset == ds and c.row == row}
            first = next(iter(cells.values()))
            out.append(f'<tr><td class="label">{_e(first.label)}</td>')
            for m in t.spec.shown:
                c = cells.get(m)
                if c is None:
                    out.append("<td></td>" * 4)
                    continue
                cls = ' class="missing"' if (not c.reference_only and _nan(c.ours)) else ""
                out.append(f"<td{cls}>{_ours_html(c)}</td><td>{_e(_ci(c))}</td><td>{_e(fmt_paper(c))}</td>"
                           f"<td>{_e(fmt_diff(c))}</td>")
            out.append(_wandb_cell(t, row, ds, records) if not first.reference_only else "<td></td>")
            out.append("</tr>")
        out.append("</table></div>")
    if t.notes:
        out.append('<details class="notes"><summary>Notes (' + str(len(t.notes)) + ")</summary><ul>"
                   + "".join(f"<li>{_e(n)}</li>" for n in t.notes) + "</ul></details>")
    return "\n".join(out)


def claims_html(results: Sequence[ClaimResult]) -> str:
    if not results:
        return ""
    out = ["<div class='scroll'><table><tr><th>claim</th><th>dataset</th><th>metric</th><th>verdict</th>"
           "<th>paper: row vs other</th><th>ours: row [95% CI]</th><th>ours: other [95% CI]</th>"
           "<th>row − other [95% CI]</th><th>p</th><th>pairs</th></tr>"]

    def o(c: Cell | None) -> str:
        if c is None or _nan(c.ours):
            return "—"
        return f"{c.ours:.2f}" + ("" if _nan(c.ci_low) else f" [{c.ci_low:.2f}, {c.ci_high:.2f}]")

    for r in results:
        rel = "<" if r.relation == "lower" else f"≤ + {r.margin:g}"
        cls = {"reproduced": "v-reproduced", "not reproduced": "v-not"}.get(r.verdict, "v-inconclusive")
        d = r.test
        diff = "—" if _nan(d.mean_diff) else f"{d.mean_diff:+.2f}" + (
            "" if _nan(d.low) else f" [{d.low:+.2f}, {d.high:+.2f}]")
        out.append(
            f'<tr class="{cls}"><td class="wrap">{_e(r.claim)}<br><span class="small"><code>{_e(r.row)}</code> '
            f"{_e(rel)} <code>{_e(r.other)}</code> · {_e(r.source)}</span></td>"
            f"<td>{_e(DATASET_TITLES.get(r.dataset, r.dataset))}</td>"
            f'<td>{_e(r.metric)}</td><td title="{_e(r.reason)}"><b>{_e(r.verdict)}</b></td>'
            f"<td>{r.paper_row:.2f} vs {r.paper_other:.2f}</td><td>{_e(o(r.ours_row))}</td>"
            f"<td>{_e(o(r.ours_other))}</td><td>{_e(diff)}</td><td>{'' if _nan(d.p) else f'{d.p:.3g}'}</td>"
            f"<td>{d.n}</td></tr>"
        )
    out.append("</table></div>")
    out.append(f'<p class="small">Test: {_e(TEST_DESCRIPTION)}. Reproduced: the 95% interval of the mean '
               "difference lies wholly on the claimed side (below 0, or below the margin for “on par”); not "
               "reproduced: wholly on the other side; inconclusive: otherwise (or fewer than 2 pairs).</p>")
    return "\n".join(out)


# -- learning curves --------------------------------------------------------------------------------------------


def _curve_runs(t: Table, row: str, ds: str, records: dict[str, RunRecord]) -> list[RunRecord]:
    used = [r for r in t.runs if r["row"] == row and r["dataset"] == ds and r["used"]]
    for metric in ("average", "top1_center", "single_test"):
        dirs = list(dict.fromkeys(r["run_dir"] for r in used if r["metric"] == metric))
        recs = [records[d] for d in dirs if d in records and records[d].data.get("epochs")]
        if recs:
            return recs
    return []


def _mean_curve(recs: list[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray]:
    by_epoch: dict[int, list[float]] = {}
    for r in recs:
        for e in r.data.get("epochs") or []:
            v = e.get(key)
            if isinstance(v, (int, float)) and not math.isnan(v) and isinstance(e.get("epoch"), int):
                by_epoch.setdefault(e["epoch"], []).append(float(v))
    xs = sorted(by_epoch)
    return np.array(xs), np.array([np.mean(by_epoch[x]) for x in xs])


def curves_html(t: Table, records: dict[str, RunRecord]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out = []
    for ds in dict.fromkeys(c.dataset for c in t.cells if not c.reference_only):
        series = {}
        for rd in ROWS[t.name].values():
            recs = _curve_runs(t, rd.row, ds, records)
            if recs:
                series[rd.label] = (recs, {k: _mean_curve(recs, k) for k, _ in CURVE_KEYS})
        title = f"{t.name} · {DATASET_TITLES.get(ds, ds)}"
        if not series:
            out.append(f"<h4>{_e(title)}</h4>" + _missing("no per-epoch records for this table and dataset"))
            continue
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        for ax, (key, name) in zip(axes, CURVE_KEYS):
            drawn = False
            for label, (_recs, curves) in series.items():
                xs, ys = curves[key]
                if len(xs):
                    ax.plot(xs, ys, marker="o", ms=3, label=label)
                    drawn = True
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not drawn:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        axes[0].legend(fontsize=7)
        fig.suptitle(title + " (mean over the shown runs of each row)", fontsize=10)
        out.append(f"<h4>{_e(title)}</h4>" + _png(fig))
        n = {label: len(recs) for label, (recs, _) in series.items()}
        out.append('<p class="small">Runs averaged per row: ' + ", ".join(f"{_e(k)}: {v}" for k, v in n.items())
                   + ".</p>")
    return "\n".join(out)


# -- tuning, params, figures --------------------------------------------------------------------------------------


def tuning_html(path: Path, table: str) -> str:
    if not path.is_file():
        return _missing(f"{path} (run `make tune T={table}` to pick learning rates on validation)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(path)
    missing = [c for c in TUNING_COLUMNS if c not in df.columns]
    if missing:
        return _missing(f"{path} lacks columns {missing}")
    df["diverged"] = df["diverged"].astype(str).str.lower().isin(["true", "1", "yes"])
    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 3.6), squeeze=False)
    picks = []
    for ax, ds in zip(axes[0], datasets):
        sub = df[df["dataset"] == ds]
        finite = sub.loc[~sub["diverged"], "val_error"].dropna()
        top = float(finite.max()) * 1.05 if len(finite) else 100.0
        for (row, scale), g in sub.groupby(["row", "init_scale"], sort=False):
            g = g.sort_values("lr")
            ok = g[~g["diverged"]]
            label = f"{row}" + ("" if sub["init_scale"].nunique() == 1 else f" (init×{scale:g})")
            (line,) = ax.plot(ok["lr"], ok["val_error"], marker="o", label=label)
            bad = g[g["diverged"]]
            if len(bad):
                ax.scatter(bad["lr"], [top] * len(bad), marker="x", s=70, color=line.get_color(), zorder=3)
        # the pick per (row, dataset): the file's ``picked`` column (make tune), else the lowest validation error
        for row, g in sub.groupby("row", sort=False):
            ok = g[~g["diverged"]].dropna(subset=["val_error"])
            if "picked" in g.columns:
                chosen = g[g["picked"].astype(str).str.lower().isin(["true", "1", "yes"])]
            else:
                chosen = ok.loc[[ok["val_error"].idxmin()]] if len(ok) else ok
            for r in chosen.itertuples(index=False):
                picks.append((ds, row, r.init_scale, r.lr, r.val_error))
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation error %")
        ax.set_title(f"{table} · {DATASET_TITLES.get(ds, ds)} (× = diverged)")
        ax.legend(fontsize=7)
    rows = "".join(f"<tr><td>{_e(DATASET_TITLES.get(d, d))}</td><td class='label'>{_e(r)}</td><td>{s:g}</td>"
                   f"<td>{lr:g}</td><td>{v:.2f}</td></tr>" for d, r, s, lr, v in picks)
    return (_png(fig) + "<table><tr><th>dataset</th><th>row</th><th>init scale</th><th>picked lr</th>"
            f"<th>val error</th></tr>{rows}</table>"
            f'<p class="small">From {_e(path)}: {len(df)} settings, {int(df["diverged"].sum())} diverged.</p>')


def params_html(ref: PaperReference) -> str:
    from crelu.tables.params import params_frame

    df = params_frame(ref)
    rows = []
    for r in df.itertuples(index=False):
        paper = "–" if pd.isna(r.paper_params) else f"{int(r.paper_params) / 1e6:g}M"
        diff = "" if pd.isna(r.rel_diff) else f"{100 * r.rel_diff:+.2f}%"
        rows.append(f"<tr><td>{_e(r.table)}</td><td class='label'>{_e(ROWS[r.table][r.row].label)} "
                    f"(<code>{_e(r.row)}</code>)</td><td>{_e(DATASET_TITLES.get(r.dataset, r.dataset))}</td>"
                    f"<td>{r.params:,}</td><td>{paper}</td><td>{diff}</td></tr>")
    return ("<table><tr><th>table</th><th>row</th><th>dataset</th><th>params (ours)</th><th>paper</th>"
            "<th>rel. diff</th></tr>" + "".join(rows) + "</table>")


def figures_html(folder: Path) -> str:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".svg")) if folder.is_dir() else []
    if not files:
        return _missing(f"no figures under {folder} (run `make figures`)")
    out = []
    for p in files:
        mime = "image/svg+xml" if p.suffix.lower() == ".svg" else "image/png"
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{_e(p.name)}" src="data:{mime};base64,{data}">'
                   f"<figcaption class='small'>{_e(p.name)}</figcaption></figure>")
    return "\n".join(out)


# -- the page -----------------------------------------------------------------------------------------------------


def build_report(runs: str | os.PathLike, results: str | os.PathLike, profile: str = "paper",
                 tables: Sequence[str] = TABLES, ref: PaperReference | None = None) -> tuple[str, list[str]]:
    """The report's HTML and a one-line summary per part."""
    runs, results = Path(runs), Path(results)
    ref = ref or PaperReference.load()
    index = RunIndex.scan(runs, profile=profile)
    records = {str(r.run_dir): r for r in index.records}
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>CReLU reproduction report</h1><p class='small'>Profile <b>{_e(profile)}</b> · run records "
            f"from <code>{_e(runs)}</code> ({len(index.records)} readable) · generated {now}.</p>"]
    summary = [f"{len(index.records)} run record(s) under {runs}"]
    if profile != "paper":
        body.append(f'<div class="banner" id="banner"><b>Profile “{_e(profile)}”: these numbers are '
                    "meaningless.</b> Tiny networks, a few hundred images and a couple of epochs exercise the "
                    "whole pipeline; nothing here says anything about the paper's results.</div>")
    if not runs.exists():
        body.append(_missing(f"{runs} does not exist: no runs yet"))
    if index.skipped:
        body.append("<div class='missingpart'>Skipped run records: <ul>" +
                    "".join(f"<li>{_e(s)}</li>" for s in index.skipped) + "</ul></div>")
    toc = ["<ul>"]
    sections = []
    for name in tables:
        t = build_table(name, index, ref, profile=profile)
        results_claims = check_claims(t, ref)
        filled = sum(1 for c in t.cells if not c.reference_only and c.n_runs)
        verdicts = pd.Series([r.verdict for r in results_claims]).value_counts().to_dict()
        summary.append(f"{name}: {filled} cells with runs; claims: {verdicts or 'none'}")
        toc.append(f'<li><a href="#{name}">{_e(t.spec.title)}</a></li>')
        sec = [f'<h2 id="{name}">{_e(t.spec.title)}</h2>', table_html(t, records)]
        if results_claims:
            sec += [f"<h3 id='{name}-claims'>Claims of the paper ({name})</h3>", claims_html(results_claims)]
        sec += [f"<h3>Learning curves ({name})</h3>", curves_html(t, records)]
        if name in ("table1", "table2", "table4"):
            sec += [f"<h3>Learning-rate tuning ({name})</h3>", tuning_html(results / "tuning" / f"{name}.csv", name)]
        sections.append("\n".join(sec))
    toc += ['<li><a href="#params">Parameter counts</a></li>', '<li><a href="#figures">Figures</a></li>', "</ul>"]
    sections.append('<h2 id="params">Parameter counts</h2>' + params_html(ref))
    sections.append('<h2 id="figures">Figures (make figures)</h2>' + figures_html(results / "figures"))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>CReLU reproduction report "
            f"({_e(profile)})</title><style>{CSS}</style></head><body>" + "\n".join(body) + "\n".join(toc)
            + "\n".join(sections) + "</body></html>\n")
    return page, summary


def write_report(out: str | os.PathLike, **kw) -> list[str]:
    page, summary = build_report(**kw)
    atomic_write_text(out, page)
    return summary
