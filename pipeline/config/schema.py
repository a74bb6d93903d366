"""Run configuration schema: frozen dataclasses, the known task kinds and datasets, and value checks.

A leaf module: it imports nothing from the project.
Names that live in registries (models, sparsity methods) are checked by `check_registered_names`, with the
registry names passed in by the caller (the stage engine and the CLI, see `pipeline.orchestrate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

TASK_KINDS = ("seg", "depth", "normal")
DatasetName = Literal["scenes", "nyuv2_mtan", "nyuv2_png"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and for the built-in procedural scenes how to render it."""

    name: DatasetName = "scenes"
    root: str | None = None  # dataset directory for real data; cache directory for scenes (None: ./.cache)
    height: int = 64
    width: int = 80
    num_train: int = 1500
    num_val: int = 300
    num_classes: int = 7
    min_objects: int = 2
    max_objects: int = 5
    noise: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    name: str = "scene_aspp"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightingConfig:
    """Task-loss weighting. `adaptive` is AdapMTL's sliding-window rule (method.md section 5)."""

    kind: Literal["auto", "static", "adaptive"] = "auto"  # auto: what the sparsity method prescribes
    begin: int = 300  # warm-up steps with all weights 1
    window: int = 100  # sliding-window length
    normalise_to: float | None = None  # None: number of tasks; 3 reproduces the paper's constant
    smoothing: float = 0.0  # EMA factor applied to losses before differencing (0 = paper)
    priority: dict[str, float] = field(default_factory=dict)  # manual p_t, default 1
    normalise_losses: bool = False  # divide each task loss by its running mean (relative-change objective)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: Literal["cosine", "constant", "step"] = "cosine"
    step_size: int = 4000  # for lr_schedule=step
    gamma: float = 0.5
    betas: tuple[float, float] = (0.9, 0.999)
    depth_loss: Literal["l1", "log_l1"] = "log_l1"
    seed: int = 0
    eval_every: int = 0  # 0: only at the end
    log_every: int = 20
    checkpoint_every: int = 200
    device: str = "cpu"
    num_threads: int = 0  # 0: leave torch's default
    init: Literal["default", "normal001"] = "normal001"  # normal001: prunable convs ~ N(0, 0.01) as in AdapMTL
    dense_init: str | None = None  # path to a checkpoint to start from (prune-and-fine-tune)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)


@dataclass(frozen=True)
class SparsityConfig:
    """Which pruning method, at which overall target, and how thresholds learn the split."""

    method: str = "adapmtl"
    target: float = 0.9
    # Cubic ramp of the target (Zhu & Gupta) between these fractions of training; held afterwards.
    ramp_start: float = 0.0
    ramp_end: float = 0.7
    update_every: int = 10  # mask/offset refresh interval for magnitude methods and the allocation rule
    # Learned allocation (improved AdapMTL): preconditioned threshold step size and bounds.
    alloc_signal: Literal["gradient", "saliency"] = "gradient"  # what measures a component's marginal cost
    alloc_lr: float = 0.05
    alloc_ema: float = 0.9
    alloc_bound: float = 3.0  # |s_c| <= bound (log-scale threshold offset)
    component_max: float = 0.995
    component_min: float = 0.0
    # Paper-faithful mode (sigmoid thresholds, Adam + coupled decay, freeze at ratio).
    init: float = -9.0
    threshold_lr: float = 0.01
    threshold_decay: float = 1.0
    # Which modules are prunable: ordered glob rules, first match wins; component null = leave dense.
    rules: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"match": "heads.*.classifier*", "component": None},
            {"match": "backbone.*", "component": "backbone"},
            {"match": "heads.{task}.*", "component": "{task}"},
        ]
    )
    split_from: str | None = None  # gmp_split: run dir or sparsity.json whose per-component split is reused


@dataclass(frozen=True)
class HardenConfig:
    pattern: Literal["unstructured", "2:4", "adaptive-2:4"] = "unstructured"
    finetune_steps: int = 0  # masked fine-tune after 2:4 projection
    finetune_lr: float = 2e-4
    adaptive_min_sparsity: float = 0.5  # adaptive-2:4: layers whose learned sparsity is at least this become 2:4
    min_channels: int = 16  # 2:4 eligibility: in-channels multiple of 16 and out-channels multiple of 8
    fold_bn: bool = True


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 18
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    dynamic_hw: bool = False
    simplifier: Literal["onnxsim", "onnxslim", "none"] = "onnxsim"
    max_batch: int = 64


