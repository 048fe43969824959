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
from .base import (
    TASKS,
    BilingualTask,
    BoundTask,
    Query,
    Runner,
    Task,
    TaskFields,
    TextFields,
    get_task,
    register_task,
)
from .entailment import EntailmentFields
from .instruction import AskFields
from .region_caption import RegionFields
from .results import Result
from .vqa import VQAFields

__all__ = [
    "TASKS", "AskFields", "BilingualTask", "BoundTask", "EntailmentFields", "Query", "RegionFields",
    "Result", "Runner", "Task", "TaskFields", "TextFields", "VQAFields", "get_task",
    "register_task",
]  # fmt: skip
