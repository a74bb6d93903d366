"""Channel structure of a model: coupled channel groups, conv MACs, zeroing and physical compaction.

Channels tied by a residual add, by summed branches or by a depthwise conv must be removed together. Torch-Pruning's
`DependencyGraph` (traced with autograd at an example input) finds those ties; this module turns its groups into
plain `ChannelGroup` records keyed by the group's first conv, decides which groups may be pruned and why not, and
removes channels physically (`compact_`). A removed channel that was fully zeroed first (`zero_channels_`: conv
weights and biases of every conv in the group and its BatchNorms' weight and bias) contributes nothing downstream,
so compaction is exact up to float rounding.

Channel indices of a group are the output-channel indices of its convs (all out-tied convs share them one to one;
groups where they do not are refused). A channel's filter in the group is `module(c).weight[idx]` for each conv `c`
in `group.convs` (for a depthwise conv that is its single 1-channel filter).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.ops import OPTYPE

from pipeline.errors import ConfigError

__all__ = [
    "ChannelGroup",
    "channel_groups",
    "compact_",
    "conv_macs",
    "kept_from_mask",
    "model_macs",
    "planned_macs",
    "zero_channels_",
]


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels pruned together. `convs`: every Conv2d whose output channels are tied (root first)."""

    name: str  # root conv: the group's first conv in named_modules order
    convs: tuple[str, ...]
    size: int
    macs_per_channel: int  # MACs removed per removed channel: producers' filters + consumers' input slices
    prunable: bool
    reason: str | None  # why not prunable
    norms: tuple[str, ...] = ()  # BatchNorms over the group's channels (zeroed with it)
    consumers: tuple[str, ...] = ()  # non-depthwise convs whose input channels shrink with the group (may be in convs)


# Elementwise ops (autograd names, without the trailing version digit) that mix or reorder channels: a group whose
# channels pass through one cannot be compacted exactly. tp treats every unknown op as channel-preserving.
# Spatial reductions (mean/sum/max over H, W) share autograd names with channel ones and are left out: the
# harden stage checks the compacted outputs against the zeroed model anyway.
_MIXING = ("Softmax", "LogSoftmax", "Norm", "LinalgVectorNorm", "Prod", "Cumsum", "Sort", "Topk", "Permute",
           "Transpose", "T", "Index", "Gather", "Flip", "Roll", "Unknown")
_UNTRACEABLE = {OPTYPE.RESHAPE: "a reshape/view", OPTYPE.SPLIT: "a split", OPTYPE.UNBIND: "an unbind",
                OPTYPE.EXPAND: "an expand", OPTYPE.SLICE: "a slice", OPTYPE.PARAMETER: "a bare nn.Parameter",
                OPTYPE.CUSTOMIZED: "a custom layer"}


@contextmanager
def _restored_modes(model: nn.Module) -> Iterator[None]:
    # tp's tracer calls model.eval(); a caller's train/eval flags are its own business.
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag


def _build_graph(model: nn.Module, example: Tensor) -> tuple[tp.DependencyGraph, dict[object, str]]:
    """tp's graph and the autograd nodes of the model's outputs (a conv whose output is returned as is has no
    separate output node in tp's graph)."""
    x = example.detach().clone().requires_grad_(True)  # a grad_fn everywhere, even with frozen parameters
    outputs: dict[object, str] = {}

    def forward(m: nn.Module, inputs: tuple[Tensor, ...]) -> object:
        out = m(*inputs)
        named = out.items() if isinstance(out, Mapping) else enumerate(tp.utils.flatten_as_list(out))
        outputs.update({t.grad_fn: str(k) for k, t in named if isinstance(t, Tensor)})
        return out

    with _restored_modes(model), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            DG = tp.DependencyGraph().build_dependency(model, example_inputs=(x,), forward_fn=forward, verbose=False)
            return DG, outputs
        except Exception as e:  # noqa: BLE001 - any tracing failure is a model tp cannot resolve
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(
                f"channel pruning cannot trace {type(model).__name__}'s channel coupling ({type(e).__name__}: "
                f"{first}); use sparsity.structure=unstructured for this model"
            ) from None


