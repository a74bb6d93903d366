"""The quality benchmark's aggregation: ΔT against the dense mean, per-seed pairing, Markdown and plot."""

from __future__ import annotations

import json

import pytest

from benchmarks.aggregate import aggregate, write_results
from benchmarks.quality import plan_jobs


def _metrics(miou, abs_err, mean):
    return {
        "seg": {"miou": miou, "pix_acc": 80.0},
        "depth": {"abs_err": abs_err, "rel_err": 0.2, "delta1": 70.0, "delta2": 90.0, "delta3": 97.0},
        "normal": {"mean": mean, "median": 15.0, "within_11_25": 40.0, "within_22_5": 70.0, "within_30": 80.0},
    }


def _run(method, target, seed, miou):
    return {"method": method, "target": target, "seed": seed, "metrics": _metrics(miou, 0.5, 20.0),
            "sparsity": {"overall": target, "components": {"backbone": target, "seg": target}, "thresholds": {}},
            "seconds": 1.0}


def test_paired_differences_and_dense_mean():
    runs = [_run("dense", 0.0, 0, 60.0), _run("dense", 0.0, 1, 62.0)]
    runs += [_run("adapmtl", 0.9, 0, 60.0), _run("adapmtl", 0.9, 1, 62.0)]
    runs += [_run("gmp_global", 0.9, 0, 54.0), _run("gmp_global", 0.9, 1, 55.8)]
    agg = aggregate(runs)
    rows = {(r["method"], r["target"]): r for r in agg["rows"]}
    # dense mean mIoU 61: adapmtl seeds give -1.64 / +1.64 on seg -> ΔT over 3 tasks -0.55 / +0.55
    assert rows[("adapmtl", 0.9)]["delta_t"] == pytest.approx(0.0, abs=1e-9)
    gap = rows[("gmp_global", 0.9)]["adapmtl_minus_this_per_seed"]
    assert gap == pytest.approx([6 / 61 * 100 / 3, 6.2 / 61 * 100 / 3])
    assert rows[("gmp_global", 0.9)]["adapmtl_minus_this"] > 0


def test_write_results_and_job_plan(tmp_path):
    runs = [_run("dense", 0.0, 0, 60.0), _run("adapmtl", 0.9, 0, 59.0)]
    meta = {"command": "x", "date": "d", "machine": "m", "python": "3", "torch": "t", "steps": 1, "preset": "p",
            "seeds": 1, "run_seconds_total": 2.0, "jobs": 1}
    md = write_results(runs, meta, tmp_path)
    assert "| 0.90 | adapmtl |" in md.read_text()
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (tmp_path / "delta_t.png").read_bytes()[:4] == b"\x89PNG"

    class A:
        methods = ["dense", "adapmtl", "gmp_split"]
        sparsities = [0.9]
        seeds = 2
        steps = 10
        preset = "bench"
        out = str(tmp_path)
        set = None

    waves = plan_jobs(A)
    assert len(waves) == 4  # per seed: learned runs, then gmp_split reusing that seed's AdapMTL split
    assert [j["method"] for j in waves[1]] == ["gmp_split"] and waves[1][0]["seed"] == 0
    assert "adapmtl_0.9_s0" in " ".join(waves[1][0]["overrides"])
    assert {j["method"] for j in waves[0]} == {"dense", "adapmtl"} and waves[2][0]["seed"] == 1


def test_summary_table_pairs_flags_missed_targets_and_tables_are_well_formed():
    from benchmarks.aggregate import markdown, summary_table

    runs = [_run("dense", 0.0, s, 60.0) for s in (0, 1)]
    runs += [_run("adapmtl", 0.9, s, 59.0) for s in (0, 1)]
    runs += [_run("str", 0.9, s, 57.0 + s) for s in (0, 1)]
    missed = [_run("adapmtl_faithful", 0.9, s, 58.0) for s in (0, 1)]
    for r in missed:
        r["sparsity"]["overall"] = 0.93  # the freeze rule drifted past the target
    agg = aggregate(runs + missed)
    lines = summary_table(agg)
    row = {ln.split(" | ")[0]: ln for ln in lines if ln.startswith("| ")}
    assert row["| adapmtl"].count("[") == 0  # no pairing against itself
    g0, g1 = 2 / 60 * 100 / 3, 1 / 60 * 100 / 3  # paired gaps on seeds 0 and 1 (dense mean mIoU 60)
    rows = {r["method"]: r for r in agg["rows"]}
    lo, hi = rows["str"]["adapmtl_minus_this_ci95"]
    half = 12.706 * abs(g0 - g1) / 2 ** 0.5 / 2 ** 0.5  # t(0.975, 1) * sd / sqrt(n)
    assert (lo + hi) / 2 == pytest.approx(rows["str"]["adapmtl_minus_this"]) and (hi - lo) / 2 == pytest.approx(half, rel=1e-3)
    assert f"[{rows['str']['adapmtl_minus_this']:+.1f} ({lo:+.1f}, {hi:+.1f})]" in row["| str"]
    assert "*achieved 0.930*" in row["| adapmtl_faithful"] and "*achieved" not in row["| str"]
    meta = {"command": "x", "date": "d", "machine": "m", "python": "3", "torch": "t", "steps": 1, "preset": "p",
            "seeds": 2}
    md = markdown(agg, meta).splitlines()
    for i, ln in enumerate(md):  # every Markdown table: the delimiter row has as many cells as the header
        if ln.startswith("|---"):
            assert ln.count("---") == md[i - 1].count("|") - 1, md[i - 1]


