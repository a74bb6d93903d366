"""Run configuration: frozen dataclasses, strict YAML loading, `--set key=value` overrides.

Every problem in a config is collected and reported at once (ConfigError). Values are parsed with
`yaml.safe_load` only; nothing is ever evaluated as code.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"
TASK_KINDS = ("seg", "depth", "normal")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and for the built-in procedural scenes how to render it."""

    name: Literal["scenes", "nyuv2_mtan", "nyuv2_png"] = "scenes"
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


# ---------------------------------------------------------------------------------------------------------
# strict loading


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 numbers: `2:4` stays a string (YAML 1.1 reads it as the base-60 integer 124)
    and `1e-3` is a float (YAML 1.1 wants `1.0e-3`)."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _NUMBER_TAGS]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML safely (no code, no arbitrary objects) with YAML 1.2 number rules."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check and lightly coerce `value` against a type hint. Returns (ok, coerced value)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return (value in args), value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _type_ok(v, args[0]) if args else (True, v)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return False, value
        out = []
        for v, a in zip(value, args):
            ok, c = _type_ok(v, a)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        out = {}
        for k, v in value.items():
            ok_k, ck = _type_ok(k, args[0]) if args else (True, k)
            ok_v, cv = _type_ok(v, args[1]) if args else (True, v)
            if not (ok_k and ok_v):
                return False, value
            out[ck] = cv
        return True, out
    return isinstance(value, tp), value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(f"unknown key '{where}' ({hint}known: {', '.join(sorted(names))})")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where, problems)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            problems.append(f"'{where}' = {value!r} is not {_type_name(tp)}")
            continue
        kwargs[key] = coerced
    return cls(**kwargs)


def _check_values(cfg: RunConfig, problems: list[str]) -> None:
    """Range and cross-field checks that types alone cannot express."""
    from pipeline.models.registry import list_models  # late import: models import config types

    if not cfg.tasks:
        problems.append("'tasks' is empty; name at least one of " + ", ".join(TASK_KINDS))
    for t in cfg.tasks:
        if t not in TASK_KINDS:
            problems.append(f"unknown task '{t}' in 'tasks' (available: {', '.join(TASK_KINDS)})")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        problems.append(f"'tasks' lists a task twice: {cfg.tasks}")
    if cfg.model.name not in list_models():
        problems.append(f"unknown model '{cfg.model.name}' (available: {', '.join(list_models())})")
    from trainers.sparsity.methods import list_methods

    if cfg.sparsity.method not in list_methods():
        problems.append(
            f"unknown sparsity method '{cfg.sparsity.method}' (available: {', '.join(list_methods())})"
        )
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


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig; raise ConfigError listing every problem."""
    problems: list[str] = []
    cfg = _build(RunConfig, data or {}, "", problems)
    _check_values(cfg, problems)  # on what did parse (defaults elsewhere), so every problem is listed at once
    if problems:
        raise ConfigError(problems)
    return cfg


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


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml_load(text)
    except yaml.constructor.ConstructorError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(
            f"config file {path}{where}: {e.problem}; configs hold plain values only (no tags like !!python/...)"
        ) from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def resolve_config_source(source: str | None) -> dict[str, Any]:
    """Load a preset name or a YAML path into a plain dict (presets may `extends:` another preset)."""
    if source is None:
        source = "demo"
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {source} does not exist; give a YAML path or a preset ({', '.join(list_presets())})")
        data = _read_yaml(path)
    else:
        preset = PRESET_DIR / f"{source}.yaml"
        if not preset.exists():
            raise ConfigError(f"unknown preset '{source}' (available: {', '.join(list_presets())}) and no such file")
        data = _read_yaml(preset)
    base = data.pop("extends", None)
    if base is not None:
        data = deep_merge(resolve_config_source(str(base)), data)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("kwargs", "atol", "priority"):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings; values are parsed as YAML scalars/lists (never evaluated)."""
    out = copy.deepcopy(data)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override '{item}' must look like key.path=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            problems.append(f"override '{item}' has an empty key")
            continue
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return out


def load_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Preset name or YAML path, plus `--set` overrides, into a validated RunConfig."""
    return config_from_dict(apply_overrides(resolve_config_source(source), overrides))
