"""ΔT (AdapMTL sum form) and Δp (LibMTL mean form) against method.md section 11.1."""

from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.metrics import METRIC_DIRECTIONS, delta_p, delta_t, metric_table, relative_changes

SEG, NORMAL, DEPTH = (
    ("miou", "pix_acc"),
    tuple(METRIC_DIRECTIONS["normal"]),
    tuple(METRIC_DIRECTIONS["depth"]),
)

# method.md 11.1 (MobileNetV2, NYU-v2, 90% sparsity), as printed: seg, normals, depth, then ΔT1, ΔT2, ΔT3, ΔT.
TABLE = {
    "Dense": (
        [19.94, 48.71],
        [17.85, 16.21, 29.77, 72.19, 86.19],
        [0.64, 0.24, 58.93, 86.27, 96.16],
        (0, 0, 0, 0),
    ),
    "SNIP": (
        [18.96, 46.93],
        [18.33, 16.97, 28.93, 71.21, 85.78],
        [0.64, 0.25, 56.75, 85.71, 95.33],
        (-8.57, -12.03, -9.38, -9.99),
    ),
    "LTH": (
        [19.14, 47.25],
        [17.67, 16.32, 29.67, 72.15, 86.22],
        [0.65, 0.25, 57.68, 85.89, 96.13],
        (-7.01, -0.03, -8.32, -5.12),
    ),
    "IMP": (
        [18.76, 48.12],
        [18.71, 16.68, 29.63, 71.76, 85.91],
        [0.64, 0.23, 59.75, 86.52, 96.31],
        (-7.13, -9.11, 6.00, -3.41),
    ),
    "DiSparse": (
        [19.87, 48.83],
        [17.92, 16.79, 29.87, 71.76, 85.64],
        [0.65, 0.24, 58.42, 85.72, 96.28],
        (-0.10, -4.87, -2.94, -2.64),
    ),
    "w/o adaptive thresholds": (
        [18.93, 47.51],
        [18.16, 16.87, 28.37, 71.53, 86.63],
        [0.65, 0.24, 58.26, 85.82, 95.92],
        (-7.53, -10.91, -3.47, -7.30),
    ),
    "AdapMTL": (
        [20.16, 49.14],
        [17.53, 15.96, 30.16, 72.36, 86.51],
        [0.64, 0.24, 59.03, 86.57, 96.38],
        (1.99, 5.25, 0.75, 2.66),
    ),
}


def metrics(row: str) -> dict[str, dict[str, float]]:
    seg, normal, depth, _ = TABLE[row]
    return {
        "seg": dict(zip(SEG, seg, strict=True)),
        "normal": dict(zip(NORMAL, normal, strict=True)),
        "depth": dict(zip(DEPTH, depth, strict=True)),
    }


def test_adapmtl_row_reproduces_exactly() -> None:
    result = delta_t(metrics("AdapMTL"), metrics("Dense"))
    per = result["per_task"]
    assert round(per["seg"], 2) == 1.99
    assert round(per["normal"], 2) == 5.25
    # Abs/rel equal the dense row after rounding, so the δ terms alone give ΔT3 = 0.746 -> 0.75.
    assert round(per["depth"], 2) == 0.75
    assert round(result["overall"], 2) == 2.66


@pytest.mark.parametrize("row", list(TABLE))
def test_every_row_rounds_to_the_printed_values(row: str) -> None:
    """All 28 printed ΔT numbers follow from the printed (two-decimal) metrics: |ΔT - printed| < 0.005."""
    result = delta_t(metrics(row), metrics("Dense"))
    got = (
        result["per_task"]["seg"],
        result["per_task"]["normal"],
        result["per_task"]["depth"],
        result["overall"],
    )
    for value, printed in zip(got, TABLE[row][3], strict=True):
        assert abs(value - printed) < 0.005, (row, value, printed)


def test_imp_depth_shows_the_rounding_sensitivity() -> None:
    """method.md 10: rel err 0.23 vs 0.24 alone is +4.17 of IMP's ΔT3 = 6.00."""
    per = delta_t({"depth": metrics("IMP")["depth"]}, metrics("Dense"))["per_task"]
    rel_term = (0.24 - 0.23) / 0.24 * 100
    assert rel_term == pytest.approx(4.1667, abs=1e-4)
    assert per["depth"] == pytest.approx(
        rel_term + (0.82 / 58.93 + 0.25 / 86.27 + 0.15 / 96.16) * 100, abs=1e-9
    )


