"""Small helpers shared by tests (importable as `tests.helpers`)."""

from __future__ import annotations

import dataclasses


def with_sparsity(cfg, **kw):
    return dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, **kw))


def with_train(cfg, **kw):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kw))


def with_section(cfg, section: str, **kw):
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **kw)})
