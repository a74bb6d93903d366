"""Run configuration schema: frozen dataclasses, the known task kinds and datasets, and value checks.

A leaf module: it imports nothing from the project.
Names that live in registries (models, sparsity methods) are checked by `check_registered_names`, with the
registry names passed in by the caller (the stage engine and the CLI, see `pipeline.orchestrate`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pipeline.config.tasks import TASK_KINDS, as_task_kinds, task_problems

DatasetName = Literal["scenes", "nyuv2_mtan", "nyuv2_png"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)


# -- field domains -------------------------------------------------------------------------------------------------
# Every numeric or container field declares the values it accepts next to its default (dataclass field metadata),
# so `check_values` checks them all and a test walks them all. `bad` is an out-of-domain value of the right type.


@dataclass(frozen=True)
class Domain:
    text: str  # completes "'<field>' = <value> must be ..."
    ok: Callable[[Any], bool]
    bad: Any


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            bad: Any = None) -> Domain:
    """A finite number in a (half-)open or closed interval; None leaves a side unbounded."""
    def ok(v: Any) -> bool:
        return _finite(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (
            hi is None or (v < hi if hi_open else v <= hi))
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    text = f"a finite number in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    return Domain(text, ok, math.nan if bad is None else bad)


POSITIVE_INT = Domain("positive", lambda v: _finite(v) and v > 0, 0)
NON_NEGATIVE_INT = Domain("zero or positive", lambda v: _finite(v) and v >= 0, -1)
POSITIVE = Domain("positive and finite", lambda v: _finite(v) and v > 0, math.nan)
NON_NEGATIVE = Domain("zero or positive and finite", lambda v: _finite(v) and v >= 0, math.nan)
FRACTION = between(0.0, 1.0, bad=1.5)
SEED = Domain(f"an integer in [0, {2**32 - 1}]", lambda v: _finite(v) and 0 <= v < 2**32, 2**64 + 1)
FINITE = Domain("finite", _finite, math.nan)
OPSETS = (18, 23)  # dynamo exports opset 18+; torch 2.13 writes up to 23 (TorchScript up to 20)
OPSET = Domain(f"an opset in {OPSETS[0]}..{OPSETS[1]} (the exporter raises lower ones to 18)",
               lambda v: _finite(v) and OPSETS[0] <= v <= OPSETS[1], 7)
DEVICE = Domain("'cpu', 'cuda' or 'cuda:<index>'", lambda v: re.fullmatch(r"cpu|cuda(:[0-9]+)?", str(v)) is not None,
                "bogus")
BETAS = Domain("two numbers in [0, 1), e.g. [0.9, 0.999]", lambda v: all(_finite(b) and 0 <= b < 1 for b in v),
               (2.0, 2.0))
# Tolerance keys are task names or kinds (a kind's entry covers its tasks); which exist is a cross-field check.
TOLERANCES = Domain(
    "a map with a 'default' entry and finite tolerances >= 0 per task name or kind, e.g. {default: 1e-4}",
    lambda v: "default" in v and all(_finite(x) and x >= 0 for x in v.values()),
    {"default": math.nan},
)
PRIORITY = Domain(
    "a map from task name to a finite weight >= 0",
    lambda v: all(_finite(x) and x >= 0 for x in v.values()),
    {"seg": -1.0},
)
BATCHES = Domain("a non-empty list of positive batch sizes", lambda v: bool(v) and all(_finite(b) and b > 0 for b in v),
                 [0])
TARGET = Domain("in (0, 1), e.g. 0.9 (method dense: any value in [0, 1])", lambda v: _finite(v) and 0 <= v <= 1, 1.5)
OPTIONAL_POSITIVE = Domain("null or positive and finite", lambda v: v is None or (_finite(v) and v > 0), math.nan)


def dom(default: Any, domain: Domain) -> Any:
    """A dataclass field with a declared domain (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"domain": domain})
    return field(default=default, metadata={"domain": domain})


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and for the built-in procedural scenes how to render it."""

    name: DatasetName = "scenes"
    root: str | None = None  # dataset directory for real data; cache directory for scenes (None: ./.cache)
    height: int = dom(64, between(16, bad=8))
    width: int = dom(80, between(16, bad=8))
    num_train: int = dom(1500, POSITIVE_INT)
    num_val: int = dom(300, POSITIVE_INT)
    num_classes: int = dom(7, between(2, bad=1))
    min_objects: int = dom(2, NON_NEGATIVE_INT)
    max_objects: int = dom(5, NON_NEGATIVE_INT)
    noise: float = dom(0.02, NON_NEGATIVE)
    seed: int = dom(0, SEED)
    # Bring your own data: "package.module:callable", called as callable(split, tasks, **kwargs); replaces `name`.
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    name: str | None = "scene_aspp"  # a registered model; null (or left at the default) with `factory`
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None  # bring your own model: "package.module:callable", called with `kwargs` only


@dataclass(frozen=True)
class WeightingConfig:
    """Task-loss weighting. `adaptive` is AdapMTL's sliding-window rule (method.md section 5)."""

    kind: Literal["auto", "static", "adaptive"] = "auto"  # auto: what the sparsity method prescribes
    begin: int = dom(300, NON_NEGATIVE_INT)  # warm-up steps with all weights 1
    window: int = dom(100, POSITIVE_INT)  # sliding-window length
    normalise_to: float | None = dom(None, OPTIONAL_POSITIVE)  # None: number of tasks; 3 reproduces the paper's constant
    smoothing: float = dom(0.0, between(0.0, 1.0, hi_open=True, bad=1.0))  # EMA factor applied to losses before differencing (0 = paper)
    priority: dict[str, float] = dom({}, PRIORITY)  # manual p_t, default 1
    normalise_losses: bool = False  # divide each task loss by its running mean (relative-change objective)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = dom(1200, POSITIVE_INT)
    batch_size: int = dom(16, POSITIVE_INT)
    lr: float = dom(1e-3, POSITIVE)
    weight_decay: float = dom(0.0, NON_NEGATIVE)
    lr_schedule: Literal["cosine", "constant", "step"] = "cosine"
    step_size: int = dom(4000, POSITIVE_INT)  # for lr_schedule=step
    gamma: float = dom(0.5, POSITIVE)
    betas: tuple[float, float] = dom((0.9, 0.999), BETAS)
    depth_loss: Literal["l1", "log_l1"] = "log_l1"
    seed: int = dom(0, SEED)
    eval_every: int = dom(0, NON_NEGATIVE_INT)  # 0: only at the end
    log_every: int = dom(20, POSITIVE_INT)
    checkpoint_every: int = dom(200, NON_NEGATIVE_INT)
    device: str = dom("cpu", DEVICE)
    num_threads: int = dom(0, NON_NEGATIVE_INT)  # 0: leave torch's default
    init: Literal["default", "normal001"] = "normal001"  # normal001: prunable convs ~ N(0, 0.01) as in AdapMTL
    dense_init: str | None = None  # path to a checkpoint to start from (prune-and-fine-tune)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)


