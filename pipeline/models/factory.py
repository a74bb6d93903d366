"""Bring your own model: resolve a `"package.module:callable"` factory path, build, check and rebuild its model.

A user's model comes from `model: {factory: "pkg.mod:fn", kwargs: {...}}`: `fn(**kwargs)` returns an `nn.Module`
whose `forward(image)` returns a dict keyed by the configured task names (shapes as in docs/architecture.md).
The model's `spec` is `{"name": path, "factory": path, "kwargs": kwargs}`; checkpoints store it, and
`rebuild_model(spec)` rebuilds a registered or a factory model from it (harden, export, validate).

Factory modules are imported normally; when that fails because the top-level package is not found, the current
working directory is tried as well (as `python -m` would), so `examples.custom_model.model:build` resolves when
the pipeline runs from the folder holding `examples/`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.models.registry import create_model

__all__ = ["build_factory_model", "check_model_outputs", "example_image", "rebuild_model", "resolve_factory"]


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or module_name.split(".")[0] != e.name.split(".")[0] or os.getcwd() in sys.path:
            raise
    sys.path.insert(0, os.getcwd())  # retry from the working directory, then leave sys.path as it was
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(os.getcwd())


def resolve_factory(path: str, key: str) -> Callable[..., Any]:
    """The callable named by `path` ("package.module:callable"); `key` (e.g. "model.factory") names it in errors."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"'{key}' = {path!r} must look like 'package.module:callable'")
    try:
        obj: Any = _import(module_name)
    except ImportError as e:
        raise ConfigError(
            f"'{key}': cannot import module '{module_name}' ({e}); put its folder on PYTHONPATH or run from the "
            "folder that holds it"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing: report it in one line
        raise ConfigError(f"'{key}': importing '{module_name}' raised {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"'{key}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"'{key}' = {path!r} is a {type(obj).__name__}, not a callable")
    return obj


def call_factory(fn: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with anything it raises turned into a one-line ConfigError naming `key`."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - user code: one line, no traceback
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        called = f" (kwargs {sorted(kwargs)})" if kwargs else ""
        raise ConfigError(f"'{key}' raised {type(e).__name__}: {first}{called}") from None


def build_factory_model(path: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Call the model factory with `kwargs` only and stamp `model.spec` so checkpoints can rebuild it."""
    plain = dict(kwargs)
    try:
        json.dumps(plain)
    except (TypeError, ValueError):
        raise ConfigError(f"'model.kwargs' must be plain values (numbers, strings, lists): {plain!r}") from None
    model = call_factory(resolve_factory(path, "model.factory"), "model.factory", **plain)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"'model.factory' {path} returned a {type(model).__name__}, not a torch nn.Module")
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ConfigError(f"'model.factory' {path} returned a model without Conv2d layers; nothing can be pruned")
    model.spec = {"name": path, "factory": path, "kwargs": plain}
    return model


def rebuild_model(spec: Mapping[str, Any]) -> nn.Module:
    """The architecture a checkpoint's `model` entry describes: a factory model or a registered one."""
    if spec.get("factory"):
        return build_factory_model(spec["factory"], spec.get("kwargs") or {})
    return create_model(spec["name"], **spec["kwargs"])


def _device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def example_image(model: nn.Module, batch: int, height: int, width: int) -> Tensor:
    """A seeded uniform RGB batch `[batch, 3, H, W]` on the model's device (the model's own when it has one)."""
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return own(batch=batch, height=height, width=width)[0]
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, height, width, generator=gen).to(_device(model))


@torch.no_grad()
def check_model_outputs(model: nn.Module, tasks: Mapping[str, int], height: int, width: int) -> None:
    """Run one seeded batch through `model` (eval mode, restored after) and check it returns
    `{task: [B, channels, H, W]}` for exactly the configured tasks; a one-line ConfigError otherwise."""
    where = getattr(model, "spec", {}).get("name", type(model).__name__)
    was_training = model.training
    model.eval()
    try:
        out = call_factory(model, f"model {where} forward", example_image(model, 2, height, width))
    finally:
        model.train(was_training)
    if not isinstance(out, Mapping):
        raise ConfigError(
            f"model {where}: forward(image) must return a dict keyed by task ({', '.join(tasks)}), "
            f"got {type(out).__name__}"
        )
    missing = [t for t in tasks if t not in out]
    extra = [k for k in out if k not in tasks]
    if missing or extra:
        raise ConfigError(
            f"model {where}: output keys {sorted(out)} do not match the tasks {list(tasks)}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
            f"{' (extra ' + ', '.join(map(str, extra)) + ')' if extra else ''}; return one output per configured task"
        )
    for task, channels in tasks.items():
        got = tuple(out[task].shape) if isinstance(out[task], Tensor) else type(out[task]).__name__
        want = (2, channels, height, width)
        if got != want:
            raise ConfigError(
                f"model {where}: output '{task}' has shape {got}, expected {want} ([B, {channels}, H, W] at the "
                "input resolution)"
            )
