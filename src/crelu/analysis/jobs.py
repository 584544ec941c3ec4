"""The four analyses as CLI jobs: which runs each one uses, what it computes, what it writes.

Models (the paper's figures and Table 6; docs/analysis.md):

* pairing (Figs 1-3): ImageNet baseline vs CReLU (conv1-4), conv1-4 (Fig. 3); CIFAR Table 1 baseline vs CReLU,
  conv1-7 (the same procedure on the CIFAR models); optionally a local AlexNet file, conv1-5 (Fig. 2).  Fig.
  1's filter/pair grid is drawn for the first conv of every ReLU model.  Beyond the paper: any torchvision
  classification network (``run_pairing_torchvision``), every conv layer.
* invariance (Fig. 4): Table 1 baseline vs CReLU on CIFAR-10 and CIFAR-100, conv1-7; ImageNet baseline vs
  CReLU (conv1-7), conv1-7.
* reconstruction (Fig. 5): ImageNet CReLU (conv1-4) from conv1-4; CIFAR Table 1 CReLU from conv1-3 (the layers
  below the first max-pool).  The ReLU baseline is reconstructed the same way as a contrast when it exists.
* table6: ImageNet CReLU (conv1-7) -> ``table6.{csv,md}`` with the paper's values beside ours; CIFAR Table 1
  CReLU -> ``table6_{dataset}.{csv,md}`` (same statistic, no paper values).

Each job returns True when it wrote anything; missing runs or data are reported through ``ctx.skip``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from crelu.analysis.data import heldout_images
from crelu.analysis.features import centre_response_fn, readout_points
from crelu.analysis.invariance import InvarianceConfig, invariance_scores, summarise
from crelu.analysis.pairing import conv_layers, layer_pairings, load_alexnet, module_pairings
from crelu.analysis.plots import (
    plot_filter_pairs,
    plot_invariance,
    plot_layer_histograms,
    plot_pairing_histograms,
    plot_reconstructions,
)
from crelu.analysis.reconstruction import ReconstructionError, reconstruct, relative_error
from crelu.analysis.runs import Context, LoadedRun
from crelu.analysis.table6 import model_table6, read_paper_table6, write_table6
from crelu.analysis.transforms import TrajectoryConfig
from crelu.results.io import atomic_write_json, atomic_write_text
from crelu.tables.reference import default_data_path
from crelu.training.progress import track

CIFAR = ("cifar10", "cifar100")
PAIRING = {
    "imagenet": (("table4", "baseline"), ("table4", "crelu_conv1_4"), [1, 2, 3, 4]),
    **{d: (("table1", "baseline"), ("table1", "crelu"), list(range(1, 8))) for d in CIFAR},
}
INVARIANCE = {
    **{d: (("table1", "baseline"), ("table1", "crelu"), list(range(1, 8))) for d in CIFAR},
    "imagenet": (("table4", "baseline"), ("table4", "crelu_conv1_7"), list(range(1, 8))),
}
RECONSTRUCTION = {
    "imagenet": (("table4", "crelu_conv1_4"), ("table4", "baseline"), [1, 2, 3, 4]),
    **{d: (("table1", "crelu"), ("table1", "baseline"), [1, 2, 3]) for d in CIFAR},
}
TABLE6 = {
    "imagenet": ("table4", "crelu_conv1_7", "table6"),
    **{d: ("table1", "crelu", f"table6_{d}") for d in CIFAR},
}


def write_csv(path: Path, rows: list[dict]) -> list[Path]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return [path]


def _load_pair(
    ctx: Context, specs: Sequence[tuple[str, str]], dataset: str, analysis: str
) -> list[LoadedRun]:
    runs = [ctx.try_load(table, row, dataset, analysis) for table, row in specs]
    return [r for r in runs if r is not None]


def _layers(run: LoadedRun, wanted: Sequence[int]) -> list[int]:
    return [i for i in wanted if i <= len(run.model.plan)]


def _pairing_outputs(
    ctx: Context,
    tag: str,
    rows: list[tuple[str, object, list]],
    fig1: list[tuple[str, torch.Tensor, torch.Tensor]],
) -> None:
    """Histograms (Figs 2/3), the Fig. 1 grid per (name, conv1 weight, partner), and the µ summary CSV."""
    ctx.wrote(plot_pairing_histograms([(label, lps) for label, _, lps in rows], ctx.figure(f"pairing_{tag}")))
    for name, weight, partner in fig1:
        ctx.wrote(
            plot_filter_pairs(
                weight,
                partner,
                ctx.figure(f"pairing_filters_{name}"),
                title=f"{name} conv1: filter | pairing filter",
            )
        )
    table = [{"model": label, "source": str(src), **lp.summary()} for label, src, lps in rows for lp in lps]
    ctx.wrote(write_csv(ctx.number_file(f"pairing_{tag}.csv"), table))


def _first_conv(name: str, model, lps: list) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Fig. 1 input when the first analysed layer is conv1 and its filters are images (1 or 3 channels)."""
    w = conv_layers(model)[0][1].weight.detach().cpu()
    ok = lps and lps[0].name == "conv1" and w.shape[1] in (1, 3)
    return [(name, w, lps[0].partner)] if ok else []


