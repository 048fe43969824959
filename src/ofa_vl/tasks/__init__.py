"""OFA's tasks, one small module each, registered by name."""

from . import (  # noqa: F401  (registration)
    caption,
    classify,
    detection,
    entailment,
    grounding,
    image_gen,
    instruction,
    matching,
    ocr,
    region_caption,
    text_tasks,
    vqa,
    vqa_scoring,
)
from .base import TASKS, BilingualTask, BoundTask, Query, Runner, Task, get_task, register_task
from .results import Result

__all__ = [
    "TASKS", "BilingualTask", "BoundTask", "Query", "Result", "Runner", "Task", "get_task",
    "register_task",
]  # fmt: skip
