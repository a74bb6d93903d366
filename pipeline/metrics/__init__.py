"""Task metrics accumulated over a split, evaluation helpers and multitask summaries (ΔT, Δp)."""

from pipeline.metrics.base import Metric
from pipeline.metrics.depth import DepthMetric
from pipeline.metrics.evaluate import evaluate, make_metrics, metrics_from_outputs
from pipeline.metrics.normals import NormalMetric
from pipeline.metrics.seg import SegMetric
from pipeline.metrics.summary import (
    METRIC_DIRECTIONS,
    DeltaSummary,
    delta_p,
    delta_t,
    metric_directions,
    metric_table,
    relative_changes,
)

__all__ = [
    "METRIC_DIRECTIONS",
    "DeltaSummary",
    "DepthMetric",
    "Metric",
    "NormalMetric",
    "SegMetric",
    "delta_p",
    "delta_t",
    "evaluate",
    "make_metrics",
    "metric_directions",
    "metric_table",
    "metrics_from_outputs",
    "relative_changes",
]