def test_delta_t_terms_by_hand() -> None:
    seg = (20.16 - 19.94) / 19.94 * 100 + (49.14 - 48.71) / 48.71 * 100
    normal = (
        -(17.53 - 17.85) / 17.85
        - (15.96 - 16.21) / 16.21
        + (30.16 - 29.77) / 29.77
        + (72.36 - 72.19) / 72.19
        + (86.51 - 86.19) / 86.19
    ) * 100
    depth = (0.0 + 0.0 + (59.03 - 58.93) / 58.93 + (86.57 - 86.27) / 86.27 + (96.38 - 96.16) / 96.16) * 100
    result = delta_t(metrics("AdapMTL"), metrics("Dense"))
    assert result["per_task"] == pytest.approx({"seg": seg, "normal": normal, "depth": depth}, abs=1e-12)
    assert result["overall"] == pytest.approx((seg + normal + depth) / 3, abs=1e-12)


def test_delta_p_by_hand() -> None:
    """LibMTL mean form on the AdapMTL row: 0.993, 1.050, 0.149 -> 0.73 (method.md 10: 'would give 0.73')."""
    dt = delta_t(metrics("AdapMTL"), metrics("Dense"))["per_task"]
    result = delta_p(metrics("AdapMTL"), metrics("Dense"))
    expected = {"seg": dt["seg"] / 2, "normal": dt["normal"] / 5, "depth": dt["depth"] / 5}
    assert result["per_task"] == pytest.approx(expected, abs=1e-12)
    assert result["per_task"]["seg"] == pytest.approx((0.22 / 19.94 + 0.43 / 48.71) * 100 / 2, abs=1e-12)
    assert result["overall"] == pytest.approx(0.7309, abs=1e-4)
    assert round(result["overall"], 2) == 0.73


def test_subset_of_tasks_and_dense_is_zero() -> None:
    dense = metrics("Dense")
    only_seg = delta_t({"seg": metrics("AdapMTL")["seg"]}, dense)
    assert only_seg["overall"] == only_seg["per_task"]["seg"] == pytest.approx(1.98609, abs=1e-5)
    assert delta_p(dense, dense) == {"per_task": {"seg": 0.0, "normal": 0.0, "depth": 0.0}, "overall": 0.0}


def test_errors_name_the_problem() -> None:
    dense = metrics("Dense")
    with pytest.raises(ValueError, match="unknown task 'edges'"):
        delta_t({"edges": {}}, dense)
    with pytest.raises(PipelineError, match="no metrics for task 'seg'"):
        delta_t({"seg": dense["seg"]}, {"depth": dense["depth"]})
    with pytest.raises(ValueError, match="seg.pix_acc missing from the model"):
        delta_t({"seg": {"miou": 1.0}}, dense)
    with pytest.raises(PipelineError, match="dense baseline metrics"):
        delta_t({"seg": dense["seg"]}, {"seg": {"miou": 1.0}})
    with pytest.raises(PipelineError, match="nonzero baseline"):
        relative_changes({"seg": dense["seg"]}, {"seg": {"miou": 0.0, "pix_acc": 1.0}})


def test_a_zero_baseline_leaves_that_metric_undefined_with_the_reason() -> None:
    dense = metrics("Dense")
    seg = dense["seg"]
    result = delta_p({"seg": seg}, {"seg": {"miou": 0.0, "pix_acc": seg["pix_acc"]}})
    assert result["undefined"] == {"seg.miou": "dense seg.miou = 0.0; a relative change needs a finite nonzero baseline"}
    assert result["per_task"] == {"seg": 0.0} and result["overall"] == 0.0  # pix_acc alone, equal to dense
    none_left = delta_t({"seg": seg}, {"seg": {"miou": 0.0, "pix_acc": float("nan")}})
    assert none_left["per_task"] == {} and none_left["overall"] is None and len(none_left["undefined"]) == 2


def test_metric_table_has_every_metric_and_delta() -> None:
    table = metric_table({"dense": metrics("Dense"), "adapmtl": metrics("AdapMTL")}, dense=metrics("Dense"))
    lines = table.splitlines()
    assert len(lines) == 4 and "seg.miou↑" in lines[0] and "normal.mean↓" in lines[0]
    assert lines[-1].endswith("| +2.66 |") and "+1.99" in lines[-1]
