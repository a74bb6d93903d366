"""BatchNorm folding: the one implementation, used when hardening and when rebuilding a hardened model.

Folding scales each output channel of a conv, so zeros and 2:4 patterns survive. The folded conv gains a bias
and the BatchNorm becomes Identity; a model folded this way has exactly the state_dict keys of the saved one.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.errors import PipelineError

__all__ = ["fold_batchnorm_"]


@torch.no_grad()
def fold_batchnorm_(model: nn.Module, only: Collection[str] | None = None) -> list[str]:
    """Fold every BatchNorm2d that directly follows a plain Conv2d inside an nn.Sequential into that conv (eval mode).

    `only`: fold just these conv names (to rebuild the structure a checkpoint lists; its weights are loaded
    afterwards, so the values folded here do not matter) and raise PipelineError when one of them is not a
    conv followed by a BatchNorm. Returns the folded conv names. Callers check the outputs are unchanged.
    """
    folded = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules.keys())
        for a, b in zip(keys, keys[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            name = f"{parent_name}.{a}" if parent_name else a
            if only is not None and name not in only:
                continue
            if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
                fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
                conv.weight.copy_(fused.weight)
                conv.bias = nn.Parameter(fused.bias.detach().clone())
                parent._modules[b] = nn.Identity()
                folded.append(name)
    if only is not None and set(only) - set(folded):
        missing = sorted(set(only) - set(folded))
        raise PipelineError(
            f"batch-norm folding: {missing[0]} is not a conv followed by a BatchNorm in this model "
            f"({len(missing)} such names); the checkpoint was written for a different model"
        )
    return folded