def run_pairing(ctx: Context, alexnet: str | None = None) -> bool:
    ran = False
    if alexnet:
        net = load_alexnet(alexnet)
        lps = layer_pairings(net, None, ctx.seed)
        _pairing_outputs(ctx, "alexnet", [("AlexNet", alexnet, lps)], _first_conv("alexnet", net, lps))
        ran = True
    for dataset, (relu, crelu, layers) in PAIRING.items():
        rows, fig1 = [], []
        for (table, row), is_relu in ((relu, True), (crelu, False)):
            run = ctx.try_load(table, row, dataset, "pairing")
            if run is None:
                continue
            lps = layer_pairings(run.model, _layers(run, layers), ctx.seed)
            rows.append((run.label, run.run_dir, lps))
            if is_relu:
                fig1 += _first_conv(f"{dataset}_{row}", run.model, lps)
        if rows:
            _pairing_outputs(ctx, dataset, rows, fig1)
            ran = True
    return ran


def _tag(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_") or "x"


def run_pairing_torchvision(
    ctx: Context,
    name: str,
    weights: str | None = None,
    *,
    num_classes: int | None = None,
    offline: bool = False,
    layers: Sequence[int] | None = None,
) -> bool:
    """Pairing analysis of a torchvision classification network (any, by name; see torchvision_models).

    Writes ``pairing_<name>_<weights>.{png,pdf}`` (µ^w against µ^r per conv layer),
    ``pairing_<name>_<weights>.csv`` (one row per conv layer) and ``pairing_<name>_<weights>_filters.csv`` (µ^w and
    the pairing filter of every filter).  Raises :class:`~crelu.analysis.torchvision_models.ModelLoadError`.
    """
    from crelu.analysis.torchvision_models import load_torchvision

    model, source = load_torchvision(name, weights, num_classes=num_classes, offline=offline, seed=ctx.seed)
    print(f"using torchvision {name}: {source}", flush=True)
    pairs = module_pairings(model, layers, ctx.seed)
    wtag = "random" if weights is None else _tag(Path(weights).stem if Path(weights).is_file() else weights)
    stem = f"pairing_{_tag(name)}_{wtag}"
    lps = [lp for _, lp in pairs]
    ctx.wrote(plot_layer_histograms(f"{name} ({source})", lps, ctx.figure(stem)))
    rows, per_filter = [], []
    for i, (conv, lp) in enumerate(pairs, 1):
        mu_r_min = float(lp.mu_r.min())
        rows.append({
            "model": name, "weights": source, "index": i, "layer": lp.name,
            "filters": lp.num_filters, "in_channels": conv.in_channels, "groups": conv.groups,
            "kernel": "x".join(map(str, conv.kernel_size)), "dim": lp.dim,
            "mu_w_mean": float(lp.mu_w.mean()), "mu_w_std": float(lp.mu_w.std(unbiased=False)),
            "mu_w_median": float(lp.mu_w.median()),
            "mu_r_mean": float(lp.mu_r.mean()), "mu_r_std": float(lp.mu_r.std(unbiased=False)),
            "mu_shift": float(lp.mu_w.mean() - lp.mu_r.mean()),
            "frac_below_random_min": float((lp.mu_w < mu_r_min).double().mean()),
        })
        per_filter += [{"layer": lp.name, "filter": j, "mu_w": float(m), "partner": int(q)}
                       for j, (m, q) in enumerate(zip(lp.mu_w, lp.partner))]
    ctx.wrote(write_csv(ctx.number_file(f"{stem}.csv"), rows))
    ctx.wrote(write_csv(ctx.number_file(f"{stem}_filters.csv"), per_filter))
    first = pairs[0][0].weight.detach().cpu()
    if first.shape[1] in (1, 3):  # Fig. 1-style grid when the first conv sees the image
        ctx.wrote(plot_filter_pairs(first, lps[0].partner, ctx.figure(f"{stem}_conv1_pairs"),
                                    title=f"{name} {lps[0].name}: filter | pairing filter"))
    return True


def _pair_with_images(ctx: Context, names, dataset: str, what: str, n_images: int):
    """The runs to compare and ``n_images`` held-out images of their dataset, or None (with a skip line)."""
    runs = _load_pair(ctx, names, dataset, what)
    if not runs:
        return None
    try:
        return runs, heldout_images(runs[0].cfg.dataset, n_images, ctx.data_root, runs[0].norm_stats)
    except FileNotFoundError as e:
        ctx.skip(f"{what} on {dataset}: {e}")
        return None


def run_invariance(
    ctx: Context,
    n_images: int = 10000,
    num_top: int = 100,
    batch_size: int = 512,
    families: Sequence[str] = ("translation", "rotation", "scaling"),
    after_pool: bool = True,
    max_shift: int | None = None,
    shift_step: int = 2,
    layers: Sequence[int] | None = None,
) -> bool:
    ran = False
    for dataset, (relu, crelu, default_layers) in INVARIANCE.items():
        loaded = _pair_with_images(ctx, [relu, crelu], dataset, "invariance", n_images)
        if loaded is None:
            continue
        runs, data = loaded
        shift = max_shift if max_shift is not None else (16 if dataset == "imagenet" else 4)
        cfg = InvarianceConfig(
            num_top=num_top,
            batch_size=batch_size,
            trajectory=TrajectoryConfig(max_shift=shift, shift_step=shift_step, families=tuple(families)),
        )
        summary, rows = {}, []
        for run in runs:
            lay = _layers(run, layers or default_layers)
            images = data.renormalised(run.norm_stats).images.to(ctx.device)  # resample where the net runs
            scores = invariance_scores(
                centre_response_fn(run.model, lay, after_pool), images, cfg, progress=ctx.progress
            )
            summary[run.label] = summarise(scores, cfg.top_fraction)
            readout = {f"conv{i}": name for name, i in readout_points(run.model, lay, after_pool).items()}
            for layer, fams in summary[run.label].items():
                for fam, value in fams.items():
                    n_units = int(torch.isfinite(scores[fam][layer].score).sum()) if fam in scores else None
                    row = {"model": run.label, "run_dir": str(run.run_dir), "layer": layer}
                    row |= {"readout": readout[layer], "family": fam, "score": value, "units_scored": n_units}
                    rows.append(row)
        n = len(data.images)
        title = f"Invariance scores, {dataset} ({n} held-out images, |Z|={min(num_top, n)})"
        ctx.wrote(plot_invariance(summary, ctx.figure(f"invariance_{dataset}"), title))
        ctx.wrote(write_csv(ctx.number_file(f"invariance_{dataset}.csv"), rows))
        ran = True
    return ran


def run_reconstruction(
    ctx: Context, n_images: int = 2, iters: int = 300, layers: Sequence[int] | None = None
) -> bool:
    ran = False
    for dataset, (crelu, relu, default_layers) in RECONSTRUCTION.items():
        loaded = _pair_with_images(ctx, [crelu, relu], dataset, "reconstruction", n_images)
        if loaded is None:
            continue
        runs, data = loaded
        fig_rows, originals, records = [], [], []
        for run in runs:
            run_data = data.renormalised(run.norm_stats)
            x = run_data.images.to(ctx.device)
            recs: list[list[tuple[str, torch.Tensor]]] = [[] for _ in range(len(x))]
            todo = _layers(run, layers or default_layers)
            for layer in track(todo, desc=f"reconstruct {run.label}", disable=not ctx.progress, unit="layer"):
                try:
                    x_hat, infos = reconstruct(run.model, x, layer, iters=iters)
                except ReconstructionError as e:
                    ctx.skip(f"reconstruction of {run.label} from conv{layer}: {e}")
                    continue
                err = relative_error(x_hat, x).cpu()
                for i in range(len(x)):
                    recs[i].append((f"conv{layer}\nrel.err {float(err[i]):.3f}", run_data.display(x_hat[i])))
                    records.append(
                        {
                            "model": run.label,
                            "run_dir": str(run.run_dir),
                            "layer": f"conv{layer}",
                            "image": i,
                            "rel_error": float(err[i]),
                            "cg_iterations_top_down": "/".join(str(c.iterations) for c in infos),
                            "cg_rel_residual_max": max(c.rel_residual for c in infos),
                        }
                    )
            for i in range(len(x)):
                if recs[i]:
                    fig_rows.append((f"{run.label} #{i}", recs[i]))
                    originals.append(run_data.display(x[i]))
        if not records:
            continue
        title = f"Reconstruction from conv features ({dataset}; Prop 2.1, Fig. 5); rel.err = ‖x̂ − x‖/‖x‖"
        ctx.wrote(
            plot_reconstructions(
                torch.stack(originals), fig_rows, ctx.figure(f"reconstruction_{dataset}"), title
            )
        )
        ctx.wrote(write_csv(ctx.number_file(f"reconstruction_{dataset}.csv"), records))
        path = ctx.number_file(f"reconstruction_{dataset}.json")
        atomic_write_json(path, {"images": data.source, "cg_max_iterations": iters, "results": records})
        ctx.wrote([path])
        ran = True
    return ran


def run_table6(ctx: Context, nonpair: str = "all", paper_csv: str | Path | None = None) -> bool:
    ran = False
    for dataset, (table, row, stem) in TABLE6.items():
        run = ctx.try_load(table, row, dataset, "table6")
        if run is None:
            continue
        stats = model_table6(run.model, nonpair, ctx.seed)
        if not stats:
            ctx.skip(f"table6: {run.label} has no CReLU layer followed by a conv")
            continue
        paper = _paper_table6(Path(paper_csv) if paper_csv else default_data_path("paper_table6.csv"))
        ctx.wrote(
            write_table6(
                stats,
                paper if dataset == "imagenet" else {},
                ctx.results,
                stem,
                source=f"{run.label}, {run.run_dir}",
                nonpair=nonpair,
            )
        )
        ran = True
    return ran


def _paper_table6(path: Path) -> dict[str, dict[str, float]]:
    if path.exists():
        return read_paper_table6(path)
    print(f"warning: {path} not found; Table 6 is written without the paper's values", flush=True)
    return {}
