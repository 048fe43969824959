"""OFA's tasks, one small module each, registered by name."""

from . import caption, grounding, vqa  # noqa: F401  (registration)
from .base import TASKS, Query, Task, get_task, register_task

__all__ = ["TASKS", "Query", "Task", "get_task", "register_task"]
