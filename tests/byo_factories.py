"""Deliberately wrong model and data factories for the bring-your-own tests (importable as `tests.byo_factories`)."""

from __future__ import annotations

import torch
from torch import nn

from examples.custom_model.data import make_dataset
from examples.custom_model.model import build_model

NOT_CALLABLE = 42


def not_a_module(**kwargs):
    return "a string"


def raises(**kwargs):
    raise RuntimeError("out of coffee")


class _Wrap(nn.Module):
    def __init__(self, fn, **kwargs):
        super().__init__()
        self.inner, self.fn = build_model(**kwargs), fn

    def forward(self, image):
        return self.fn(self.inner(image))


def returns_tuple(**kwargs):
    return _Wrap(lambda out: tuple(out.values()), **kwargs)


def lacks_depth(**kwargs):
    return _Wrap(lambda out: {k: v for k, v in out.items() if k != "depth"}, **kwargs)


def extra_key(**kwargs):
    return _Wrap(lambda out: {**out, "edges": out["depth"]}, **kwargs)


def half_resolution(**kwargs):
    return _Wrap(lambda out: {**out, "seg": out["seg"][..., ::2, ::2]}, **kwargs)


def _mutated(split, tasks, mutate, **kwargs):
    ds = make_dataset(split, tasks, **kwargs)
    get = ds.__getitem__
    ds.__class__ = type("Mutated", (type(ds),), {"__getitem__": lambda self, i: mutate(get(i))})
    return ds


def data_lacks_seg(split, tasks, **kwargs):
    return _mutated(split, tasks, lambda s: {k: v for k, v in s.items() if k != "seg"}, **kwargs)


def data_wrong_shape(split, tasks, **kwargs):
    return _mutated(split, tasks, lambda s: {**s, "depth": s["depth"][0]}, **kwargs)


def data_wrong_dtype(split, tasks, **kwargs):
    return _mutated(split, tasks, lambda s: {**s, "seg": s["seg"].to(torch.int32)}, **kwargs)