@dataclass(frozen=True)
class ValidateConfig:
    samples: int = 32
    batch_size: int = 8
    atol: dict[str, float] = field(default_factory=lambda: {"default": 1e-4})
    rtol: float = 1e-3
    metric_atol: float = 1e-4
    # k of the metric rule (deploy.compare): thresholded metrics may differ by k near-tie pixels' worth
    metric_flip_pixels: int = 4
    real_data: str | None = "auto"  # "auto": ../shared/realdata/nyuv2_test50 when present; null to skip
    real_samples: int = 8
    save_polygraphy_json: bool = True


@dataclass(frozen=True)
class BuildConfig:
    precision: Literal["fp16", "fp32"] = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 16
    workspace_mb: int = 2048
    require_tensorrt: bool = False
    ort_gpu: bool = True
    latency_batches: list[int] = field(default_factory=lambda: [1, 8])
    warmup: int = 20
    iters: int = 200
    atol: dict[str, float] = field(default_factory=lambda: {"default": 2e-2, "seg": 5e-2})
    miou_tol: float = 0.5


@dataclass(frozen=True)
class RunConfig:
    tasks: list[str] = field(default_factory=lambda: list(TASK_KINDS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    harden: HardenConfig = field(default_factory=HardenConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    dense_reference: str | None = None  # run dir of a dense run for delta_t / delta_p; "auto": train one


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def check_registered_names(
    cfg: RunConfig, *, models: Iterable[str] | None = None, methods: Iterable[str] | None = None
) -> list[str]:
    """Problems with the model and sparsity-method names, checked against registries the caller passes in.

    The registries live above the config (models, trainers); passing their names in keeps this module a leaf.
    A registry left as None is not checked.
    """
    problems: list[str] = []
    if models is not None:
        models = sorted(models)
        if cfg.model.name not in models:
            problems.append(f"unknown model '{cfg.model.name}' (available: {', '.join(models)})")
    if methods is not None:
        methods = list(methods)
        if cfg.sparsity.method not in methods:
            problems.append(
                f"unknown sparsity method '{cfg.sparsity.method}' (available: {', '.join(methods)})"
            )
    return problems


def check_values(
    cfg: RunConfig, *, models: Iterable[str] | None = None, methods: Iterable[str] | None = None
) -> list[str]:
    """Range and cross-field checks that types alone cannot express (names too, when registries are given)."""
    problems: list[str] = []
    if not cfg.tasks:
        problems.append("'tasks' is empty; name at least one of " + ", ".join(TASK_KINDS))
    for t in cfg.tasks:
        if t not in TASK_KINDS:
            problems.append(f"unknown task '{t}' in 'tasks' (available: {', '.join(TASK_KINDS)})")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        problems.append(f"'tasks' lists a task twice: {cfg.tasks}")
    problems += check_registered_names(cfg, models=models, methods=methods)
    if not (0.0 < cfg.sparsity.target < 1.0) and cfg.sparsity.method != "dense":
        problems.append(f"'sparsity.target' = {cfg.sparsity.target} must be in (0, 1), e.g. 0.9")
    if not (0.0 <= cfg.sparsity.ramp_start < cfg.sparsity.ramp_end <= 1.0):
        problems.append("'sparsity.ramp_start' < 'sparsity.ramp_end' must both lie in [0, 1]")
    for name in ("steps", "batch_size", "log_every"):
        if getattr(cfg.train, name) <= 0:
            problems.append(f"'train.{name}' = {getattr(cfg.train, name)} must be positive")
    if cfg.train.lr <= 0:
        problems.append(f"'train.lr' = {cfg.train.lr} must be positive")
    d = cfg.data
    if d.height < 16 or d.width < 16:
        problems.append(f"'data.height'/'data.width' = {d.height}x{d.width}: at least 16x16 is needed")
    if d.name == "scenes":
        if d.num_classes < 4:
            problems.append(f"'data.num_classes' = {d.num_classes}: scenes need at least 4 (floor, wall, ceiling, objects)")
        if not (0 <= d.min_objects <= d.max_objects):
            problems.append("'data.min_objects' must be between 0 and 'data.max_objects'")
        if d.num_train <= 0 or d.num_val <= 0:
            problems.append("'data.num_train' and 'data.num_val' must be positive")
    elif d.root is None and d.name != "nyuv2_png":
        problems.append(f"'data.root' is required for dataset '{d.name}' (the dataset directory)")
    b = cfg.build
    if not (1 <= b.min_batch <= b.opt_batch <= b.max_batch):
        problems.append("'build.min_batch' <= 'build.opt_batch' <= 'build.max_batch' must hold, all >= 1")
    return problems
