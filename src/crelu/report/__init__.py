"""One static reproduction report: ``python -m crelu.report`` (``make report``) -> ``results/[<profile>/]report.html``.

The page is a single HTML file (no server, no JavaScript, plots embedded as base64 PNG) with, in order:

* a banner for non-``paper`` profiles (smoke numbers exercise the pipeline and say nothing about the paper);
* every table regenerated from the run records (:mod:`crelu.tables`): ours / paper / Δ / 95% interval per cell,
  the paper's value inside our interval or not, the variants behind each cell and their wandb run ids;
* the paper's claims with our numbers and a verdict (:mod:`crelu.tables.claims`);
* learning curves per table and dataset (train loss, validation and test error per epoch), one line per row;
* the learning-rate tuning results where ``make tune`` wrote ``tuning/<table>.csv`` (lr × validation error,
  diverged settings marked);
* the parameter counts of every paper model against the paper;
* the figures of ``make figures`` (``figures/*.png``) where present.

Whatever is missing (a table without runs, no tuning, no figures) is shown as missing, never left out silently.
"""

from crelu.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
