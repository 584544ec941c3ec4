"""Every paper row: composes through Hydra, builds, runs forward, has the paper's parameter count."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from crelu.config import ConfigError, compose_config, config_dir, validate_config
from crelu.models import ModelConfigError, build_model
from crelu.tables.rows import ROWS, TABLE_DATASETS, model_config

EXPERIMENTS = sorted(
    str(p.relative_to(config_dir() / "experiment").with_suffix(""))
    for p in (config_dir() / "experiment").rglob("*.yaml")
)
CASES = [(e, d) for e in EXPERIMENTS for d in TABLE_DATASETS[e.split("/")[0]]]

# Exact counts (DERIVED in PAPER_SPEC §2.4 / paper_spec_param_counts.out) and the paper's rounded figures.
EXACT = {
    ("table1/baseline", "cifar10"): 1_369_738, ("table1/double", "cifar10"): 5_467_402,
    ("table1/avr", "cifar10"): 1_369_738, ("table1/crelu", "cifar10"): 2_735_626,
    ("table1/crelu_half", "cifar10"): 685_834, ("table1/baseline", "cifar100"): 1_387_108,
    ("table1/crelu", "cifar100"): 2_770_276, ("table1/crelu_half", "cifar100"): 703_204,
    ("table2/vgg", "cifar10"): 14_991_946, ("table2/vgg", "cifar100"): 15_038_116,
    ("table2/crelu_conv1", "cifar10"): 14_990_986, ("table2/crelu_conv1_3", "cifar10"): 14_953_930,
    ("table2/crelu_conv1_3_5", "cifar10"): 14_806_090,
    ("table4/baseline", "imagenet"): 9_372_840, ("table4/crelu_all", "imagenet"): 4_686_420,
    ("table4/crelu_conv1_4_7", "imagenet"): 8_605_480, ("table4/crelu_conv1_4", "imagenet"): 10_144_936,
    ("table4/crelu_conv1_7", "imagenet"): 11_766_952, ("table4/crelu_conv1_9", "imagenet"): 16_633_000,
}
PAPER_M = {"table1/baseline": 1.4, "table1/double": 5.6, "table1/avr": 1.4, "table1/crelu": 2.8,
           "table1/crelu_half": 0.7, "table4/baseline": 9.4, "table4/crelu_all": 4.7,
           "table4/crelu_conv1_4_7": 8.6, "table4/crelu_conv1_4": 10.1}


def test_every_paper_row_has_an_experiment_config():
    """Every model the paper reports (results/paper_reference.csv) is one configs/experiment file (rows are
    declared there only: a new row is one more file, which this test does not need to know about)."""
    import csv

    with open(Path(__file__).parents[1] / "results" / "paper_reference.csv", newline="") as f:
        paper = {(f"table{r['table']}", r["model"]) for r in csv.DictReader(f) if r["table"] in ("1", "2", "4")}
    ours = {(t, d.paper_model) for t, rows in ROWS.items() for d in rows.values()}
    assert paper <= ours, sorted(paper - ours)
    for table, rows in ROWS.items():
        if table in ("table1", "table2", "table4"):
            assert {f"{table}/{r}" for r in rows} <= set(EXPERIMENTS), table


@pytest.mark.parametrize(("experiment", "dataset"), CASES)
def test_experiment_composes_builds_and_matches_the_paper(experiment, dataset):
    over = [f"experiment={experiment}"] + ([f"dataset={dataset}"] if dataset != "imagenet" else [])
    cfg = compose_config(over)
    table, row = experiment.split("/")
    assert (cfg.experiment.table, cfg.experiment.row, cfg.dataset.name) == (table, row, dataset)
    net = build_model(cfg.model, cfg.dataset.num_classes)
    n = net.num_parameters()
    # the Hydra config and the tables' row definitions describe the same network
    assert n == build_model(model_config(table, row), cfg.dataset.num_classes).num_parameters()
    if (experiment, dataset) in EXACT:
        assert n == EXACT[(experiment, dataset)]
    if experiment in PAPER_M:
        tol = 0.006 if table == "table4" else 0.03
        assert abs(n / 1e6 - PAPER_M[experiment]) / PAPER_M[experiment] <= tol + (0.02 if "double" in row or
                                                                                  row == "crelu" else 0)
    size = 227 if dataset == "imagenet" else 32
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, cfg.dataset.num_classes)


def test_table1_parameter_ratios_follow_the_paper():
    def n(row):
        return build_model(compose_config([f"experiment=table1/{row}"]).model, 10).num_parameters()

    base = n("baseline")
    assert n("crelu") / base == pytest.approx(2.00, abs=0.01)
    assert n("double") / base == pytest.approx(3.99, abs=0.01)
    assert n("crelu_half") / base == pytest.approx(0.50, abs=0.01)
    assert n("avr") == base


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["++model.activation_layers={crelu:[10]}"], "conv10 does not exist"),
        (["++model.activation_layers={crelu:[9]}"], "would emit 20 class maps for 10 classes"),
        (["++model.activation_layers={crelu:[1],avr:[1]}"], "two activations"),
        (["model.halve_layers=[0]"], "conv0 does not exist"),
        (["model.width_mult=1.01", "model.halve_layers=[1]"], "odd"),
        (["model.family=resnet"], "unknown model family"),
    ],
)
def test_impossible_architectures_fail_before_training(overrides, match):
    cfg = compose_config(["experiment=table1/baseline", *overrides])
    with pytest.raises(ModelConfigError, match=match):
        build_model(cfg.model, cfg.dataset.num_classes)


def test_crelu_all_classifier_is_500_filters_times_two():
    cfg = compose_config(["experiment=table4/crelu_all"])
    net = build_model(cfg.model, 1000)
    last = net.plan[-1]
    assert (last.filters, last.activation, last.out_channels) == (500, "crelu", 1000)


@pytest.mark.parametrize(
    ("overrides", "exc"),
    [
        (["optim.lrr=0.1"], ConfigCompositionException),  # misspelt key
        (["train.batch_size=abc"], ConfigCompositionException),  # wrong type
        (["dataset=cifar1000"], ConfigCompositionException),  # unknown group option
        (["experiment=table1/crelu_halff"], ConfigCompositionException),
    ],
)
def test_config_typos_fail_at_composition(overrides, exc):
    with pytest.raises(exc):
        compose_config(overrides)


def test_force_added_unknown_keys_fail_validation_before_training():
    cfg = compose_config(["+model.dropuot=0.1"])  # Hydra lets "+" add keys; nothing would read this one
    with pytest.raises(ConfigError, match="dropuot"):
        validate_config(cfg)
    validate_config(compose_config(["experiment=table2/crelu_conv1"]))  # every real config passes


def test_a_typo_inside_a_yaml_file_fails_at_composition(tmp_path, monkeypatch):
    import shutil

    cfgdir = tmp_path / "configs"
    shutil.copytree(config_dir(), cfgdir)
    bad = cfgdir / "model" / "convpool_c.yaml"
    bad.write_text(bad.read_text().replace("dropout: 0.5", "dropuot: 0.5"))
    monkeypatch.setenv("CRELU_CONFIG_DIR", str(cfgdir))
    with pytest.raises((ConfigCompositionException, ValidationError), match="dropuot"):
        compose_config([])


def test_recipes_are_the_papers():
    t1 = compose_config(["experiment=table1/crelu"])
    assert (t1.optim.momentum, t1.optim.weight_decay, t1.schedule.epochs) == (0.9, 1e-3, 350)
    assert list(t1.schedule.milestones) == [200, 250, 300] and t1.dataset.flip and t1.dataset.shift == 0
    t2 = compose_config(["experiment=table2/vgg", "dataset=cifar100"])
    assert (t2.optim.lr, t2.optim.weight_decay, t2.schedule.epochs, t2.schedule.gamma) == (0.1, 5e-4, 300, 0.5)
    assert t2.dataset.shift == 4 and t2.model.bn_eps == 1e-3 and t2.dataset.num_classes == 100
    t4 = compose_config(["experiment=table4/baseline"])
    assert (t4.dataset.name, t4.dataset.image_size, t4.train.batch_size) == ("imagenet", 227, 256)


def test_data_root_comes_from_env_and_cli_wins(monkeypatch):
    monkeypatch.setenv("CRELU_DATA_ROOT", "/some/where")
    assert compose_config([]).dataset.root == "/some/where"
    assert compose_config(["dataset.root=/else"]).dataset.root == "/else"
    monkeypatch.delenv("CRELU_DATA_ROOT")
    assert OmegaConf.to_container(compose_config([]).dataset, resolve=True)["root"] == "data"


def test_config_dir_is_the_repository_configs():
    assert config_dir() == Path(__file__).resolve().parents[1] / "configs"


def test_run_keys_are_deterministic_distinct_and_ignore_logging():
    from crelu.results.runkey import config_hash, run_key

    a = compose_config(["experiment=table1/crelu", "protocol=kfold", "protocol.fold=3"])
    assert run_key(a) == run_key(compose_config(["experiment=table1/crelu", "protocol=kfold", "protocol.fold=3",
                                                 "logger=wandb", "train.quiet=true", "dataset.root=/x"]))
    keys = {run_key(compose_config(["experiment=table1/crelu", "protocol=kfold", f"protocol.fold={f}"]))
            for f in range(10)}
    assert len(keys) == 10
    assert config_hash(a) != config_hash(compose_config(["experiment=table1/crelu", "protocol=kfold",
                                                         "protocol.fold=3", "optim.lr=0.05"]))
    assert run_key(a).startswith("table1/crelu/cifar10/kfold-3/seed0-")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["experiment=table4/baseline", "dataset=cifar10"], "allcnn_b.*cannot take 32x32 inputs of dataset 'cifar10'"),
        (["experiment=table2/vgg", "dataset=imagenet"], "vgg.*cannot take 227x227"),
    ],
)
def test_incompatible_dataset_model_combinations_fail_before_data_loads(overrides, match):
    from crelu.models import check_input_size

    cfg = compose_config(overrides)
    net = build_model(cfg.model, cfg.dataset.num_classes)
    with pytest.raises(ModelConfigError, match=match):
        check_input_size(net, cfg.dataset.image_size, cfg.dataset.name)


def test_paper_combinations_pass_the_input_size_check():
    from crelu.models import check_input_size

    for over in (["experiment=table1/crelu"], ["experiment=table2/crelu_conv1_3_5", "dataset=cifar100"],
                 ["experiment=table4/crelu_all"]):
        cfg = compose_config(over)
        check_input_size(build_model(cfg.model, cfg.dataset.num_classes), cfg.dataset.image_size)
