"""Test-suite defaults: one torch thread (the 2-core CI machine is oversubscribed otherwise), no progress bars."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("TQDM_DISABLE", "1")
torch.set_num_threads(1)