# `sparsity.target` when a config does not set it: a weight fraction for unstructured pruning, a MAC fraction for
# channel pruning. Removing 90 % of the MACs is far harsher than zeroing 90 % of the weights (on the demo model it
# cost 44.6 dT and failed the int8 gate, against 8.3 dT at 0.5; docs/cost.md), so channel runs default lower.
DEFAULT_TARGET = {"unstructured": 0.9, "channel": 0.5}


@dataclass(frozen=True)
class SparsityConfig:
    """Which pruning method, at which overall target, and how thresholds learn the split."""

    method: str = "adapmtl"
    target: float = dom(DEFAULT_TARGET["unstructured"], TARGET)  # unset in a config: DEFAULT_TARGET[structure]
    structure: Literal["unstructured", "channel"] = "unstructured"  # unit pruned: single weights, or whole output channels (physically smaller convs, a MAC budget)
    # Cubic ramp of the target (Zhu & Gupta) between these fractions of training; held afterwards.
    ramp_start: float = dom(0.0, FRACTION)
    ramp_end: float = dom(0.7, FRACTION)
    update_every: int = dom(10, POSITIVE_INT)  # mask/offset refresh interval for magnitude methods, disparse_dynamic and the allocation rule
    # Learned allocation (improved AdapMTL): preconditioned threshold step size and bounds.
    alloc_signal: Literal["gradient", "saliency"] = "gradient"  # what measures a component's marginal cost
    alloc_lr: float = dom(0.05, POSITIVE)
    alloc_ema: float = dom(0.9, between(0.0, 1.0, hi_open=True, bad=1.0))
    alloc_bound: float = dom(3.0, POSITIVE)  # |s_c| <= bound (log-scale threshold offset)
    component_max: float = dom(0.995, between(0.0, 1.0, lo_open=True, hi_open=True, bad=0.0))
    component_min: float = dom(0.0, between(0.0, 1.0, hi_open=True, bad=1.0))
    # Sigmoid thresholds: the paper-faithful mode (Adam + one coupled decay, freeze at ratio) and STR.
    init: float = dom(-9.0, FINITE)  # adapmtl_faithful: initial s (the official sInit)
    threshold_lr: float = dom(0.01, POSITIVE)  # str: the thresholds' own Adam learning rate
    threshold_decay: float = dom(1.0, NON_NEGATIVE)  # str: coupled decay on its thresholds
    faithful_decay: float = dom(1e-4, NON_NEGATIVE)  # adapmtl_faithful: the one coupled L2 decay on all parameters
    str_init: float | None = dom(None, Domain("null or a finite number", lambda v: v is None or _finite(v), math.nan))  # str: initial s (None: the dev table in trainers/sparsity/sigmoid.py)
    imp_rounds: int = dom(3, POSITIVE_INT)  # imp: pruning rounds inside the run's step budget (each followed by a rewind)
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
    finetune_steps: int = dom(0, NON_NEGATIVE_INT)  # masked fine-tune after 2:4 projection
    finetune_lr: float = dom(2e-4, POSITIVE)
    adaptive_min_sparsity: float = dom(0.5, FRACTION)  # adaptive-2:4: layers whose learned sparsity is at least this become 2:4
    channel_multiple: int = dom(8, POSITIVE_INT)  # channel structure: round kept channels up to a multiple (zero channels)
    min_channels: int = dom(16, POSITIVE_INT)  # 2:4 eligibility: in-channels multiple of 16 and out-channels multiple of 8
    fold_bn: bool = True


