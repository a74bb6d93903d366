"""Reference inputs and per-runtime outputs on disk: `.npz` (ours) and Polygraphy JSON (for people).

Validate saves `inputs.npz` and `outputs_<runtime>.npz` once; build compares against them in a fresh process,
the way Polygraphy's `--save-inputs/--save-outputs` and `--load-inputs/--load-outputs` hand data between
runs. Arrays are read with `allow_pickle=False`, so a file can hold nothing but plain arrays.

Polygraphy's JSON (verified against polygraphy 0.53.6, `polygraphy/json/serde.py` and
`comparator/struct.py`): an array is `{"array": base64(np.save bytes), "polygraphy_class": "ndarray"}`;
`--load-inputs` takes a JSON list of feed dicts (one per iteration); `--load-outputs` takes a `RunResults`:
`{"lst": [[runner_name, [IterationResult, ...]]], "polygraphy_class": "RunResults"}` where an
IterationResult is `{"outputs": {name: {"values": array, "polygraphy_class": "LazyArray"}},
"runtime": seconds, "runner_name": ..., "polygraphy_class": "IterationResult"}`.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_path
from pipeline.errors import DataError, MissingArtifactError

_TYPE_MARKER = "polygraphy_class"


def outputs_filename(runtime: str) -> str:
    """File name of one runtime's saved outputs, e.g. `outputs_onnxrt.npz`."""
    return f"outputs_{runtime}.npz"


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to an uncompressed `.npz` atomically (float outputs barely compress; loads stay fast).

    Raises:
        TypeError: For object arrays, which could only be read back with pickle.
    """
    plain = {str(k): np.ascontiguousarray(v) for k, v in arrays.items()}
    bad = [k for k, v in plain.items() if v.dtype.hasobject]
    if bad:
        raise TypeError(f"arrays {bad} have object dtype; only plain numeric arrays can be saved")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending a second `.npz`
            np.savez(f, **plain)
    return Path(path)


def load_npz(path: str | os.PathLike[str], *, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read a `.npz` written by `save_npz` (no pickle), optionally checking that `keys` are present.

    Raises:
        MissingArtifactError: If the file does not exist.
        DataError: If it is not a readable npz or lacks one of `keys`.
    """
    path = Path(path)
    if not path.exists():
        raise MissingArtifactError(f"{path} does not exist; run the stage that writes it first")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable npz of plain arrays: {e}") from None
    missing = [k for k in (keys or []) if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks arrays {missing} (has {sorted(arrays)})")
    return arrays


def split_batches(arrays: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Split equally long arrays along axis 0 into feed dicts of at most `batch_size` rows."""
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1 or batch_size < 1:
        raise ValueError(
            f"need arrays of one length and batch_size >= 1, got lengths {lengths}, {batch_size}"
        )
    n = lengths.pop()
    return [{k: v[i : i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]


# ---------------------------------------------------------------------------------------------------------
# Polygraphy JSON


def _encode_array(array: np.ndarray) -> dict[str, str]:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buf.getvalue()).decode(), _TYPE_MARKER: "ndarray"}


def _decode_array(obj: Mapping[str, Any]) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(obj["array"], validate=True)), allow_pickle=False)


def _write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))
    return Path(path)


def save_polygraphy_inputs(path: str | os.PathLike[str], feeds: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """Write feed dicts in the format of `polygraphy run --save-inputs` (read back by `--load-inputs`)."""
    return _write_json(path, [{name: _encode_array(a) for name, a in feed.items()} for feed in feeds])


def load_polygraphy_inputs(path: str | os.PathLike[str]) -> list[dict[str, np.ndarray]]:
    """Read a `--save-inputs` JSON file back into feed dicts."""
    return [{k: _decode_array(v) for k, v in feed.items()} for feed in json.loads(Path(path).read_text())]


def save_polygraphy_outputs(
    path: str | os.PathLike[str],
    iterations: Sequence[Mapping[str, np.ndarray]],
    runner_name: str,
    runtime_s: float | None = None,
) -> Path:
    """Write one runner's outputs (one dict per iteration) as a Polygraphy `RunResults` JSON file."""
    results = [
        {
            "outputs": {n: {"values": _encode_array(a), _TYPE_MARKER: "LazyArray"} for n, a in it.items()},
            "runtime": runtime_s,
            "runner_name": runner_name,
            _TYPE_MARKER: "IterationResult",
        }
        for it in iterations
    ]
    return _write_json(path, {"lst": [[runner_name, results]], _TYPE_MARKER: "RunResults"})


def load_polygraphy_outputs(path: str | os.PathLike[str]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Read a `RunResults` JSON file into `{runner_name: [outputs per iteration]}`."""
    data = json.loads(Path(path).read_text())
    return {
        runner: [{n: _decode_array(v["values"]) for n, v in it["outputs"].items()} for it in results]
        for runner, results in data["lst"]
    }
