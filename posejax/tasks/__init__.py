"""The task registry: `config.task` names the pose system a run trains.

Built-in tasks are imported on first use; a task defined elsewhere (a test, a user's project)
registers itself with `@register("name")` and is then a valid `config.task`.
"""

from __future__ import annotations

import importlib

from posejax.tasks.base import Task

TASKS: dict[str, type[Task]] = {}
_BUILTIN = {"pose25d": "posejax.tasks.pose25d", "deeppose": "posejax.tasks.deeppose",
            "pose_transformer": "posejax.tasks.pose_transformer"}


def register(name: str):
  """Class decorator: makes a Task subclass available as `config.task = name`."""

  def add(cls: type[Task]) -> type[Task]:
    if name in TASKS and TASKS[name] is not cls:
      raise ValueError(f"A task named {name!r} is registered already ({TASKS[name]})")
    TASKS[name] = cls
    return cls

  return add


def get_task(config) -> Task:
  """The task of a run config (`config.task`, default "pose25d"), built on the config."""
  name = config.get("task", "pose25d")
  if name not in TASKS and name in _BUILTIN:
    importlib.import_module(_BUILTIN[name])
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; registered: {sorted(set(TASKS) | set(_BUILTIN))}")
  return TASKS[name](config)


__all__ = ["TASKS", "Task", "get_task", "register"]