@dataclass(frozen=True)
class ExportConfig:
    opset: int = dom(18, OPSET)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    dynamic_hw: bool = False
    simplifier: Literal["onnxsim", "onnxslim", "none"] = "onnxsim"
    max_batch: int = dom(64, POSITIVE_INT)


@dataclass(frozen=True)
class ValidateConfig:
    samples: int = dom(32, POSITIVE_INT)
    batch_size: int = dom(8, POSITIVE_INT)
    atol: dict[str, float] = dom({"default": 1e-4}, TOLERANCES)
    rtol: float = dom(1e-3, NON_NEGATIVE)
    metric_atol: float = dom(1e-4, NON_NEGATIVE)
    # k of the metric rule (deploy.compare): thresholded metrics may differ by k near-tie pixels' worth
    metric_flip_pixels: int = dom(4, NON_NEGATIVE_INT)
    real_data: str | None = "auto"  # "auto": the development sample folder when present (else skipped); a folder path; null to skip
    real_samples: int = dom(8, POSITIVE_INT)
    save_polygraphy_json: bool = True


@dataclass(frozen=True)
class BuildConfig:
    precision: Literal["fp16", "fp32"] = "fp16"
    min_batch: int = dom(1, POSITIVE_INT)
    opt_batch: int = dom(8, POSITIVE_INT)
    max_batch: int = dom(16, POSITIVE_INT)
    workspace_mb: int = dom(2048, POSITIVE_INT)
    require_tensorrt: bool = False
    ort_gpu: bool = True
    latency_batches: list[int] = dom([1, 8], BATCHES)
    warmup: int = dom(20, NON_NEGATIVE_INT)
    iters: int = dom(200, POSITIVE_INT)
    atol: dict[str, float] = dom({"default": 2e-2, "seg": 5e-2}, TOLERANCES)
    miou_tol: float = dom(0.5, NON_NEGATIVE)


