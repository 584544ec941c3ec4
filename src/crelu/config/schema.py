"""Structured-config schemas: every config group is validated against these dataclasses at composition time.

A misspelt key (``optim.lrr=0.1``), a wrong type (``train.batch_size=abc``) or an unknown group option fails
inside Hydra's compose, before any data is loaded or any model built.  Defaults here are the ConvPool-CNN-C /
CIFAR-10 recipe of docs/recipes.md; the YAML files under ``configs/`` set each family's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

SCHEMA_VERSION = 1


@dataclass
class DatasetConfig:
    name: str = "cifar10"  # cifar10 | cifar100 | imagenet
    num_classes: int = 10
    # Folder that holds cifar-10-batches-py/ (or the ImageNet train/ and val/ folders).  The YAML default reads
    # the CRELU_DATA_ROOT / CRELU_IMAGENET_ROOT environment variables; a CLI override wins over both.
    root: str = "data"
    download: bool = True  # CIFAR only: torchvision's download when files are missing
    allow_modified: bool = True  # accept copies whose checksums differ from the official ones (with a warning)
    flip: bool = True  # random horizontal flip (all tables)
    shift: int = 0  # random shifts of +-shift px (VGG: 4, INFERRED); zero padding after normalisation
    train_subset: int | None = None  # use N training images (stratified, seeded): smoke runs
    test_subset: int | None = None  # evaluate on the first N test images: smoke runs
    # ImageNet only (Tables 4/5)
    image_size: int = 32  # network input size (CIFAR 32; ImageNet crop, 227 INFERRED)
    resize: int = 256  # shorter side before cropping
    lighting_std: float = 0.1  # AlexNet PCA colour noise (0 disables)
    workers: int = 8  # DataLoader workers (ImageNet only; CIFAR never uses workers)
    decode: str = "cpu"  # ImageNet JPEG decoding: cpu (workers) | gpu (on the CUDA device); $CRELU_IMAGENET_DECODE wins


@dataclass
class ModelConfig:
    family: str = "convpool_c"  # convpool_c | vgg | allcnn_b
    activation: str = "relu"  # default activation of every non-classifier conv
    activation_layers: dict[str, list[int]] = field(default_factory=dict)  # {crelu: [1, 3]} overrides
    halve_layers: list[int] = field(default_factory=list)  # conv indices with half the filters
    width_mult: float = 1.0  # "+ (double)" uses 2.0
    width_scale: float = 1.0  # extra multiplier on every row's filter counts (smoke profile: tiny, same code)
    classifier_activation: str = "relu"  # ConvPool conv9 / All-CNN-B conv12 (Springenberg: ReLU)
    dropout_input: float = 0.0
    dropout: float = 0.5  # family's hidden dropout (ConvPool: after pools; VGG: conv blocks; All-CNN-B: conv9)
    dropout_first: float = 0.3  # VGG only: dropout after conv1's block
    dropout_fc: float = 0.5  # VGG only: classifier dropouts
    bn_eps: float = 1e-3  # VGG only: conv BatchNorm eps (cifar.torch)
    bn_position: str = "pre_act"  # VGG only: conv->BN->act (INFERRED) or post_act: conv->act->BN
    first_padding: int | None = None  # All-CNN-B only: conv1 padding (2 for 224 crops)
    init: str = "he_normal"  # he_normal | msr_fanout | torch_default
    init_scale: float = 1.0  # multiplies the init variance (ConvPool uses 0.5, INFERRED: see models.base.init_convs_)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    dampening: float = 0.0
    weight_decay: float = 1e-3
    nesterov: bool = False
    lr_grid: list[float] = field(default_factory=list)  # the grid `make tune` searches (Springenberg: .25 .1 .05 .01)
    lr_from: str | None = None  # a tuning CSV (make tune): lr and init_scale become the row's picked values


@dataclass
class ScheduleConfig:
    name: str = "multistep"  # multistep | step | constant
    epochs: int = 350
    milestones: list[int] = field(default_factory=lambda: [200, 250, 300])  # multistep: epochs where lr *= gamma
    gamma: float = 0.1
    step_size: int = 25  # step: lr = lr0 * gamma ** ((epoch + index_base) // step_size)
    index_base: int = 0  # 1 reproduces Torch's 1-indexed ``epoch % 25 == 0`` rule (cifar.torch)


@dataclass
class TrainConfig:
    seed: int = 0  # drives init, shuffling, augmentation and dropout (per job: crelu.training.seeds)
    job_seeds: bool = True  # each fold / Single phase derives its own seeds from (seed, job); false: all share seed
    deterministic: bool = False  # bit-repeatable CPU runs (and deterministic cuDNN kernels)
    batch_size: int = 128
    eval_batch_size: int = 1000
    drop_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    compile: bool = False
    max_steps_per_epoch: int | None = None  # smoke runs: cap the steps of each epoch
    log_every: int = 50  # progress-bar refresh of the running loss (one host sync every N steps)
    quiet: bool = False  # no progress bars (sweeps)
    save_logits: bool = True
    checkpoint: bool = True  # keep a resumable checkpoint during training (every epoch)
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch (long ImageNet epochs)
    threads: int | None = None  # torch CPU threads
    nan_check_every: int = 20  # stop a diverged run within this many steps (one host sync each time; 0: epoch end)
    eval_test_every: int = 10  # test-set evaluation every N epochs during training (and always at the end)


@dataclass
class ProtocolConfig:
    name: str = "full"  # full | kfold | single | tune (train minus the hold-out, scored on it: make tune)
    folds: int = 10
    fold: int | None = None  # kfold: which fold is held out (0-based)
    split_seed: int = 20160301  # folds / hold-out split, independent of train.seed
    holdout: int = 10000  # single: size of the held-out part of the training set
    stop_point: str = "end"  # single phase 1 stopping point: end | best_val
    eval_mode: str = "center"  # imagenet: center | tenpatch | both
    job: str | None = None  # table sweeps: "single", "fold<K>" or "tune" picks the protocol (and fold) of one job
    pack: int = 1  # kfold: train folds fold..fold+pack-1 together as one stacked network (crelu.training.packed)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "crelu-repro"
    entity: str | None = None
    mode: str = "offline"  # offline | online | disabled; WANDB_MODE in the environment wins
    dir: str = "results/wandb"
    tags: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    table: str | None = None  # table1 | table2 | table4 | ...
    row: str | None = None  # the paper row, e.g. crelu_half
    name: str = "adhoc"
    profile: str = "paper"  # paper | smoke | custom: kept apart in results/
    # Table rows (crelu.config.experiments): the row as the paper prints it, its model name in
    # results/paper_reference.csv (both default to ``row``), and other tables that re-report this row's runs
    # ({table5: AllConvB}: the table and the label there).  None of these changes a run's key.
    label: str | None = None
    paper_model: str | None = None
    also_in: dict[str, str] = field(default_factory=dict)


@dataclass
class OutputConfig:
    root: str = "results/runs"  # run directories live under root/<profile>/<run key>
    run_dir: str | None = None  # explicit run directory (overrides the run key)
    overwrite: bool = False  # re-run a finished run instead of skipping it
    lock_wait_s: float | None = None  # a run directory locked by another live job: wait this long (None: until free)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


class ConfigError(ValueError):
    """A composed config that does not fit the schema (e.g. a key added with ``+`` that nothing reads)."""


def validate_config(cfg) -> None:
    """Re-check a composed config against :class:`Config`: unknown keys or wrong types raise ConfigError.

    Hydra's composition already rejects misspelt overrides; this also catches keys force-added with ``+``/``++``
    on the command line, which would otherwise be silently ignored.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg, resolve=False))
    except OmegaConfBaseException as e:
        raise ConfigError(f"config does not match the schema: {e}".splitlines()[0]) from None
    from crelu.config.checks import check_values  # values: batch size, epochs, lr, milestones, device, ...

    check_values(cfg)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="crelu_schema", node=Config)
    from crelu.config.experiments import register_resolvers  # ${crelu_rows:<table>} for the table sweeps

    register_resolvers()