def _conv_names(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@torch.no_grad()
def conv_macs(model: nn.Module, example: Tensor) -> dict[str, int]:
    """MACs per image of every Conv2d that runs at this input size (a conv run twice counts twice), by name."""
    names = _conv_names(model)
    macs: dict[str, int] = {}

    def hook(m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
        per_out = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        macs[names[m]] = macs.get(names[m], 0) + out[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with _restored_modes(model):
            model.eval()
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return {n: macs[n] for n in names.values() if n in macs}


def model_macs(model: nn.Module, example: Tensor) -> int:
    """Total conv MACs per image at the example's size (the denominator of a MAC budget)."""
    return sum(conv_macs(model, example).values())


def planned_macs(model: nn.Module, groups: Sequence[ChannelGroup], macs: Mapping[str, int],
                 kept: Mapping[str, float | Tensor]) -> float | Tensor:
    """Conv MACs per image after keeping `kept[g.name]` channels of each group (others whole), without compacting.

    A conv costs `macs[c] * (kept out / out) * (kept in / in)`, so the result equals `model_macs` of the compacted
    model for integer counts; float or tensor counts (a soft budget) give the same bilinear form, differentiable.
    `macs` is `conv_macs(model, example)`; `groups` from `channel_groups` on the same model.
    """
    modules = dict(model.named_modules())
    out_frac: dict[str, float | Tensor] = {}
    in_lost: dict[str, float | Tensor] = {}
    for g in groups:
        if g.name not in kept:
            continue
        k = kept[g.name]
        for c in g.convs:
            out_frac[c] = k / g.size
        for c in g.consumers:
            in_lost[c] = in_lost.get(c, 0.0) + (g.size - k)
    total: float | Tensor = 0.0
    for name, value in macs.items():
        m = modules[name]
        frac_in = 1.0 if _depthwise(m) else (m.in_channels - in_lost.get(name, 0.0)) / m.in_channels
        total = total + value * out_frac.get(name, 1.0) * frac_in
    return total


def _depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _node_label(DG: tp.DependencyGraph, node: object) -> str:
    name = DG._module2name.get(node.module)
    return f"'{name}'" if name else str(node.module)


def _describe(DG: tp.DependencyGraph, outputs: Mapping[object, str], root: nn.Conv2d, names: dict[nn.Module, str],
              macs: Mapping[str, int]) -> tuple[ChannelGroup, str | None]:
    """The group rooted at `root`, with its structural reason (or None) and an untraceable op (or None)."""
    size = root.out_channels
    group = DG.get_pruning_group(root, DG.get_pruner_of_module(root).prune_out_channels, list(range(size)))
    outs, ins, norms = [], [], []
    reason = untraceable = None
    for dep, idxs in group:
        node, mod = dep.target, dep.target.module
        out_fn = DG.is_out_channel_pruning_fn(dep.handler)
        if out_fn and node.grad_fn in outputs:
            reason = f"produces model output '{outputs[node.grad_fn]}'"
        if isinstance(mod, nn.Conv2d):
            (outs if out_fn or _depthwise(mod) else ins).append(mod)
            if mod.groups > 1 and not _depthwise(mod):
                reason = reason or f"coupled with grouped conv '{names[mod]}' (groups={mod.groups})"
            if out_fn and list(idxs) != list(range(size)):
                reason = reason or f"channels of '{names[mod]}' map onto the group's through a concat or split"
        elif node.type == OPTYPE.BN:
            norms.append(DG._module2name[mod])
        elif node.type == OPTYPE.OUTPUT:
            reason = f"produces model output '{outputs.get(node.grad_fn, '?')}'"
        elif node.type in (OPTYPE.ELEMENTWISE, OPTYPE.CONCAT):
            op = str(getattr(mod, "_grad_fn", "")).rstrip("0123456789").removesuffix("Backward")
            if op in _MIXING:
                untraceable = untraceable or f"a channel-mixing '{op}' op"
        elif node.type in _UNTRACEABLE:
            untraceable = untraceable or _UNTRACEABLE[node.type]
        else:
            reason = reason or f"coupled with dense layer {_node_label(DG, node)} ({type(mod).__name__})"
    order = {m: i for i, m in enumerate(names)}
    outs = sorted(set(outs), key=order.__getitem__)
    ins = sorted(set(ins), key=order.__getitem__)
    # One channel's filters plus its input slices; a conv reading its own group (a residual block's last conv
    # whose input is the block input) shares one weight per tap between the two, counted once.
    per_channel = sum(macs.get(names[m], 0) // m.out_channels for m in outs)
    per_channel += sum(macs.get(names[m], 0) // m.in_channels for m in ins)
    per_channel -= sum(macs.get(names[m], 0) // (m.in_channels * m.out_channels) for m in set(ins) & set(outs))
    g = ChannelGroup(names[outs[0]], tuple(names[m] for m in outs), size, per_channel, reason is None, reason,
                     tuple(dict.fromkeys(norms)), tuple(names[m] for m in ins))
    return g, untraceable


def _all_groups(model: nn.Module, example: Tensor) -> tuple[tp.DependencyGraph, list[tuple[ChannelGroup, str | None]]]:
    DG, outputs = _build_graph(model, example)
    names = _conv_names(model)
    macs = conv_macs(model, example)
    seen: set[str] = set()
    out = []
    for m, name in names.items():
        if name in seen:
            continue
        if m not in DG.module2node:
            if name in macs:  # it ran, but autograd never linked it to an output
                out.append((ChannelGroup(name, (name,), m.out_channels, 0, False, "not reached from any output"),
                            "an op autograd cannot follow (detached or no-grad)"))
            continue
        g, untraceable = _describe(DG, outputs, m, names, macs)
        seen.update(g.convs)
        out.append((g, untraceable))
    return DG, sorted(out, key=lambda p: list(names.values()).index(p[0].name))


def channel_groups(model: nn.Module, example: Tensor, prunable: Collection[str]) -> list[ChannelGroup]:
    """Every channel group of `model` at `example`'s size, in module order.

    A group is prunable when all its convs are in `prunable` (the layers the sparsity rules give a component) and
    none of its channels is a model output, a grouped conv's or a dense layer's. Raises ConfigError naming the
    layer when a group that would be prunable passes its channels through an op whose channel mapping is unknown
    (a reshape, a slice, a reduction over channels, ...).
    """
    prunable = set(prunable)
    _, pairs = _all_groups(model, example)
    out = []
    for g, untraceable in pairs:
        dense = [c for c in g.convs if c not in prunable]
        if g.reason is None and not dense and untraceable:
            raise ConfigError(
                f"channel pruning cannot resolve the coupling of layer '{g.name}': its channels pass through "
                f"{untraceable}; leave it dense with a sparsity rule {{match: '{g.name}', component: null}} "
                "or use sparsity.structure=unstructured"
            )
        if g.reason is None and dense:
            g = ChannelGroup(g.name, g.convs, g.size, g.macs_per_channel, False,
                             f"coupled with dense layer '{dense[0]}'", g.norms, g.consumers)
        out.append(g)
    return out


def kept_from_mask(mask: Tensor) -> Tensor:
    """Kept channel indices (sorted int64) from a boolean keep mask over a group's channels."""
    return torch.nonzero(mask.reshape(-1).bool()).reshape(-1).to(torch.int64)


def _kept(name: str, size: int, kept: Tensor | Sequence[int]) -> list[int]:
    idx = sorted({int(i) for i in (kept.reshape(-1).tolist() if isinstance(kept, Tensor) else kept)})
    if not idx:
        raise ConfigError(
            f"channel pruning would remove every channel of layer '{name}' ({size} channels); a layer keeps at "
            "least one: lower sparsity.target or leave the layer dense with a sparsity rule"
        )
    if idx[0] < 0 or idx[-1] >= size:
        raise ConfigError(f"channel plan for layer '{name}' keeps index {idx[-1] if idx[-1] >= size else idx[0]}, "
                          f"outside its {size} channels")
    return idx


@torch.no_grad()
def zero_channels_(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, Tensor | Sequence[int]]
                   ) -> nn.Module:
    """Zero the removed channels of each group in `keep` (conv weights and biases, BN weights and biases), in place.

    The zeroed model computes what `compact_` with the same `keep` computes, up to float rounding.
    """
    modules = dict(model.named_modules())
    by_name = {g.name: g for g in groups}
    for name, kept in keep.items():
        if name not in by_name:
            raise ConfigError(f"channel plan names '{name}', which is not a channel group of this model")
        g = by_name[name]
        drop = torch.ones(g.size, dtype=torch.bool)
        drop[_kept(name, g.size, kept)] = False
        for layer in (*g.convs, *g.norms):
            m = modules[layer]
            m.weight[drop] = 0
            if m.bias is not None:
                m.bias[drop] = 0
    return model


@torch.no_grad()
def compact_(model: nn.Module, example: Tensor, keep: Mapping[str, Tensor | Sequence[int]]) -> nn.Module:
    """Remove every channel not kept, physically and in place: convs, BNs and consumers' input channels.

    `keep`: group name (root conv) -> kept indices of the uncompacted group. Groups not named keep all channels.
    Raises ConfigError for an unknown group, a group that cannot be pruned, or a keep of zero channels.
    """
    DG, pairs = _all_groups(model, example)
    by_name = {g.name: (g, u) for g, u in pairs}
    modules = dict(model.named_modules())
    plans = []
    for name, kept in keep.items():
        if name not in by_name:
            raise ConfigError(f"channel plan names '{name}', which is not a channel group of this model")
        g, untraceable = by_name[name]
        idx = _kept(name, g.size, kept)
        if len(idx) == g.size:
            continue
        if g.reason or untraceable:
            raise ConfigError(f"channel plan prunes layer '{name}', which cannot be pruned: {g.reason or untraceable}")
        plans.append((g, [i for i in range(g.size) if i not in set(idx)]))
    with _restored_modes(model), torch.enable_grad():
        for g, drop in plans:
            root = modules[g.name]
            DG.get_pruning_group(root, DG.get_pruner_of_module(root).prune_out_channels, drop).prune()
    return model
