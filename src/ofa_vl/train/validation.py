"""Validation during training: the folder's validation split scored with the task's metric by
:func:`ofa_vl.evaluate.evaluate` (the code of ``ofa test``), the best weights kept in ``OUT/best/``
and early stopping after ``K`` validations without improvement."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..api import OFAPipeline
from ..data.common import DatasetError
from ..data.folder import FolderData
from ..distributed import Dist
from ..evaluate import Benchmark, EvalConfig, evaluate, folder_benchmark
from ..metrics.tasks import task_metric
from ..model import OFA
from ..tasks import TASKS
from ..tokenizer import OFATokenizer
from ..zoo import MODELS
from .build import TaskFactory
from .checkpointing import save_best

VALIDATION = "validation"  # OUT/validation/step_N/<task>: each validation's ofa test run


def primary_metric(task: str) -> str:
    """The metric a validation keeps (higher is better): the task's primary one."""
    return task_metric(TASKS[task]).primary


@dataclass
class Validator:
    """Scores the validation split; remembers the best value, its step and the misses since."""

    benches: list[Benchmark]
    tasks: TaskFactory
    init: str
    generation: dict[str, Any]
    batch_size: int
    early_stop: int
    best: float | None = None
    best_step: int = 0
    misses: int = 0  # validations since the best one

    @classmethod
    def for_folder(
        cls, data: FolderData, tasks: TaskFactory, init: str, **kwargs: Any
    ) -> Validator:
        """One benchmark per task of the folder's validation split."""
        names = sorted({s.task for s in data.select("validation")})
        if not names:
            raise DatasetError(
                f"{data.root}: --val-every needs validation lines (split column or validation/ folder)"
            )
        return cls([folder_benchmark(data, "validation", t) for t in names], tasks, init, **kwargs)

    @property
    def metric(self) -> str:
        names = sorted({primary_metric(b.task) for b in self.benches})
        return names[0] if len(self.benches) == 1 else f"mean {'/'.join(names)}"

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "misses": self.misses}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.misses = state["best"], state["best_step"], state["misses"]

    def score(self, model: OFA, tokenizer: OFATokenizer, out: Path, step: int, ddp: Dist) -> float:
        """The mean primary metric over the validation benchmarks (every rank gets it)."""
        card = MODELS.get(self.init)
        values = []
        weights, model.weights_file = model.weights_file, None  # not the file it started from
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(
                devices=[model.device] if model.device.type == "cuda" else []
            ):
                for bench in self.benches:
                    task = self.tasks(bench.task, **bench.task_options)
                    pipe = OFAPipeline(model, tokenizer, task, f"step {step}")
                    if card and card.task == bench.task:  # the card's decoding, for its task
                        pipe.generation = card.generation
                    folder = out / VALIDATION / f"step_{step:07d}" / bench.task
                    if ddp.main:  # a resumed run validates this step again
                        shutil.rmtree(folder, ignore_errors=True)
                    if ddp.world > 1:
                        dist.barrier()
                    config = EvalConfig(out=folder, batch_size=self.batch_size, workers=0,
                                        generation=self.generation, progress=False)  # fmt: skip
                    report = evaluate(pipe, config, bench)
                    values.append(report.metrics[primary_metric(bench.task)])
        finally:
            model.weights_file = weights
            model.train(was_training)
        return sum(values) / len(values)

    def update(self, value: float, step: int) -> bool:
        """Record a validation; True when it is the best so far."""
        if self.best is None or value > self.best:
            self.best, self.best_step, self.misses = value, step, 0
            return True
        self.misses += 1
        return False

    @property
    def stop(self) -> bool:
        """Whether early stopping ends the run now."""
        return bool(self.early_stop) and self.misses >= self.early_stop

    def keep_best(self, out: Path, model: OFA, tokenizer: OFATokenizer) -> None:
        """Rank 0: ``OUT/best/`` holds the weights that scored :attr:`best`."""
        record = {"step": self.best_step, "metric": self.metric, "value": self.best}
        save_best(out, model, tokenizer, record)
