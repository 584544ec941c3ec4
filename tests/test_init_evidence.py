"""The evidence behind the init defaults (models.base.init_convs_), measured by scripts/init_probe.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from crelu.config import compose_config

_spec = importlib.util.spec_from_file_location("init_probe", Path(__file__).parents[1] / "scripts" / "init_probe.py")
init_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(init_probe)


def test_all_cnn_b_keeps_its_signal_under_he_and_loses_it_under_half_he():
    over = ["experiment=table4/baseline", "dataset=imagenet", "model.width_scale=0.25"]
    he, half = (init_probe.probe(over, s, 67, 2, 0) for s in (1.0, 0.5))
    # (67 px at quarter width keeps this a CPU second; zero-padded borders cost He some signal at that size,
    # at 227 px full width the RMS stays ~1.4 to conv12: docs/evidence/init_allcnn_b.md)
    assert he["rms"][-1][1] / half["rms"][-1][1] > 20  # half-He loses a factor ~sqrt(2) per layer
    assert half["rms"][-1][1] / half["rms"][0][1] < 0.01
    assert half["conv1_grad"] < he["conv1_grad"] / 10
    assert compose_config(["experiment=table4/baseline"]).model.init_scale == 1.0  # the default follows it


def test_convpool_max_pools_grow_the_signal_under_he_so_the_default_halves_it():
    over = ["experiment=table1/crelu", "model.width_scale=0.25"]
    he, half = (init_probe.probe(over, s, None, 8, 0) for s in (1.0, 0.5))
    assert he["rms"][-2][1] > 1.5 * he["rms"][0][1]  # conv8 vs conv1: the pools grow activations under He
    assert he["logits_rms"] > 5 * half["logits_rms"]
    assert compose_config(["experiment=table1/crelu"]).model.init_scale == 0.5
