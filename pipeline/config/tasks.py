"""Task names and task kinds.

A run names its heads (`tasks`); each head has a kind (`seg`, `depth`, `normal`) that decides its loss, its metrics,
its target format and its output channels. The plain list form names heads after their kinds
(`tasks: [seg, depth]`); the mapping form lets names differ (`tasks: {semantic: seg, z: depth}`). Names key every
output dict, batch, metric table, ONNX output and tolerance; kinds are looked up wherever behaviour depends on what
a task is. A leaf module: it imports nothing from the project but `pipeline.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["KIND_CHANNELS", "TASK_KINDS", "TaskSpec", "as_task_kinds", "task_problems", "task_record"]

TASK_KINDS = ("seg", "depth", "normal")
# output channels per kind; seg has one per class (None here, `num_classes` at build time)
KIND_CHANNELS: dict[str, int | None] = {"seg": None, "depth": 1, "normal": 3}
# A name is an ONNX output name, a state_dict key part (`heads.<name>.`) and a file/CSV column: keep it plain.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Keys of the batch dict that a task may not take.
_RESERVED = ("image", "default")

TaskSpec = Iterable[str] | Mapping[str, str]


def task_problems(tasks: Any) -> list[str]:
    """Every problem with a `tasks` value (list of kinds, or mapping name -> kind), one line each."""
    kinds = ", ".join(TASK_KINDS)
    if isinstance(tasks, Mapping):
        pairs = list(tasks.items())
    elif isinstance(tasks, (list, tuple)):
        pairs = [(t, t) for t in tasks]
    else:
        return [f"'tasks' must be a list of task kinds ({kinds}) or a mapping name -> kind, got {tasks!r}"]
    if not pairs:
        return [f"'tasks' is empty; name at least one of {kinds}"]
    problems: list[str] = []
    for name, kind in pairs:
        if not isinstance(tasks, Mapping):
            if kind not in TASK_KINDS:
                problems.append(f"unknown task '{kind}' in 'tasks' (available: {kinds})")
            continue
        if kind not in TASK_KINDS:
            problems.append(f"unknown kind {kind!r} of task '{name}' in 'tasks' (available: {kinds})")
        if name in TASK_KINDS and name != kind:  # a kind's name always means that kind (metrics, tolerances)
            problems.append(f"task '{name}' in 'tasks' is named after another kind; name it differently")
        elif not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
            problems.append(f"task name {name!r} in 'tasks' must be a plain identifier (letters, digits, _; not "
                            f"{' or '.join(_RESERVED)}): it names an ONNX output and a batch key")
    names = [n for n, _ in pairs]
    twice = sorted({str(n) for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"'tasks' lists a task twice: {', '.join(twice)}")
    return problems


def as_task_kinds(tasks: TaskSpec) -> dict[str, str]:
    """`tasks` (a list of kinds, or a mapping name -> kind) as an ordered dict name -> kind.

    No tasks give {} (a caller scoring no task); a config needs at least one, which `task_problems` checks.

    Raises:
        ConfigError: an unknown kind, a bad or repeated name (configs are validated earlier, so here it means a
            caller passed names without their kinds).
    """
    # a list of kinds, kept as a list so task_problems sees (and names) a kind listed twice
    given: list[str] | dict[str, str] = (
        {str(k): str(v) for k, v in tasks.items()} if isinstance(tasks, Mapping) else list(tasks))
    problems = task_problems(given) if given else []
    if problems:
        raise ConfigError(problems[0])
    out = given if isinstance(given, dict) else {t: t for t in given}
    return out


def task_record(tasks: TaskSpec) -> list[str] | dict[str, str]:
    """The form written to checkpoints, metadata and reports: a plain list when every name is its kind (as every
    run before task names existed wrote it), else the mapping name -> kind."""
    kinds = as_task_kinds(tasks)
    return list(kinds) if all(n == k for n, k in kinds.items()) else kinds
