"""Fixtures for the dataset tests: tiny scene configs with a per-test cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import DataConfig


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> DataConfig:
    """A 32x40 scenes config with 8 train / 4 val images, caching under this test's tmp_path."""
    return DataConfig(
        name="scenes", root=str(tmp_path / "cache"), height=32, width=40, num_train=8, num_val=4
    )
