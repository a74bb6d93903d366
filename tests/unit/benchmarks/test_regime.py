"""The regime study's plan (which runs, from which weights, against which dense model) and its comparison."""

from __future__ import annotations

import pytest

from benchmarks.regime import compare, markdown, parse_args, plan_seed, regime_results


def _run(method, target, seed, miou):
    metrics = {
        "seg": {"miou": miou, "pix_acc": 80.0},
        "depth": {"abs_err": 0.5, "rel_err": 0.2, "delta1": 70.0, "delta2": 90.0, "delta3": 97.0},
        "normal": {"mean": 20.0, "median": 15.0, "within_11_25": 40.0, "within_22_5": 70.0, "within_30": 80.0},
    }
    return {"method": method, "target": target, "seed": seed, "metrics": metrics,
            "sparsity": {"overall": target, "components": {"backbone": target}, "thresholds": {}}, "seconds": 1.0}


def test_plan_prunes_from_the_dense_start_point_and_trains_long_runs_from_scratch(tmp_path):
    args = parse_args(["--split", "test2", "--methods", "adapmtl", "gmp_global", "--out", str(tmp_path)])
    assert args.seeds == [8, 9, 10, 11, 12] and args.long_steps == 1200
    start, free, after = plan_seed(args, 8)
    assert start["keep_checkpoint"] and "train.steps=600" in start["overrides"]
    assert "data.seed=1002" in start["overrides"]  # the split's data, not the dev data
    ckpt = f"train.dense_init={tmp_path}/from_trained/runs/dense_start_s8/checkpoint.pt"
    assert len(after) == 4 and all(ckpt in j["overrides"] and "train.steps=600" in j["overrides"] for j in after)
    assert [j["method"] for j in free] == ["dense", "adapmtl", "gmp_global", "adapmtl", "gmp_global"]
    assert all("train.steps=1200" in j["overrides"] and not any("dense_init" in o for o in j["overrides"])
               for j in free)
    assert {j["target"] for j in after} == {0.9, 0.97}


def test_long_steps_must_be_the_from_trained_total():
    with pytest.raises(SystemExit):
        parse_args(["--long-steps", "1000", "--dense-steps", "600", "--prune-steps", "600"])


def test_from_trained_is_scored_against_the_long_dense_model_and_rankings_follow_delta_t(tmp_path):
    import json

    def put(folder, run):
        d = tmp_path / folder / "runs" / f"{run['method']}_{run['target']}_s{run['seed']}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(run))

    for s in (8, 9):
        put("long", _run("dense", 0.0, s, 60.0))
        put("long", _run("adapmtl", 0.9, s, 57.0))
        put("long", _run("gmp_global", 0.9, s, 58.0 + s - 8))  # gmp ahead in the long regime
        put("from_trained", _run("dense", 0.0, s, 40.0))  # the 600-step start point: never a reference
        put("from_trained", _run("adapmtl", 0.9, s, 60.0))
        put("from_trained", _run("gmp_global", 0.9, s, 54.0))
    args = parse_args(["--seeds", "8", "9", "--methods", "adapmtl", "gmp_global", "--sparsities", "0.9",
                       "--out", str(tmp_path), "--base", str(tmp_path / "none.json")])
    per = regime_results(args)
    assert {r["metrics"]["seg"]["miou"] for r in per["from_trained"] if r["method"] == "dense"} == {60.0}
    cmp = compare(per)
    assert cmp["ranking"]["long"]["0.9"] == ["gmp_global", "adapmtl"]
    assert cmp["ranking"]["from_trained"]["0.9"] == ["adapmtl", "gmp_global"]
    assert "base" not in cmp["ranking"]  # no 400-step grid given
    ft = cmp["cells"]["adapmtl@0.9"]["from_trained"]
    assert ft["delta_t"] == pytest.approx(0.0)  # 60 mIoU against the long dense 60, not the start point's 40
    gap = cmp["cells"]["gmp_global@0.9"]["from_trained"]["reference_minus_this"]
    assert gap["mean"] == pytest.approx(6 / 60 * 100 / 3) and gap["ci95"][0] == pytest.approx(gap["mean"])
    md = markdown(cmp, {"command": "c", "date": "d", "machine": "m", "torch": "t", "split": "test2",
                        "seeds": [8, 9], "long_steps": 1200, "dense_steps": 600, "prune_steps": 600})
    assert "| gmp_global@0.9 | not run |" in md and "- long @ 0.9: gmp_global > adapmtl" in md


def test_readme_regime_table_equals_the_committed_study():
    """The README's regime table is the committed study's own table (benchmarks/results/regime_test2), verbatim."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    study = (root / "benchmarks/results/regime_test2/regime.md").read_text().splitlines()
    rows = [ln for ln in study if ln.startswith("| ") and "@" in ln]
    assert len(rows) >= 4
    readme = (root / "README.md").read_text()
    missing = [ln for ln in rows if ln not in readme]
    assert not missing, missing
