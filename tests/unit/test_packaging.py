"""Packaging: one command gives one working ONNX Runtime, never two.

`onnxruntime` (CPU) and `onnxruntime-gpu` install the same `onnxruntime` module; with both in one environment
whichever was installed last wins, silently. These tests read pyproject.toml, the Makefile and the installed
packages' metadata; they install nothing (the GPU wheels are never downloaded).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}


def _name(requirement: str) -> str:
    """Normalised distribution name of a PEP 508 requirement string ("onnxruntime-gpu>=1.18; ..." -> ...)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unparsable requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _names(requirements: list[str]) -> set[str]:
    return {_name(r) for r in requirements}


def _makefile_extras() -> list[str]:
    """The extras the Makefile installs by default (`EXTRAS ?= cpu,dev`)."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^EXTRAS\s*\?=\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, "Makefile has no `EXTRAS ?= ...` default"
    assert '-e ".[$(EXTRAS)]"' in text, "Makefile no longer installs the project with $(EXTRAS)"
    return match.group(1).split(",")


def test_base_dependencies_hold_no_onnx_runtime() -> None:
    base = _names(_project()["dependencies"])
    assert not {n for n in base if n.startswith("onnxruntime")}, base


def test_cpu_extra_is_onnxruntime_and_gpu_extra_is_onnxruntime_gpu() -> None:
    extras = {k: _names(v) for k, v in _project()["optional-dependencies"].items()}
    assert "onnxruntime" in extras["cpu"] and "onnxruntime-gpu" not in extras["cpu"]
    assert "onnxruntime-gpu" in extras["gpu"] and "onnxruntime" not in extras["gpu"]
    assert {"tensorrt", "polygraphy"} <= extras["gpu"]


@pytest.mark.parametrize("extra", ["dev", "slim"])
def test_helper_extras_pull_no_runtime(extra: str) -> None:
    # dev and slim are combined with either cpu or gpu, so they must stay runtime-neutral.
    assert not _names(_project()["optional-dependencies"][extra]) & RUNTIMES


def test_makefile_installs_exactly_one_runtime() -> None:
    project = _project()
    extras = _makefile_extras()
    assert "cpu" in extras, f"`make` must keep the CPU quickstart, installs {extras}"
    wanted = _names(project["dependencies"])
    for extra in extras:
        wanted |= _names(project["optional-dependencies"][extra])
    assert wanted & RUNTIMES == {"onnxruntime"}, wanted & RUNTIMES


@pytest.mark.parametrize("combo", [("cpu", "dev"), ("gpu", "dev"), ("gpu", "dev", "slim")])
def test_documented_combinations_hold_one_runtime(combo: tuple[str, ...]) -> None:
    project = _project()
    wanted = _names(project["dependencies"])
    for extra in combo:
        wanted |= _names(project["optional-dependencies"][extra])
    assert len(wanted & RUNTIMES) == 1, (combo, wanted & RUNTIMES)


def _transitive_runtime_pulls(roots: set[str]) -> dict[str, str]:
    """Walk the installed metadata from `roots`; return {runtime: the package that requires it}.

    Only unconditional requirements and those of no extra are followed (what `pip install pkg` pulls).
    Packages not installed here are skipped: they are listed by the caller's test, not guessed.
    """
    found: dict[str, str] = {}
    seen: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req.replace("extra==", "extra =="):
                continue
            dep = _name(req)
            if dep in RUNTIMES and name not in RUNTIMES:
                found.setdefault(dep, name)
            todo.append(dep)
    return found


def test_no_installed_dependency_pulls_a_runtime() -> None:
    # onnxsim, onnxslim, onnxscript, onnx, ... must not drag onnxruntime (CPU) into a gpu environment.
    project = _project()
    roots = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    installed = {r for r in roots if _installed(r)}
    assert {"onnx", "onnxscript", "onnxsim"} <= installed, "run this in the project's venv"
    assert _transitive_runtime_pulls(roots) == {}


def _installed(name: str) -> bool:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        return False
    return True


def test_the_walk_finds_a_runtime_two_levels_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake metadata (no package is installed): a -> b -> onnxruntime; b's optional gpu extra is not followed.
    fake = {
        "a": ["b>=1", "pytest ; extra == 'test'"],
        "b": ["onnxruntime>=1.18", "onnxruntime-gpu ; extra == \"gpu\""],
    }

    def requires(name: str) -> list[str]:
        if name not in fake:
            raise md.PackageNotFoundError(name)
        return fake[name]

    monkeypatch.setattr(md, "requires", requires)
    assert _transitive_runtime_pulls({"a"}) == {"onnxruntime": "b"}
    assert _name("onnxruntime_gpu >= 1.18; platform_system == 'Linux'") == "onnxruntime-gpu"
