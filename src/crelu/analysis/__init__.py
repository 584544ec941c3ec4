"""The paper's analyses (docs/analysis.md): pairing filters (Figs 1-3), invariance scores (Fig. 4),
reconstruction from CReLU features (Fig. 5, Prop 2.1) and outgoing-weight correlations (Table 6).

Modules (each usable on its own; the CLI ``python -m crelu.analysis`` wires them to trained runs):

``pairing``         µ / pairing filters of any conv net and the random-Gaussian baseline
``features``        layer read-outs of a PaperNet (after the activation, optionally after the next pool)
``transforms``      translation / rotation / scaling trajectories (batched affine resampling)
``invariance``      Goodfellow et al. (2009) invariance scores
``reconstruction``  undo CReLU + min-norm least squares through convs by conjugate gradient
``table6``          pair vs non-pair outgoing-weight correlations and the Table 6 writer
``plots``           the figures (matplotlib Agg, PNG + PDF, atomic writes)
``data``            held-out images read from the dataset files
``runs``, ``jobs``, ``cli``  run selection by record meta, the four CLI jobs, the argument parser
"""

from crelu.analysis.invariance import InvarianceConfig, invariance_scores, layer_score, summarise
from crelu.analysis.pairing import conv_layers, layer_pairings, load_alexnet, pairing, random_mu
from crelu.analysis.reconstruction import conv_lstsq, reconstruct, relative_error
from crelu.analysis.table6 import model_table6, outgoing_correlations

__all__ = [
    "InvarianceConfig",
    "conv_layers",
    "conv_lstsq",
    "invariance_scores",
    "layer_pairings",
    "layer_score",
    "load_alexnet",
    "model_table6",
    "outgoing_correlations",
    "pairing",
    "random_mu",
    "reconstruct",
    "relative_error",
    "summarise",
]
