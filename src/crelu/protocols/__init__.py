"""Evaluation protocols of the paper: Single, 10-fold Average, Vote (docs/recipes.md).

``folds``     (re-exported from :mod:`crelu.data.splits`) 10-fold partitions, the Single hold-out, subsets
``ensemble``  Average ± SE over fold networks and the Vote ensemble error from saved test logits
``single``    the Single stopping rule and phase 1's target loss L*
"""

from crelu.data.splits import holdout_split, kfold_indices, stratified_folds, stratified_subset
from crelu.protocols.ensemble import average, load_fold_logits, softmax, vote_error
from crelu.protocols.single import phase1_target, select_phase1_epoch, single_outcome, single_stop_epoch

__all__ = [
    "average",
    "holdout_split",
    "kfold_indices",
    "load_fold_logits",
    "phase1_target",
    "select_phase1_epoch",
    "single_outcome",
    "single_stop_epoch",
    "softmax",
    "stratified_folds",
    "stratified_subset",
    "vote_error",
]
