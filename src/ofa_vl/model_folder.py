"""A model folder, read and written here only (HF's ``save_pretrained`` layout, with open_clip's
preprocessing beside the weights).

A folder holds the weights (``model.safetensors``, or a LoRA adapter's ``adapter.safetensors`` +
``adapter.json``), the tokenizer's files and ``pipeline.json``: the model's own task, its
preprocessing and its decoding defaults, each over the task's (:class:`ModelFolder`). ``ofa train``
writes one (and its ``best/``), ``ofa convert --merge-adapter`` one from an adapter, ``ofa export``
one of ONNX graphs, ``OFAPipeline.push_to_hub`` one to upload; ``get_model`` reads them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import load_model, save_pretrained
from .errors import OFAValueError
from .generation.config import GenerationConfig
from .images import OFA_MEAN, OFA_STD
from .lora import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    has_adapter,
    load_adapter,
    merge_adapter,
    save_adapter,
)
from .model import OFA
from .overlay import Overlay
from .preprocess import PreprocessConfig
from .runs import write_atomic
from .tokenizer import (
    CHINESE_VOCAB,
    CHINESE_VOCAB_SIZE,
    ENGLISH_BPE,
    FILE_CHOICES,
    SIDE_FILE,
    OFATokenizer,
)
from .zoo import PACKAGE_ASSETS, ModelCard, resolve_checkpoint

__all__ = [
    "ADAPTER_FILES",
    "PIPELINE_FILE",
    "SIDE_FILES",
    "WEIGHTS_FILE",
    "ModelFolder",
    "copy_side_files",
    "fetch_folder",
    "merge_adapter_files",
    "model_dir",
    "tokenizer_source",
    "write_weights",
]

PIPELINE_FILE = "pipeline.json"  # the task, preprocessing and decoding (open_clip's cfg file)
WEIGHTS_FILE = "model.safetensors"  # checkpoints.save_pretrained's format
ADAPTER_FILES = (ADAPTER_FILE, ADAPTER_CONFIG)  # a LoRA adapter instead of the weights
TOKENIZER_FILES = (*(name for choice in FILE_CHOICES for name in choice), SIDE_FILE)
SIDE_FILES = (PIPELINE_FILE, *TOKENIZER_FILES)  # what a folder holds beside its weights
# what a folder written here holds beside its weights (OFATokenizer.save_pretrained's files)
SAVED_FILES = ("tokenizer.json", SIDE_FILE, PIPELINE_FILE)
_PREPROCESSING = tuple(f.name for f in dataclasses.fields(PreprocessConfig))


def _inputs() -> Overlay[PreprocessConfig]:
    return Overlay.of(PreprocessConfig())


def _decoding() -> Overlay[GenerationConfig]:
    return Overlay.of(GenerationConfig())


@dataclass(frozen=True)
class ModelFolder:
    """What ``pipeline.json`` says: the model's own task (None: unrecorded), the fields of the
    task's :class:`PreprocessConfig` it sets (``image_size``, ``interpolation``, ``mean``,
    ``std``, ``text_norm``) and its decoding defaults over the task's (``generation``)."""

    task: str | None = None
    preprocessing: Overlay[PreprocessConfig] = field(default_factory=_inputs)
    generation: Overlay[GenerationConfig] = field(default_factory=_decoding)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> ModelFolder:
        """From ``pipeline.json``'s object (keys it does not know are left alone)."""
        task = spec.get("task")
        if task is not None and not isinstance(task, str):
            raise OFAValueError(f"task must be a task name, got {task!r}")
        pre = Overlay.of(PreprocessConfig(), {k: spec[k] for k in _PREPROCESSING if k in spec})
        return cls(task, pre, Overlay.of(GenerationConfig(), spec.get("generation") or {}))

    def to_dict(self) -> dict[str, Any]:
        """``pipeline.json``'s object: only what is set."""
        out: dict[str, Any] = {"task": self.task} if self.task else {}
        out |= self.preprocessing.to_dict()
        if self.generation:
            out["generation"] = self.generation.to_dict()
        return out

    @classmethod
    def read(cls, folder: Path | None) -> ModelFolder | None:
        """The ``pipeline.json`` of ``folder``; None when there is none."""
        path = None if folder is None else folder / PIPELINE_FILE
        if path is None or not path.is_file():
            return None
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(spec, dict):
                raise OFAValueError(f"a JSON object, not {type(spec).__name__}")
            return cls.from_dict(spec)
        except (ValueError, TypeError) as err:  # OFAValueError, JSON, a value of the wrong type
            raise OFAValueError(f"{path}: {err}") from None

    @classmethod
    def find(cls, card: ModelCard | None, weights: str | Path) -> ModelFolder:
        """The settings of the folder a model's files are in (none set when there is none)."""
        return cls.read(model_dir(card, weights)) or cls()

    @classmethod
    def describing(
        cls,
        task: str | None,
        pre: PreprocessConfig,
        generation: Overlay[GenerationConfig] | None = None,
        text: bool = True,
    ) -> ModelFolder:
        """The settings of a model read as ``task`` reads it: its image size and interpolation,
        mean / std when not OFA's and, with ``text``, its text normalisation when it has one."""
        keys = ["image_size", "interpolation"]
        if (pre.mean, pre.std) != (OFA_MEAN, OFA_STD):  # e.g. an ImageNet-normalised classifier
            keys += ["mean", "std"]
        if text and pre.text_norm:
            keys.append("text_norm")
        return cls(task, Overlay.select(pre, keys), generation or _decoding())

    def write(
        self, folder: Path, model: OFA | None = None, tokenizer: OFATokenizer | None = None
    ) -> Path:
        """Write ``pipeline.json`` into ``folder`` (made when missing), and the weights
        (:func:`write_weights`) and the tokenizer when given; ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        if model is not None:
            write_weights(model, folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_atomic(folder / PIPELINE_FILE, json.dumps(self.to_dict(), indent=2) + "\n")
        return folder


def write_weights(model: OFA, folder: Path) -> None:
    """A folder's weights: ``model.safetensors``, or with LoRA only the adapter
    (``adapter.safetensors`` + ``adapter.json``; ``ofa convert --merge-adapter`` folds it in)."""
    if has_adapter(model):
        save_adapter(model, folder)
    else:
        save_pretrained(model, folder / WEIGHTS_FILE)


def model_dir(card: ModelCard | None, weights: str | Path) -> Path | None:
    """The local folder a model's files are in, when there is one."""
    if card is not None and card.tokenizer == "bundled":
        return PACKAGE_ASSETS / card.weights
    path = Path(weights)
    if not path.exists():
        return None
    return path if path.is_dir() else path.parent


