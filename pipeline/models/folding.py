"""BatchNorm folding: the one implementation, used when hardening and when rebuilding a hardened model.

Folding scales each output channel of a conv, so zeros and 2:4 patterns survive. The folded conv gains a bias
and the BatchNorm becomes Identity; a model folded this way has exactly the state_dict keys of the saved one.

Pairs are found two ways, both safe: adjacent (conv, BN) children of an nn.Sequential, and, from a torch.fx trace
of `forward`, a BN module whose one input is the output of a conv module that feeds nothing else, each module
called once (`self.bn(self.conv(x))` in a user's model). A model that cannot be traced keeps the Sequential pairs
only; the reason is logged and returned by `batchnorm_pairs`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.errors import PipelineError

__all__ = ["batchnorm_pairs", "fold_batchnorm_"]

log = logging.getLogger(__name__)


def _foldable_bn(m: nn.Module | None) -> bool:
    # without running statistics a BN normalises by the batch even in eval mode: nothing constant to fold
    return isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None


def _sequential_pairs(model: nn.Module) -> dict[str, str]:
    pairs = {}
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules.keys())
        for a, b in zip(keys, keys[1:]):
            if type(parent._modules[a]) is nn.Conv2d and _foldable_bn(parent._modules[b]):
                prefix = f"{parent_name}." if parent_name else ""
                pairs[prefix + a] = prefix + b
    return pairs


def _traced_pairs(model: nn.Module) -> dict[str, str]:
    graph = fx.symbolic_trace(model).graph
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable_bn(modules.get(node.target)):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        if (src.op == "call_module" and type(modules.get(src.target)) is nn.Conv2d and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1):
            pairs[src.target] = node.target
    return pairs


def batchnorm_pairs(model: nn.Module) -> tuple[dict[str, str], str | None]:
    """Foldable conv name -> BatchNorm2d name, in module order, and why the traced search failed (None if not)."""
    pairs = _sequential_pairs(model)
    reason = None
    try:
        pairs |= _traced_pairs(model)
    except Exception as e:  # noqa: BLE001 - any trace failure (data-dependent control flow, ...) only limits folding
        reason = f"torch.fx could not trace {type(model).__name__}.forward ({type(e).__name__}: {e}); " \
                 "folded the conv+BN pairs inside nn.Sequential only"
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return dict(sorted(pairs.items(), key=lambda kv: order[kv[0]])), reason


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[child] = module


@torch.no_grad()
def fold_batchnorm_(model: nn.Module, only: Collection[str] | None = None) -> list[str]:
    """Fold every BatchNorm2d fed only by a plain Conv2d into that conv (eval mode); see the module docstring.

    `only`: fold just these conv names (to rebuild the structure a checkpoint lists; its weights are loaded
    afterwards, so the values folded here do not matter) and raise PipelineError when one of them is not a
    conv followed by a BatchNorm. Returns the folded conv names. Callers check the outputs are unchanged.
    """
    pairs, reason = batchnorm_pairs(model)
    if reason is not None:
        log.warning("batch-norm folding: %s", reason)
    folded = []
    for conv_name, bn_name in pairs.items():
        if only is not None and conv_name not in only:
            continue
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        conv.weight.copy_(fused.weight)
        conv.bias = nn.Parameter(fused.bias.detach().clone())
        _set_module(model, bn_name, nn.Identity())
        folded.append(conv_name)
    if only is not None and set(only) - set(folded):
        missing = sorted(set(only) - set(folded))
        raise PipelineError(
            f"batch-norm folding: {missing[0]} is not a conv followed by a BatchNorm in this model "
            f"({len(missing)} such names); the checkpoint was written for a different model"
        )
    return folded
