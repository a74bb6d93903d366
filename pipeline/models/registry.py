"""Model registry: `@register_model(name)` factories, `create_model`, `list_models`.

A factory takes `tasks` (task -> output channels) plus keyword overrides and returns a `MultiTaskNet`.
`create_model` stamps `model.spec = {"name", "kwargs"}` (plain JSON values) so that checkpoints can rebuild
the exact architecture with `create_model(spec["name"], **spec["kwargs"])`.

Example:
    >>> from pipeline.models import create_model
    >>> model = create_model("tiny_mtl", {"seg": 7, "depth": 1, "normal": 3})
    >>> sorted(model(*model.example_inputs(height=32, width=32)))
    ['depth', 'normal', 'seg']
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.multitask import MultiTaskNet, check_tasks

__all__ = ["create_model", "list_models", "register_model"]

ModelFactory = Callable[..., MultiTaskNet]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register `fn(tasks, **kwargs) -> MultiTaskNet` under `name` (a programming error if taken)."""

    def deco(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_builtin() -> None:
    # The built-in zoo registers itself on import; importing it lazily avoids a registry <-> zoo cycle.
    import pipeline.models.zoo  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def _plain(value: Any) -> Any:
    """Tuples become lists, recursively, so the spec equals its own JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def create_model(
    name: str, tasks: Mapping[str, int] | None = None, kinds: Mapping[str, str] | None = None, **kwargs: Any
) -> MultiTaskNet:
    """Build a registered model.

    Both `create_model(spec["name"], **spec["kwargs"])` and `create_model(**spec)` rebuild from a spec.

    Args:
        name: registry name (see `list_models()`).
        tasks: task name -> output channels, e.g. {"seg": 7, "depth": 1, "normal": 3}; order is output order.
        kinds: task name -> kind when names differ from kinds (e.g. {"semantic": "seg"}); None: names are kinds.
            Recorded in the spec only when some name differs from its kind.
        **kwargs: factory overrides (e.g. `head_width=32`); must be plain JSON values.

    Returns:
        The model, in training mode, with PyTorch default init and `model.spec` set.

    Raises:
        ConfigError: unknown model, bad tasks, an unknown keyword, or non-JSON keyword values.
    """
    if tasks is None and set(kwargs) == {"kwargs"} and isinstance(kwargs["kwargs"], Mapping):
        kwargs = dict(kwargs["kwargs"])  # called as create_model(**spec)
        tasks = kwargs.pop("tasks", None)
        kinds = kwargs.pop("kinds", None)
    if tasks is None:
        raise ConfigError(f"model '{name}' needs tasks, e.g. {{'seg': 7, 'depth': 1, 'normal': 3}}")
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}' (available: {', '.join(sorted(_REGISTRY))})")
    tasks = check_tasks(tasks, kinds)
    kinds = dict(kinds) if kinds is not None and any(n != k for n, k in kinds.items()) else None
    factory = _REGISTRY[name]
    params = inspect.signature(factory).parameters
    accepted = [p for p in params if p != "tasks"]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params or k in ("tasks", "kinds")]
        if bad:
            raise ConfigError(
                f"model '{name}' has no option(s) {', '.join(map(repr, bad))} (available: {', '.join(accepted)})"
            )
    spec = {"name": name, "kwargs": _plain({"tasks": tasks, **({"kinds": kinds} if kinds else {}), **kwargs})}
    try:
        json.dumps(spec)
    except (TypeError, ValueError):
        raise ConfigError(
            f"model '{name}' options must be plain values (numbers, strings, lists): {kwargs!r}"
        ) from None
    try:
        model = factory(tasks, **kwargs)
    except ValueError as e:  # a bad option value (e.g. three widths): a config problem, not a crash
        raise ConfigError(f"model '{name}': {e}") from None
    _check_layers(name, kwargs, model)
    if kinds is not None:
        model.set_task_kinds(kinds)
    model.spec = spec
    return model


def _check_layers(name: str, kwargs: Mapping[str, Any], model: nn.Module) -> None:
    """Refuse options that build but cannot run (zero channels, dilation <= 0): torch only fails in forward."""
    for mod_name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            bad = [f"{k} {v}" for k, v in (("channels", (m.in_channels, m.out_channels)), ("dilation", m.dilation))
                   if min(v) <= 0]
            if bad:
                raise ConfigError(
                    f"model '{name}' options {dict(kwargs)!r} give layer {mod_name} {', '.join(bad)}; "
                    "'model.kwargs' widths and dilations must be positive"
                )
