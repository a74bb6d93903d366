"""Small helpers shared by tests (importable as `tests.helpers`)."""

from __future__ import annotations

import dataclasses


def with_sparsity(cfg, **kw):
    return dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, **kw))


def with_train(cfg, **kw):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kw))


def with_section(cfg, section: str, **kw):
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **kw)})


def cli_fails_in_one_line(args: list, *needles: str) -> str:
    """Run the CLI with `args`; assert exit 1 with exactly one `error: ...` line on stderr, no traceback, that
    contains every needle. Returns the line."""
    from click.testing import CliRunner

    from pipeline.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]
