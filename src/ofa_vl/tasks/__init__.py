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
from .base import TASKS, BilingualTask, Query, Task, get_task, register_task

__all__ = ["TASKS", "BilingualTask", "Query", "Task", "get_task", "register_task"]
