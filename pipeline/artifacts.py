"""The run directory: the only place that knows file names, plus the manifest and atomic writes.

Layout: `<run>/config.yaml`, `<run>/manifest.json`, `<run>/report.json`, `<run>/report.md`, and one folder per
stage. A stage writes into `<stage>.tmp/` and the folder is swapped into place only when the stage succeeds,
so a killed stage never leaves a half-written artifact that a later stage could trust.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError

MANIFEST_SCHEMA = "mtl-compress.manifest/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The one atomic writer: yield a temporary path beside `path`; rename it into place on success.

    On any exception (or interruption) the temporary file is removed and `path` keeps its old content.
    The wrappers below (text, json, bytes, torch) and writers that want a file name (onnx, numpy) use it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, _umask_mode())  # mkstemp creates 0600; artifacts get the usual permissions
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible


@contextlib.contextmanager
def staged_output(path: str | Path) -> Iterator[Path]:
    """Yield a staging path with the same file name as `path`; move it (and its side files) into place on success.

    For writers that create side files next to their output (an ONNX model's `model.onnx.data`): the staging
    path sits in a fresh hidden folder beside `path`, so side files keep the relative names the main file
    refers to. Side files are moved first and the main file last, so a reader that sees the main file also
    sees its data. On an exception nothing is moved and the staging folder is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    staged = stage_dir / final.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written to the staging path {staged}")
        for side in sorted(stage_dir.iterdir()):
            if side != staged:
                os.replace(side, final.parent / side.name)
        os.replace(staged, final)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def clear_staging(staged: Path) -> None:
    """Remove everything a failed writer left in the staging folder of `staged` (before a retry)."""
    for item in staged.parent.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)



def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path} does not exist") from None
    except ValueError:
        raise PipelineError(f"{path} is not valid JSON (truncated or corrupted); re-run the stage that writes it") from None


def _record_problem(rec: Any, where: str) -> str | None:
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not isinstance(rec.get("sha256"), str):
        return f"{where} is not a {{path, sha256}} record"
    return None


def manifest_problem(data: Any) -> str | None:
    """What is wrong with the shape of a parsed manifest, or None (every reader relies on this shape)."""
    if not isinstance(data, dict):
        return f"expected an object, got {type(data).__name__}"
    if data.get("schema") != MANIFEST_SCHEMA:
        return f"schema {data.get('schema')!r}, expected {MANIFEST_SCHEMA}"
    if "config" in data and _record_problem(data["config"], "'config'"):
        return _record_problem(data["config"], "'config'")
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        return f"'stages' is {type(stages).__name__}, expected an object"
    for name, entry in stages.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
            return f"stage '{name}' has no status"
        for key in ("inputs", "outputs"):
            recs = entry.get(key, [])
            if not isinstance(recs, list):
                return f"stage '{name}' {key} is not a list"
            for rec in recs:
                if _record_problem(rec, f"a stage '{name}' {key[:-1]}"):
                    return _record_problem(rec, f"a stage '{name}' {key[:-1]}")
    return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RunDir:
    """A run directory. Every path a stage writes is resolved here and checked to stay inside it."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise PipelineError(f"run directory {root} is a file; choose a directory path with --run-dir")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise PipelineError(f"cannot create run directory {root}: {e.strerror}; choose another --run-dir") from None
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PipelineError(f"run directory {root} is not writable; fix its permissions or choose another --run-dir")
        elif not self.root.is_dir():
            raise PipelineError(f"run directory {root} does not exist; create it with `pipeline run all --run-dir {root}`")

    # file names ------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.json"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def path(self, *parts: str) -> Path:
        """`<run>/<parts>`, refused when it leads outside the run directory.

        The folders on the way are resolved (a linked folder pointing out of the run is refused); the last
        component is not: a file symlinked from elsewhere may be read (its sha256 is checked against the
        manifest), and the atomic writer replaces a link rather than writing through it.
        """
        lexical = Path(os.path.normpath(self.root / Path(*parts)))
        parent = lexical.parent.resolve()
        p = parent / lexical.name if lexical != self.root else self.root
        if (self.root not in p.parents and p != self.root) or lexical.name in ("", "..", "."):
            raise PipelineError(f"refusing to use {p}: outside the run directory {self.root}")
        return p

    def rel(self, p: Path) -> str:
        # lexical, not resolved: a file symlinked from elsewhere is recorded under its name in the run
        return str(Path(os.path.normpath(Path(p).absolute())).relative_to(self.root))

    # staging ---------------------------------------------------------------------------------------
    def claim(self) -> None:
        """Refuse a directory this project does not own: it must be empty or hold a run manifest.

        Stages replace whole folders (`train/`, `build/`, ...), so a run directory full of the user's own files
        is never taken over.
        """
        if self.manifest_path.exists():
            self.load_manifest()  # a corrupted or foreign manifest is refused with its own message
            return
        if self.root.is_dir() and any(self.root.iterdir()):
            raise PipelineError(
                f"run directory {self.root} is not empty and holds no manifest.json (not a run of this project); "
                "choose an empty or new --run-dir"
            )

    def _check_replaceable(self, stage: str) -> None:
        """A stage only replaces a real folder that the manifest says it wrote; links are never followed."""
        for name in (stage, f"{stage}.tmp", f"{stage}.old"):
            if (self.root / name).is_symlink():
                raise PipelineError(
                    f"{self.root / name} is a symbolic link; stage folders are written by the pipeline only; "
                    "remove the link and re-run the stage"
                )
        final = self.stage_dir(stage)
        if final.exists() and stage not in self.load_manifest().get("stages", {}):
            raise PipelineError(
                f"refusing to replace {final}: manifest.json records no stage '{stage}' writing it; "
                "move it out of the run directory and re-run"
            )

    @contextlib.contextmanager
    def staging(self, stage: str, keep_partial: bool = False) -> Iterator[Path]:
        """Yield `<stage>.tmp/`; on success replace `<stage>/` with it. On failure the old folder stays.

        Everything that can refuse is checked before the stage runs, so the commit itself is two renames.
        """
        self._check_replaceable(stage)
        tmp = self.path(f"{stage}.tmp")
        final, old = self.stage_dir(stage), self.path(f"{stage}.old")
        if old.exists():  # left by a commit interrupted between its renames
            shutil.rmtree(old)
        if tmp.exists() and not keep_partial:
            shutil.rmtree(tmp)
        elif tmp.exists():
            for junk in tmp.rglob(".*.tmp"):  # half-written temp files of a killed atomic write
                junk.unlink()
        tmp.mkdir(parents=True, exist_ok=True)
        yield tmp
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    # manifest --------------------------------------------------------------------------------------
    def load_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"schema": MANIFEST_SCHEMA, "run_id": self.root.name, "stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise PipelineError(
                f"{self.manifest_path} is not valid JSON (corrupted; it is only ever replaced atomically); delete it "
                f"and run `pipeline run all --run-dir {self.root}` to redo the stages"
            ) from None
        problem = manifest_problem(data)
        if problem:
            raise PipelineError(
                f"{self.manifest_path} is not a run manifest ({problem}); delete it and run "
                f"`pipeline run all --run-dir {self.root}` to redo the stages"
            )
        return data

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        data = self.load_manifest()
        for k, v in fields.items():
            if k == "stages":
                data.setdefault("stages", {}).update(v)
            else:
                data[k] = v
        atomic_write_json(self.manifest_path, data)
        return data

    def file_record(self, p: Path) -> dict[str, str]:
        return {"path": self.rel(p), "sha256": sha256_file(p)}
