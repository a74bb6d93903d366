from __future__ import annotations

import pytest
import torch

from pipeline.config import load_config


@pytest.fixture
def tiny_cfg(tmp_path, monkeypatch):
    """The tiny preset with its scene cache inside the test's tmp dir."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return load_config("tiny", ["dense_reference=null"])