@dataclass(frozen=True)
class QuantizeConfig:
    """The `quantize:` section: INT8 (QDQ) quantization of the exported model, its gate and latency table.

    Defaults measured on the demo model (docs/quantize_notes.md). `gate` keys are `deploy.task_gate.GateTolerances`
    fields (a dict, like `validate.atol`, so YAML maps 1:1). Calibration images come from the TRAIN split.
    """

    mode: Literal["none", "int8"] = "none"  # the demo preset sets int8
    calibration_samples: int = dom(64, POSITIVE_INT)  # TRAIN-split images; more than the split is a ConfigError at stage time
    calibration_method: Literal["minmax", "entropy", "percentile"] = "percentile"
    percentile: float = dom(99.999, between(0.0, 100.0, lo_open=True, bad=0.0))  # only for percentile calibration
    calibration_batch_size: int = dom(8, POSITIVE_INT)
    per_channel: bool = True  # weights are always symmetric int8
    activation_type: Literal["uint8", "int8"] = "uint8"
    reduce_range: bool = False
    exclude: list[str] = dom([], Domain("a list of distinct Conv node names", lambda v: len(set(v)) == len(v) and all(isinstance(n, str) and n for n in v), [""]))  # Conv node names left in fp32 by the user
    auto_exclude: bool = True  # per-layer sensitivity search when the full int8 model fails the gate
    max_auto_exclude: int = dom(4, NON_NEGATIVE_INT)
    gate: dict[str, float] = dom({}, Domain("a map from gate tolerance name to a finite number >= 0", lambda v: all(_finite(x) and x >= 0 for x in v.values()), {"seg_miou_drop_max": -1.0}))  # overrides of deploy.task_gate.GateTolerances
    # Latency table (ONNX Runtime CPU, side by side): batch sizes, intra-op threads (empty: 1 and all cores).
    latency_batches: list[int] = dom([1, 8], BATCHES)
    latency_threads: list[int] = dom([], Domain("a list of positive thread counts (empty: 1 and all cores)", lambda v: all(_finite(t) and t > 0 for t in v), [0]))
    latency_warmup: int = dom(5, NON_NEGATIVE_INT)
    latency_rounds: int = dom(5, POSITIVE_INT)
    latency_iters: int = dom(10, POSITIVE_INT)