def test_results_header_names_the_commit_and_uncommitted_files():
    from benchmarks.aggregate import markdown
    from benchmarks.provenance import git_state

    agg = aggregate([_run("dense", 0.0, 0, 60.0), _run("adapmtl", 0.9, 0, 59.0)])
    meta = {"command": "x", "date": "d", "machine": "m", "python": "3", "torch": "t", "steps": 1, "preset": "p",
            "seeds": 1, "git_commit": "0123456789abcdef", "git_dirty_files": ["trainers/loop.py"]}
    head = markdown(agg, meta).splitlines()[2]
    assert "commit `0123456789ab` (uncommitted changes in trainers/loop.py)" in head
    state = git_state()  # this checkout: a commit sha, or None outside git
    assert state["git_commit"] is None or len(state["git_commit"]) == 40


def test_t_quantiles_and_paired_interval():
    from benchmarks.aggregate import paired_interval, t_quantile_975

    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776 and t_quantile_975(30) == 2.042
    assert 1.96 < t_quantile_975(60) < t_quantile_975(31) < 2.042
    m, lo, hi = paired_interval([1.0, 2.0, 3.0, 2.5, 1.5])
    assert m == pytest.approx(2.0) and hi - m == pytest.approx(2.776 * 0.790569 / 5**0.5, rel=1e-5)
    assert paired_interval([1.0])[1:] == (float("-inf"), float("inf"))
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_heldout_test_split_differs_from_dev_and_has_five_paired_seeds():
    from benchmarks.heldout import SPLITS, parse_args, quality_argv

    dev, test = SPLITS["dev"], SPLITS["test"]
    assert len(test.seeds) >= 5 and min(test.seeds) >= 3 and not set(test.seeds) & set(dev.seeds)
    keys = {o.split("=")[0] for o in test.overrides}
    assert {"data.seed", "data.min_objects", "data.max_objects", "data.noise", "data.height"} <= keys
    argv = quality_argv(parse_args(["--split", "test", "--quick"]))
    assert "benchmarks/results/main" not in " ".join(argv)
    assert argv[argv.index("--only-seeds") + 1 : argv.index("--only-seeds") + 6] == ["3", "4", "5", "6", "7"]


def _docs_table(path, heading):
    """Rows of the first Markdown table after `heading`: {first cell: [cells]}."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(heading))
    table = []
    for ln in lines[start:]:
        if ln.startswith("|"):
            table.append([c.strip() for c in ln.strip("|").split("|")])
        elif table:
            break
    return table[0], table[2:]


def test_docs_tables_equal_the_committed_results():
    """docs/benchmarks.md and the README quote benchmarks/results/main/results.json: the numbers must match."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    res = json.loads((root / "benchmarks/results/main/results.json").read_text())
    by = {(r["method"], r["target"]): r for r in res["rows"]}
    checked = 0
    for path, heading in ((root / "docs/benchmarks.md", "| method | 0.5 |"), (root / "README.md", "| method | 0.5 |")):
        header, rows = _docs_table(path, heading)
        targets = [float(t) for t in header[1:]]
        for cells in rows:
            name = re.sub(r"[*`]|ablation:", "", cells[0]).split()[0]
            for t, cell in zip(targets, cells[1:]):
                m = re.search(r"([+−-]\d+\.\d) ± (\d+\.\d)", cell.replace("**", ""))
                if not m:
                    continue
                r = by[(name, t)]
                assert float(m.group(1).replace("−", "-")) == pytest.approx(round(r["delta_t"], 1), abs=0.051), (path.name, name, t)
                assert float(m.group(2)) == pytest.approx(round(r["delta_t_sd"], 1), abs=0.051), (path.name, name, t)
                checked += 1
    assert checked >= 40


@pytest.mark.parametrize("split", ["heldout_test", "heldout_test2"])
def test_readme_test_set_table_equals_the_committed_heldout_results(split):
    """The README's test-set tables are the summary tables of benchmarks/results/<split>/results.json, verbatim."""
    from pathlib import Path

    from benchmarks.aggregate import summary_table

    root = Path(__file__).resolve().parents[3]
    res = json.loads((root / f"benchmarks/results/{split}/results.json").read_text())
    rows = [line for line in summary_table(res) if line.startswith("| ")]
    assert len(rows) >= 3  # header plus at least two methods
    readme = (root / "README.md").read_text()
    missing = [line for line in rows if line not in readme]
    assert not missing, missing


def test_docs_test2_table_equals_the_committed_heldout_results():
    """docs/benchmarks.md's test2 table (`adapmtl` minus each method, paired 95 % interval) quotes
    benchmarks/results/heldout_test2/results.json: every cell must be the aggregate's own text."""
    import re
    from pathlib import Path

    from benchmarks.aggregate import _interval_text

    root = Path(__file__).resolve().parents[3]
    res = json.loads((root / "benchmarks/results/heldout_test2/results.json").read_text())
    by = {(r["method"], r["target"]): r for r in res["rows"]}
    header, rows = _docs_table(root / "docs/benchmarks.md", "| method (test2) |")
    targets = [float(t) for t in header[1:]]
    checked = 0
    for cells in rows:
        name = re.search(r"`([a-z0-9_]+)`", cells[0]).group(1)
        for t, cell in zip(targets, cells[1:]):
            assert _interval_text(by[(name, t)], 1) in cell.replace("−", "-"), (name, t, cell)
            checked += 1
    assert checked >= 2 * 10
