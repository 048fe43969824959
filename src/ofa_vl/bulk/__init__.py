"""Bulk inference (``ofa predict``): a task over a collection of any size, resumable, sharded.

:mod:`.inputs` reads folders, lists, tables and WebDataset shards as one stream of records,
:mod:`.writer` writes results a chunk at a time and merges them, :mod:`.run` is the loop,
:mod:`.config` what it is told.
"""

from .config import FORMATS, PredictConfig
from .inputs import Record, read_inputs
from .run import PredictSummary, predict

__all__ = ["FORMATS", "PredictConfig", "PredictSummary", "Record", "predict", "read_inputs"]
