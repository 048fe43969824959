""":class:`PredictConfig`: everything a run of :func:`~ofa_vl.bulk.predict` is told, one frozen
config; ``ofa predict``'s flags are its fields (``batch_size`` -> ``--batch-size``), as ``ofa
test``'s are :class:`~ofa_vl.evaluate.EvalConfig`'s. No torch here: the CLI builds its parser from
it."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..arguments import flag
from ..errors import OFAValueError
from ..options import at_least, check_counts

__all__ = ["ENGINES", "FORMATS", "PredictConfig"]

Format = Literal["jsonl", "parquet", "coco"]
Engine = Literal["local", "ray"]
FORMATS: tuple[str, ...] = typing.get_args(Format)
ENGINES: tuple[str, ...] = typing.get_args(Engine)


@dataclass(frozen=True)
class PredictConfig:
    """How to run one task over a collection (the inputs and ``out`` are :func:`predict`'s own
    arguments). ``precision``, ``compile`` and ``backend`` are ``get_model``'s; their flags (and
    choices) are the runtime flags every command shares (``cli.common.Runtime``)."""

    task: str | None = flag(None, "caption, refcoco, vqa, ocr, ask, ... (default: the model's)")
    fields: Mapping[str, Any] = flag(
        {}, "a task field for every record (question=..., text=...); a row's own wins"
    )
    format: Format | None = flag(None, "default: parquet for an OUT.parquet, else jsonl")
    batch_size: int = flag(8, "images per batch")
    chunk_size: int = flag(1024, "records per written chunk")
    workers: int = flag(2, "image loading processes (0: none)")
    resume: bool = flag(False, "continue the run writing --out")
    engine: Engine = flag(
        "local", "local: this process (or each torchrun rank); ray: a Ray Data job (the ray extra)"
    )
    actors: int = flag(2, "--engine ray: actors (a GPU each)")
    device: str | None = flag(None, "cpu, cuda (default when present; torchrun: each worker's)")
    pretrained: str | Path | None = flag(None, "weights overriding the named model's")
    tokenizer: str | Path | None = flag(None, "tokenizer directory or hub id")
    image_size: int | None = flag(None, "a named model: input resolution (default: the model's)")
    answers: str | Path | None = flag(
        None, "VQA answer list (ans2label .pkl/.json) constraining decoding"
    )
    precision: str = flag("fp32", "a named model: get_model's (ofa_vl.model.precision.PRECISIONS)")
    compile: bool = flag(False, "a named model: decode with a torch.compile'd step")
    backend: str = flag("torch", "a named model: get_model's (ofa_vl.api.BACKENDS)")
    generation: Mapping[str, Any] = flag({}, "decoding overrides (num_beams, max_new_tokens, ...)")
    progress: bool = flag(True, "show a progress bar")

    def __post_init__(self) -> None:
        check_counts(batch_size=self.batch_size, chunk_size=self.chunk_size, actors=self.actors)
        at_least("workers", self.workers, 0)
        if self.engine not in ENGINES:
            raise OFAValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")

    @classmethod
    def of(cls, config: PredictConfig | None = None, **options: Any) -> PredictConfig:
        """``config`` (default: the defaults) with ``options`` over it; an unknown option is
        one line naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        if unknown := sorted(set(options) - set(names)):
            raise OFAValueError(
                f"unknown predict option(s) {', '.join(unknown)}; valid: {', '.join(names)}"
            )
        return cls(**options) if config is None else dataclasses.replace(config, **options)

    def model_options(self) -> dict[str, Any]:
        """The ``get_model`` keywords of a named model (image size, answers only when given)."""
        given = {k: v for k, v in (("image_size", self.image_size), ("answers", self.answers))
                 if v is not None}  # fmt: skip
        return dict(pretrained=self.pretrained, tokenizer=self.tokenizer, task=self.task,
                    precision=self.precision, compile=self.compile, backend=self.backend,
                    **given)  # fmt: skip