@dataclass(frozen=True)
class RunConfig:
    # The heads: a list of kinds (names equal kinds) or an ordered mapping name -> kind, as written (so list-form
    # configs keep their fingerprints). Read `task_names` / `task_kinds`, not this union.
    tasks: list[str] | dict[str, str] = field(default_factory=lambda: list(TASK_KINDS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    harden: HardenConfig = field(default_factory=HardenConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    dense_reference: str | None = None  # run dir of a dense run for delta_t / delta_p; "auto": train one

    @property
    def task_names(self) -> list[str]:
        """Head names in output order (the keys of outputs, batches, metrics and ONNX outputs)."""
        return list(self.tasks)

    @property
    def task_kinds(self) -> dict[str, str]:
        """Ordered task name -> kind (`seg`, `depth`, `normal`)."""
        return as_task_kinds(self.tasks)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    out = plain(dataclasses.asdict(cfg))
    # Unset factory fields are left out, so configs without them keep their fingerprints and hashes.
    for section, keys in _FACTORY_KEYS.items():
        for key in keys:
            if out[section].get(key) in (None, {}):
                out[section].pop(key)
    return out


_FACTORY_KEYS = {"model": ("factory",), "data": ("factory", "kwargs")}
_FACTORY_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def check_factory_fields(cfg: RunConfig) -> list[str]:
    """Form checks of `model.factory` / `data.factory` (importing them happens when the model/data is built)."""
    problems = []
    for section in ("model", "data"):
        path = getattr(cfg, section).factory
        if path is not None and not _FACTORY_PATH.match(path):
            problems.append(f"'{section}.factory' = {path!r} must look like 'package.module:callable'")
    if cfg.model.factory is not None and cfg.model.name not in (None, ModelConfig.name):
        problems.append("'model.name' and 'model.factory' are mutually exclusive; set 'model.name: null'")
    if cfg.model.factory is None and cfg.model.name is None:
        problems.append("'model.name' is null: name a registered model or give 'model.factory'")
    return problems


def check_registered_names(
    cfg: RunConfig, *, models: Iterable[str] | None = None, methods: Iterable[str] | None = None
) -> list[str]:
    """Problems with the model and sparsity-method names, checked against registries the caller passes in.

    The registries live above the config (models, trainers); passing their names in keeps this module a leaf.
    A registry left as None is not checked.
    """
    problems: list[str] = []
    if models is not None and cfg.model.factory is None:
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


def field_problems(obj: Any, path: str = "") -> list[str]:
    """Every field whose value lies outside its declared domain, with the domain in the message."""
    problems: list[str] = []
    for f in dataclasses.fields(obj):
        value, where = getattr(obj, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += field_problems(value, where + ".")
            continue
        d = f.metadata.get("domain")
        try:
            ok = d is None or bool(d.ok(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            shown = list(value) if isinstance(value, tuple) else value
            problems.append(f"'{where}' = {shown!r} must be {d.text}")
    return problems


def _cross_field_problems(cfg: RunConfig) -> list[str]:
    """Fields that are each in their domain but do not fit together."""
    problems: list[str] = []
    sp = cfg.sparsity
    if sp.method != "dense" and sp.target in (0.0, 1.0):
        problems.append(f"'sparsity.target' = {sp.target} must be in (0, 1), e.g. 0.9")
    if not sp.ramp_start < sp.ramp_end:
        problems.append("'sparsity.ramp_start' < 'sparsity.ramp_end' must both lie in [0, 1]")
    if not sp.component_min <= sp.component_max:
        problems.append(f"'sparsity.component_min' = {sp.component_min} must not exceed 'sparsity.component_max'")
    if sp.structure == "channel" and cfg.harden.pattern != "unstructured":
        problems.append(
            f"'sparsity.structure' = channel with 'harden.pattern' = {cfg.harden.pattern}: channel pruning exports "
            "dense-shaped smaller convs; 2:4 and adaptive-2:4 apply to unstructured only -- set "
            "harden.pattern=unstructured or sparsity.structure=unstructured"
        )
    unknown = [t for t in cfg.train.weighting.priority if t not in cfg.tasks]
    if unknown:
        problems.append(f"'train.weighting.priority' names {unknown}, not in 'tasks' {cfg.task_names}")
    known = {"default", *cfg.tasks}
    for where, atol in (("validate.atol", cfg.validate.atol), ("build.atol", cfg.build.atol)):
        # a kind the run does not use is harmless (the default build.atol names seg); a stray name is a typo
        stray = [k for k in atol if k not in known and k not in TASK_KINDS]
        if stray:
            problems.append(f"'{where}' names {stray}: keys are 'default', task names ({', '.join(cfg.tasks)}) "
                            "or kinds")
    if cfg.export.exporter == "torchscript" and cfg.export.opset > 20:
        problems.append(f"'export.opset' = {cfg.export.opset}: the TorchScript exporter writes opset 20 at most")
    d = cfg.data
    if d.factory is not None:
        pass  # a factory's samples are checked when the dataset is built
    elif d.name == "scenes":
        if d.num_classes < 4:
            problems.append(f"'data.num_classes' = {d.num_classes}: scenes need at least 4 (floor, wall, ceiling, objects)")
        if not d.min_objects <= d.max_objects:
            problems.append("'data.min_objects' must be between 0 and 'data.max_objects'")
    elif d.root is None and d.name != "nyuv2_png":
        problems.append(f"'data.root' is required for dataset '{d.name}' (the dataset directory)")
    b = cfg.build
    if not (b.min_batch <= b.opt_batch <= b.max_batch):
        problems.append("'build.min_batch' <= 'build.opt_batch' <= 'build.max_batch' must hold, all >= 1")
    return problems


def check_values(
    cfg: RunConfig, *, models: Iterable[str] | None = None, methods: Iterable[str] | None = None
) -> list[str]:
    """Every field against its domain, then the cross-field rules (names too, when registries are given)."""
    problems = task_problems(cfg.tasks)
    problems += check_registered_names(cfg, models=models, methods=methods)
    problems += check_factory_fields(cfg)
    domain = field_problems(cfg)
    # cross-field rules only make sense on values that are each in range
    return problems + domain + ([] if domain else _cross_field_problems(cfg))
