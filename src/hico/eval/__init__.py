"""Benchmark evaluation with the official VideoChat-Flash protocol (prompts, settings, scoring).

    from hico.eval import tasks, get_task
    task = get_task("mvbench_action_sequence")
    items = task.load("eval_annotations")            # the official annotation folder
    task.score(items[0], "A")                         # {"correct": True, ...}

Task names are the official lmms-eval names, so results can be compared with lmms-eval runs.
"""

from __future__ import annotations

from hico.errors import HicoError
from hico.eval import charades, longvideobench, lvbench, mlvu, mvbench, perceptiontest, videomme
from hico.eval.task import MODES, AnnotationError, GroupTask, Item, Settings, Task, VideoRef

_FAMILIES = (mvbench, mlvu, lvbench, longvideobench, videomme, charades, perceptiontest)


def _registry() -> dict[str, Task]:
    found: dict[str, Task] = {}
    for family in _FAMILIES:
        found.update(family.tasks())
    return found


TASKS = _registry()


def tasks() -> list[str]:
    """Every task name, groups before their members, in the official order."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """The task called `name` (an official lmms-eval task name)."""
    if name not in TASKS:
        close = [t for t in TASKS if name.split("_")[0] in t][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise HicoError(f"unknown benchmark task {name!r}{hint}; `hico eval --list` prints every task")
    return TASKS[name]


__all__ = ["MODES", "AnnotationError", "GroupTask", "Item", "Settings", "Task", "VideoRef", "get_task", "tasks"]