def fetch_folder(ref: str) -> Path:
    """A model folder on the hub (``hf-hub:USER/REPO``, as ``ofa push`` uploads one): its weights,
    tokenizer and ``pipeline.json`` downloaded; the local snapshot folder."""
    return resolve_checkpoint(ref, beside=SAVED_FILES)


def tokenizer_source(
    card: ModelCard | None, weights: str | Path, vocab_size: int | None = None
) -> str | Path:
    """A tokenizer beside the weights (bundled models, local dirs), else the card's; for an
    unnamed checkpoint, OFA-CN's vocabulary when the model has its 30,325 tokens, else English."""
    folder = model_dir(card, weights)
    if folder is not None and any((folder / choice[0]).is_file() for choice in FILE_CHOICES):
        return folder
    if card is not None:
        source = card.tokenizer
    else:
        source = "chinese" if vocab_size == CHINESE_VOCAB_SIZE else "english"
    return {"english": ENGLISH_BPE, "chinese": CHINESE_VOCAB}.get(source, source)


def copy_side_files(
    sources: list[Path], dst: Path, names: tuple[str, ...] = SIDE_FILES
) -> list[str]:
    """Copy each of ``names`` from the first of ``sources`` holding it into ``dst``; the names
    copied."""
    copied = []
    for name in names:
        for source in sources:
            if (source / name).is_file():
                shutil.copyfile(source / name, dst / name)
                copied.append(name)
                break
    return copied


def merge_adapter_files(base: str | Path, adapter: Path, dst: Path, use_ema: bool = True) -> Path:
    """``ofa convert BASE DST --merge-adapter ADAPTER``: the merged weights as a ``.safetensors``
    file, or a model folder (``model.safetensors`` with the tokenizer and ``pipeline.json`` of
    the adapter's folder, else of the base model's)."""
    model = merge_adapter(load_adapter(load_model(base, use_ema=use_ema), Path(adapter)))
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        return save_pretrained(model, dst)
    dst.mkdir(parents=True, exist_ok=True)
    write_weights(model, dst)
    base_path = Path(base)
    base_dir = base_path if base_path.is_dir() else base_path.parent  # a local model's folder
    copy_side_files([Path(adapter), base_dir], dst)
    return dst
