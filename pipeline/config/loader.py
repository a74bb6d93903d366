"""Strict config loading: YAML 1.2 numbers, presets (`extends:`), `--set key=value` overrides, type checks.

Every problem in a config is collected and reported at once (ConfigError). Values are parsed with
`yaml.safe_load` rules only; nothing is ever evaluated as code.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config.schema import DEFAULT_TARGET, RunConfig, check_values
from pipeline.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


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


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (YAML would keep only the last one)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping_without_duplicates)


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


def config_from_dict(
    data: dict[str, Any], *, models: Iterable[str] | None = None, methods: Iterable[str] | None = None
) -> RunConfig:
    """Build and validate a RunConfig; raise ConfigError listing every problem.

    `models` / `methods`: registered names to check `model.name` / `sparsity.method` against (None: unchecked).
    """
    problems: list[str] = []
    cfg = _build(RunConfig, _structure_default_target(data or {}), "", problems)
    # on what did parse (defaults elsewhere), so every problem is listed at once
    problems += check_values(cfg, models=models, methods=methods)
    if problems:
        raise ConfigError(problems)
    return cfg



def _structure_default_target(data: dict[str, Any]) -> dict[str, Any]:
    """Fill `sparsity.target` from DEFAULT_TARGET[structure] when the config leaves it unset."""
    sparsity = data.get("sparsity")
    if not isinstance(sparsity, dict) or "target" in sparsity:
        return data
    structure = sparsity.get("structure", "unstructured")
    if not isinstance(structure, str) or structure not in DEFAULT_TARGET:
        return data  # the type check reports the bad structure
    return {**data, "sparsity": {**sparsity, "target": DEFAULT_TARGET[structure]}}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        data = yaml_load(text)
    except yaml.constructor.ConstructorError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        hint = "; configs hold plain values only (no tags like !!python/...)" if "tag" in str(e.problem) else ""
        raise ConfigError(f"config file {path}{where}: {e.problem}{hint}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def resolve_config_source(source: str | None, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a preset name or a YAML path into a plain dict (presets may `extends:` another preset)."""
    if source is None:
        source = "demo"
    path = Path(source)
    preset = PRESET_DIR / f"{source}.yaml"
    # A folder that happens to share a preset's name (e.g. a run directory called `tiny`) is not a config file.
    is_file = path.suffix in (".yaml", ".yml") or path.is_file() or (path.exists() and not preset.exists())
    if is_file:
        if path.is_dir():
            raise ConfigError(f"config {source} is a folder, not a YAML file; give a YAML path or a preset "
                              f"({', '.join(list_presets())})")
        if not path.exists():
            raise ConfigError(f"config file {source} does not exist; give a YAML path or a preset ({', '.join(list_presets())})")
        data = _read_yaml(path)
    else:
        if not preset.exists():
            raise ConfigError(f"unknown preset '{source}' (available: {', '.join(list_presets())}) and no such file")
        data = _read_yaml(preset)
    base = data.pop("extends", None)
    if base is not None:
        here = str(path.resolve()) if is_file else str(preset.resolve())
        if here in _seen:
            chain = " -> ".join([*_seen, here])
            raise ConfigError(f"config 'extends:' loops back on itself ({chain}); remove the cycle")
        data = deep_merge(resolve_config_source(str(base), (*_seen, here)), data)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("kwargs", "atol", "priority", "tasks"):
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
        except yaml.constructor.ConstructorError as e:  # e.g. a mapping naming a key twice
            problems.append(f"override '{item}': {e.problem}")
            continue
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


def load_config(
    source: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    models: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
) -> RunConfig:
    """Preset name or YAML path, plus `--set` overrides, into a validated RunConfig.

    `models` / `methods`: registered names to check against, in the same all-problems-at-once report; the
    stage engine passes them (`pipeline.orchestrate.load_run_config`), this module knows no registry.
    """
    data = apply_overrides(resolve_config_source(source), overrides)
    return config_from_dict(data, models=models, methods=methods)
