"""``get_model`` / ``inference_model`` / ``list_models``: a named model, an image, a result.

``get_model`` returns an :class:`OFAPipeline` = network + tokenizer + task (prompt, preprocessing,
decoding defaults, parsing). ``inference_model`` batches any number of inputs through it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .checkpoints import load_model
from .errors import OFAValueError
from .generation import generate
from .images import OFA_MEAN, OFA_STD, ImageInfo, ImageSource, preprocess_batch
from .model import OFA
from .model.compile import compile_decoder
from .model.precision import apply_precision, check_precision, model_dtype
from .options import check_compile
from .tasks import TASKS, Query, Task, get_task
from .tokenizer import CHINESE_VOCAB, CHINESE_VOCAB_SIZE, ENGLISH_BPE, OFATokenizer
from .zoo import MODELS, PACKAGE_ASSETS, ModelCard, download, list_models

PIPELINE_FILE = "pipeline.json"  # a model folder's preprocessing (open_clip style)
# decoding options a caller may set; the task itself fills prompts and constraints
DECODING_OPTIONS = frozenset(
    p.name
    for p in inspect.signature(generate).parameters.values()
    if p.kind is p.KEYWORD_ONLY and p.name not in ("decoder_prompts", "constraint_trie")
)

__all__ = ["OFAPipeline", "get_model", "inference_model", "list_models", "load_answers"]


def load_answers(path: str | Path) -> list[str]:
    """An answer list (``ans2label`` .pkl/.json) in label order."""
    from .data.vqa import load_answer_vocab

    return [a for a, _ in sorted(load_answer_vocab(path).items(), key=lambda kv: kv[1])]


@dataclass
class OFAPipeline:
    """A ready-to-run OFA for one task: call it with images (and the task's text fields)."""

    model: OFA
    tokenizer: OFATokenizer
    task: Task
    name: str = ""
    generation: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # of the model's weights: ofa_vl.model.precision.PRECISIONS
    card: ModelCard | None = field(default=None, repr=False)
    preprocessing: dict[str, Any] = field(default_factory=dict, repr=False)  # from pipeline.json

    def with_task(self, task: str, **task_options: Any) -> OFAPipeline:
        """The same network and tokenizer (not reloaded) for another task."""
        return replace(
            self,
            task=_task_for(self.card, task, task_options, self.preprocessing),
            generation=_card_generation(self.card, task),
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def predict_batch(
        self,
        images: torch.Tensor,
        infos: Sequence[ImageInfo],
        fields: Sequence[dict[str, Any]],
        **overrides: Any,
    ) -> list[dict[str, Any]]:
        """Preprocessed images (B, 3, S, S) + their infos and text fields -> one result dict each.

        Text fields are normalised here, as the model's pipeline says (``task.text_norm``).
        """
        for f in fields:
            self.task.check(f)
        _check_decoding_options(overrides)
        fields = [self.task.normalize(f) for f in fields]
        kwargs = {**self.task.generation, **self.generation, **overrides}
        images = images.to(self.device, model_dtype(self.model))  # bf16 models take bf16 images
        return self.task.predict(
            self.model, self.tokenizer, images, list(infos), list(fields), kwargs
        )

    def _batch(self, queries: Sequence[Query], overrides: dict[str, Any]) -> list[dict[str, Any]]:
        images, infos = preprocess_batch(
            [q.image for q in queries],  # type: ignore[misc]
            self.task.image_size,
            self.task.interpolation,  # type: ignore[arg-type]
            mean=getattr(self.task, "mean", OFA_MEAN),  # ImageNet-normalised tasks override it
            std=getattr(self.task, "std", OFA_STD),
        )
        return self.predict_batch(images, infos, [q.fields for q in queries], **overrides)

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        batch_size: int = 8,
        **fields_and_overrides: Any,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Run the task. Text fields (``question=``, ``text=``, ``objects=``) may be lists; other
        keywords are decoding options (``num_beams=``, ``max_new_tokens=``, ...)."""
        single = not isinstance(images, (list, tuple))
        image_list: list[Any] = [images] if single else list(images)  # type: ignore[arg-type]
        fields, overrides = _split_fields(self.task, fields_and_overrides)
        queries = list(_queries(image_list, fields))
        out: list[dict[str, Any]] = []
        for start in range(0, len(queries), batch_size):
            out.extend(self._batch(queries[start : start + batch_size], overrides))
        return out[0] if single else out


def _check_decoding_options(options: dict[str, Any], task: Task | None = None) -> None:
    """One error naming the valid keywords (and ``task``'s fields, when the caller could mean one)."""
    unknown = ", ".join(sorted(set(options) - DECODING_OPTIONS))
    if not unknown:
        return
    valid = ", ".join(sorted(DECODING_OPTIONS))
    if task is None:
        raise OFAValueError(f"unknown decoding option {unknown}; valid ones: {valid}")
    raise OFAValueError(
        f"unknown keyword {unknown} for task {task.name!r}; its fields: "
        f"{', '.join(task.fields()) or 'none'}; decoding options: {valid}"
    )


def _split_fields(task: Task, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's text fields and the decoding options among ``kwargs``; anything else is an error."""
    fields = {k: v for k, v in kwargs.items() if k in task.fields()}
    options = {k: v for k, v in kwargs.items() if k not in fields}
    _check_decoding_options(options, task)
    return fields, options


_LIST_FIELDS = ("objects", "region")  # fields whose single value is itself a list


def _per_image(key: str, value: Any) -> bool:
    """Whether ``value`` gives one value per image (a list) or one value for all of them."""
    if not isinstance(value, (list, tuple)):
        return False
    return key not in _LIST_FIELDS or (bool(value) and isinstance(value[0], (list, tuple)))


def _queries(images: list[Any], fields: dict[str, Any]) -> Iterator[Query]:
    for key, value in fields.items():
        if _per_image(key, value) and len(value) != len(images):
            raise OFAValueError(f"{len(images)} images but {len(value)} values of {key!r}")
    for i, img in enumerate(images):
        yield Query(img, {k: v[i] if _per_image(k, v) else v for k, v in fields.items()})


def _task_for(
    card: ModelCard | None, task: str | None, options: dict[str, Any], preprocessing: dict[str, Any]
) -> Task:
    name = task or (card.task if card else "caption")
    opts = dict(card.task_options) if card and name == card.task else {}
    opts.update(preprocessing)
    opts.update(options)
    answers_url = opts.pop("answers_url", None)
    if "answers" in opts and isinstance(opts["answers"], (str, Path)):
        opts["answers"] = load_answers(opts["answers"])
    elif answers_url is not None and "answers" not in opts:
        opts["answers"] = load_answers(download(answers_url))
    return get_task(name, **opts)


def get_model(
    name_or_path: str | Path,
    pretrained: str | Path | None = None,
    device: str | torch.device | None = None,
    tokenizer: str | Path | OFATokenizer | None = None,
    task: str | None = None,
    precision: str = "fp32",
    compile: bool = False,
    **task_options: Any,
) -> OFAPipeline:
    """A named model (``list_models()``) or a checkpoint path, ready for :func:`inference_model`.

    ``pretrained`` overrides the weights of a named model; ``tokenizer`` its tokenizer source;
    ``precision`` is one of ``PRECISIONS``: ``bf16`` (weights cast), ``int8`` (torchao dynamic),
    ``int8-weight`` (torchao weight-only), ``int8-legacy`` (``quantize_dynamic``, CPU).
    ``compile`` decodes with a ``torch.compile``d step (``ofa_vl.model.compile``; the first
    decoding of each batch shape pays the compilation).
    """
    check_precision(precision)
    check_compile(compile, precision=precision)
    card = MODELS.get(str(name_or_path))
    weights = pretrained or (name_or_path if card is None else card.name)
    model = apply_precision(load_model(weights, device=device), precision)
    if compile:
        compile_decoder(model)
    tok = (
        tokenizer
        if isinstance(tokenizer, OFATokenizer)
        else OFATokenizer.from_pretrained(
            tokenizer or _tokenizer_source(card, weights, model.cfg.vocab_size)
        )
    )
    if len(tok) != model.cfg.vocab_size:
        raise OFAValueError(
            f"the tokenizer has {len(tok)} tokens but the model's vocabulary has "
            f"{model.cfg.vocab_size}; pass the model's own tokenizer with tokenizer="
        )
    preprocessing = _preprocessing(card, weights)
    return OFAPipeline(
        model=model,
        tokenizer=tok,
        task=_task_for(card, task, task_options, preprocessing),
        name=str(name_or_path),
        generation=_card_generation(card, task),
        precision=precision,
        card=card,
        preprocessing=preprocessing,
    )


def _card_generation(card: ModelCard | None, task: str | None) -> dict[str, Any]:
    """A card's decoding defaults belong to its own task, not to others run on its weights."""
    return dict(card.generation) if card and (task is None or task == card.task) else {}


def _model_dir(card: ModelCard | None, weights: str | Path) -> Path | None:
    """The local folder a model's files are in, when there is one."""
    if card is not None and card.tokenizer == "bundled":
        return PACKAGE_ASSETS / card.weights
    path = Path(weights)
    if not path.exists():
        return None
    return path if path.is_dir() else path.parent


def _preprocessing(card: ModelCard | None, weights: str | Path) -> dict[str, Any]:
    """A model folder's ``pipeline.json`` (``image_size``, ``interpolation``): its preprocessing."""
    folder = _model_dir(card, weights)
    if folder is None or not (folder / PIPELINE_FILE).is_file():
        return {}
    import json

    cfg = json.loads((folder / PIPELINE_FILE).read_text())
    return {k: cfg[k] for k in ("image_size", "interpolation", "text_norm") if k in cfg}


def _tokenizer_source(
    card: ModelCard | None, weights: str | Path, vocab_size: int | None = None
) -> str | Path:
    """A tokenizer beside the weights (bundled models, local dirs), else the card's; for an
    unnamed checkpoint, OFA-CN's vocabulary when the model has its 30,325 tokens, else English."""
    folder = _model_dir(card, weights)
    beside = ("tokenizer.json", "vocab.json", "dict.txt")
    if folder is not None and any((folder / f).is_file() for f in beside):
        return folder
    if card is not None:
        source = card.tokenizer
    else:
        source = "chinese" if vocab_size == CHINESE_VOCAB_SIZE else "english"
    return {"english": ENGLISH_BPE, "chinese": CHINESE_VOCAB}.get(source, source)


_BUILDER_KEYS = ("pretrained", "device", "tokenizer", "task", "precision", "compile")


def inference_model(
    model: OFAPipeline | str | Path,
    images: ImageSource | Sequence[ImageSource],
    batch_size: int = 8,
    **kwargs: Any,
) -> dict[str, Any] | list[dict[str, Any]]:
    """mmpretrain-style results: ``{'pred_caption'}``, ``{'pred_bboxes'}``, ``{'question', 'pred_answer'}``.

    ``model`` is a pipeline or a name / path for :func:`get_model`; a list of images gives a list.
    As mmpretrain's ``inference_model``, keywords of the builder (``pretrained``, ``device``,
    ``tokenizer``, ``task``, ``precision``, ``compile`` and the task's options such as ``answers`` or
    ``text_norm``) build the model; the task's text fields (``question``, ``text``, ...) and
    decoding options (``num_beams``, ...) go to the call. Anything else is one clear error.
    """
    if isinstance(model, OFAPipeline):
        misplaced = sorted(set(kwargs) & set(_BUILDER_KEYS))
        if misplaced:
            raise OFAValueError(
                f"{', '.join(misplaced)} build a model: pass them to get_model(), or pass a "
                "model name instead of a built pipeline"
            )
        return model(images, batch_size=batch_size, **kwargs)
    task_name = kwargs.get("task") or (MODELS[str(model)].task if str(model) in MODELS else None)
    task_cls = TASKS.get(task_name or "caption")
    options = {f.name for f in dataclasses.fields(task_cls)} if task_cls else set()
    build = {k: v for k, v in kwargs.items() if k in _BUILDER_KEYS or k in options}
    call = {k: v for k, v in kwargs.items() if k not in build}
    return get_model(model, **build)(images, batch_size=batch_size, **call)
