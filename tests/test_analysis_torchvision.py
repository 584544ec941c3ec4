"""Pairing analysis of any torchvision network: random init, a local weights file, torchvision's cache, errors.

Nothing is downloaded: models are randomly initialised or loaded from files written here.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from crelu.analysis import cli
from crelu.analysis.pairing import module_pairings, pairing
from crelu.analysis.torchvision_models import (
    ModelLoadError,
    load_torchvision,
    read_state_dict,
    resolve_weights,
    weights_cache_path,
)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(tmp_path: Path, *args: str) -> int:
    out = tmp_path / "out"
    return cli.main(["pairing", *args, "--out", str(out), "--results", str(out), "--runs", str(tmp_path / "none"),
                     "--no-progress", "--threads", "1"])


def _paired_resnet18(seed: int = 3) -> nn.Module:
    """A random resnet18 whose conv1 filters come in exact negated pairs (µ = -1 for every filter)."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        w = net.conv1.weight
        w[32:] = -w[:32]
    return net


def test_random_resnet18_matches_the_random_baseline(tmp_path):
    assert _run(tmp_path, "--torchvision", "resnet18") == 0
    rows = _rows(tmp_path / "out" / "pairing_resnet18_random.csv")
    torch.manual_seed(0)  # the CLI's --seed default: the same random init
    ref = torchvision.models.resnet18(weights=None)
    convs = [(n, m) for n, m in ref.named_modules() if isinstance(m, nn.Conv2d)]
    assert [r["layer"] for r in rows] == [n for n, _ in convs] and len(rows) == 20
    for r, (_, m) in zip(rows, convs):
        mu, _ = pairing(m.weight)
        assert float(r["mu_w_mean"]) == pytest.approx(float(mu.mean()), abs=1e-12)
        assert int(r["filters"]) == m.out_channels and int(r["dim"]) == m.weight[0].numel()
        # He-normal init is i.i.d. Gaussian: µ^w and µ^r have the same law (means within a few standard errors)
        se = float(r["mu_r_std"]) / int(r["filters"]) ** 0.5
        assert abs(float(r["mu_shift"])) < 6 * se + 1e-3
    per_filter = _rows(tmp_path / "out" / "pairing_resnet18_random_filters.csv")
    assert len(per_filter) == sum(m.out_channels for _, m in convs)
    for stem in ("pairing_resnet18_random", "pairing_resnet18_random_conv1_pairs"):
        assert (tmp_path / "out" / f"{stem}.png").stat().st_size > 1000


def test_weights_file_is_loaded_with_its_tensors(tmp_path):
    net = _paired_resnet18()
    path = tmp_path / "paired.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    assert _run(tmp_path, "--torchvision", "resnet18", "--weights", str(path), "--pairing-layers", "1", "2") == 0
    rows = _rows(tmp_path / "out" / "pairing_resnet18_paired.csv")
    assert [r["layer"] for r in rows] == ["conv1", "layer1.0.conv1"]
    assert float(rows[0]["mu_w_mean"]) == pytest.approx(-1.0, abs=1e-12)  # the negated pairs of the file
    assert float(rows[0]["frac_below_random_min"]) == 1.0 and float(rows[0]["mu_r_mean"]) > -0.3
    mu, _ = pairing(net.layer1[0].conv1.weight)
    assert float(rows[1]["mu_w_mean"]) == pytest.approx(float(mu.mean()), abs=1e-12)


def test_torchvision_cache_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    member = resolve_weights("resnet18", "DEFAULT")
    cached = weights_cache_path(member)
    assert cached == tmp_path / "hub" / "checkpoints" / Path(member.url).name
    assert _run(tmp_path, "--torchvision", "resnet18", "--weights", "DEFAULT", "--offline") == 1  # not there yet
    cached.parent.mkdir(parents=True)
    torch.save(_paired_resnet18().state_dict(), cached)
    net, source = load_torchvision("resnet18", "IMAGENET1K_V1", offline=True)
    assert str(cached) in source
    (conv, lp), = module_pairings(net, [1])
    assert float(lp.mu_w.max()) == pytest.approx(-1.0, abs=1e-12)


def test_missing_cached_weights_offline_is_one_line_naming_the_cache(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "torch_home"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "crelu.analysis", "pairing", "--torchvision", "resnet18",
                          "--weights", "DEFAULT", "--offline", "--out", str(tmp_path), "--results", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in lines[0]


def test_pickled_modules_are_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torchvision.models.alexnet(weights=None), path)  # a pickled nn.Module, not a state dict
    with pytest.raises(ModelLoadError, match="state_dict"):
        read_state_dict(path)
    assert _run(tmp_path, "--alexnet", str(path)) == 1


@pytest.mark.parametrize("name,weights,message", [
    ("resnet81", None, "did you mean resnet18"),
    ("resnet18", "IMAGENET9K_V9", "offers: DEFAULT, IMAGENET1K_V1"),
])
def test_bad_names_are_one_line_errors(name, weights, message):
    with pytest.raises(ModelLoadError, match=message):
        load_torchvision(name, weights)


def test_torchvision_options_need_a_model(capsys):
    assert cli.main(["pairing", "--weights", "DEFAULT"]) == 2
    assert "need --torchvision" in capsys.readouterr().err


def test_a_file_of_another_architecture_is_reported(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    with pytest.raises(ModelLoadError, match="does not fit torchvision's resnet18"):
        load_torchvision("resnet18", str(path))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "alexnet"])
def test_other_families_including_depthwise_convs(name):
    net, _ = load_torchvision(name, None, seed=0)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels >= 2]
    pairs = module_pairings(net)
    assert [c for c, _ in pairs] == convs
    for conv, lp in pairs:
        assert lp.dim == conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        assert lp.mu_w.shape == lp.mu_r.shape == (conv.out_channels,)
        assert bool(((lp.mu_w >= -1 - 1e-12) & (lp.mu_w <= 1 + 1e-12)).all())
    if name == "mobilenet_v3_small":
        assert any(c.groups == c.in_channels > 1 for c in convs)  # depthwise layers are analysed too
