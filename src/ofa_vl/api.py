"""``get_model`` / ``inference_model`` / ``list_models``: a named model, an image, a result.

``get_model`` returns an :class:`OFAPipeline` = network + tokenizer + task (prompt, preprocessing,
decoding defaults, parsing). ``inference_model`` batches any number of inputs through it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from .checkpoints import load_model
from .errors import OFAValueError
from .generation import GenerationConfig
from .generation.config import unknown_options
from .images import ImageInfo, ImageSource
from .model import OFA
from .model.compile import compile_decoder
from .model.precision import apply_precision, check_precision, model_dtype
from .model_folder import ModelFolder, fetch_folder, tokenizer_source
from .options import check_compile
from .overlay import Overlay
from .publish import push_folder
from .tasks import TASKS, BoundTask, Query, Result, Task, get_task
from .tasks.runners import Prepared, run
from .tasks.runners import prepare as prepare_query
from .tokenizer import OFATokenizer
from .zoo import MODELS, ModelCard, download, list_models

BACKENDS = ("torch", "onnxruntime")  # onnxruntime: an `ofa export --format onnx` folder

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
    # the model's decoding defaults for this task (its card's, its folder's), over the task's
    generation: Overlay[GenerationConfig] = field(
        default_factory=lambda: Overlay.of(GenerationConfig())
    )
    precision: str = "fp32"  # of the model's weights: ofa_vl.model.precision.PRECISIONS
    backend: str = "torch"  # BACKENDS
    card: ModelCard | None = field(default=None, repr=False)
    folder: ModelFolder = field(default_factory=ModelFolder, repr=False)  # its pipeline.json
    # the task bound to the tokenizer (trie, candidates); rebuilt when either is replaced
    bound: BoundTask | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.bind()

    def bind(self) -> BoundTask:
        """The task bound to this pipeline's tokenizer (built once, again when either changes)."""
        b = self.bound
        if b is None or b.source is not self.task or b.tokenizer is not self.tokenizer:
            self.bound = b = self.task.bind(self.tokenizer)
        return b

    def with_task(self, task: str, **task_options: Any) -> OFAPipeline:
        """The same network and tokenizer (not reloaded) for another task."""
        return replace(
            self,
            task=_task_for(self.card, self.folder, task, task_options),
            generation=_own_generation(self.card, self.folder, task),
        )

    def decoding(self, **overrides: Any) -> GenerationConfig:
        """The task's decoding defaults, overlaid by the model's (card, ``pipeline.json``), then
        by ``overrides``; an unknown option is one clear error."""
        return self.task.generation.overlay(self.generation.values(), overrides)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def predict_batch(
        self,
        images: torch.Tensor,
        infos: Sequence[ImageInfo],
        fields: Sequence[dict[str, Any]],
        **overrides: Any,
    ) -> list[Result]:
        """Preprocessed images (B, 3, S, S) + their infos and text fields -> one typed result each
        (each query through :meth:`prepare`, then :meth:`predict_prepared`)."""
        items = [self.prepare(f, info) for f, info in zip(fields, infos, strict=True)]
        return self.predict_prepared(images, items, self.decoding(**overrides))

    def prepare(self, fields: Mapping[str, Any], info: ImageInfo) -> Prepared:
        """One query's text fields checked, normalised as the model's pipeline says
        (``task.text_norm``) into the task's typed ``Fields``, placed on its image (``info``),
        tokenized once and its length checked (``ofa serve`` does this as a request arrives)."""
        return prepare_query(self.bind(), self.task.normalize(fields), info, self.model.cfg)

    def predict_prepared(
        self, images: torch.Tensor, items: Sequence[Prepared], config: GenerationConfig
    ) -> list[Result]:
        """Preprocessed images (B, 3, S, S) + their queries from :meth:`prepare`, decoded as
        ``config`` says (see :meth:`decoding`) -> one typed result each."""
        dtype = model_dtype(self.model) if self.backend == "torch" else torch.float32
        images = images.to(self.device, dtype)  # bf16 models take bf16 images
        return run(self.bind(), self.model, images, list(items), config)

    def preprocess(self, image: ImageSource) -> tuple[torch.Tensor, ImageInfo]:
        """One image as this model reads it: (3, S, S) float32 and its resize info (the task's
        :class:`~ofa_vl.preprocess.PreprocessConfig`; ``ofa test``, ``ofa serve`` and training
        go through the same :meth:`~ofa_vl.preprocess.PreprocessConfig.image`)."""
        return self.task.preprocessing.image(image)

    def _batch(self, queries: Sequence[Query], overrides: dict[str, Any]) -> list[Result]:
        done = [self.preprocess(q.image) for q in queries]
        images = torch.stack([pixels for pixels, _ in done])  # (B, 3, S, S)
        infos = [info for _, info in done]
        return self.predict_batch(images, infos, [q.fields for q in queries], **overrides)

    def run(
        self, images: Sequence[ImageSource], batch_size: int = 8, **fields_and_overrides: Any
    ) -> list[Result]:
        """:meth:`__call__` on a list of images, with typed results (each with its ``score``)."""
        fields, overrides = _split_fields(self.task, fields_and_overrides)
        queries = list(_queries(list(images), fields))
        out: list[Result] = []
        for start in range(0, len(queries), batch_size):
            out.extend(self._batch(queries[start : start + batch_size], overrides))
        return out

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Save this pipeline (weights, tokenizer, ``pipeline.json``) and push it to the hub with a
        generated model card (:func:`ofa_vl.publish.push_folder` ``options``); the commit URL."""
        if self.precision != "fp32":
            raise OFAValueError(f"push an fp32 pipeline, not a {self.precision} one")
        with tempfile.TemporaryDirectory(prefix="ofa-pipeline-") as tmp:
            folder = self.settings().write(Path(tmp), self.model, self.tokenizer)
            return push_folder(folder, repo_id, task=self.task.name, **options)

    def settings(self) -> ModelFolder:
        """This pipeline's ``pipeline.json``: its task, the task's preprocessing, its decoding
        defaults (what a model folder of it says)."""
        return ModelFolder.describing(self.task.name, self.task.preprocessing, self.generation)

    def __call__(
        self,
        images: ImageSource | Sequence[ImageSource],
        batch_size: int = 8,
        **fields_and_overrides: Any,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Run the task: mmpretrain-style result dicts. Text fields (``question=``, ``text=``,
        ``objects=``) may be lists; other keywords are decoding options (``num_beams=``, ...)."""
        single = not isinstance(images, (list, tuple))
        image_list: list[Any] = [images] if single else list(images)  # type: ignore[arg-type]
        # mmpretrain's dict, plus what was asked for (n_best, token_logprobs: Result.extras)
        results = self.run(image_list, batch_size, **fields_and_overrides)
        out = [{**r.to_dict(), **r.extras()} for r in results]
        return out[0] if single else out


def _split_fields(task: Task, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's text fields and the decoding options among ``kwargs``; anything else is an error."""
    fields = {k: v for k, v in kwargs.items() if k in task.fields()}
    options = {k: v for k, v in kwargs.items() if k not in fields}
    if error := unknown_options(options, task.name, task.fields()):
        raise error
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


def _own_task(card: ModelCard | None, folder: ModelFolder) -> str:
    """The task a model runs unless told: its card's, its folder's, else captioning."""
    return card.task if card else folder.task or "caption"


def _task_for(
    card: ModelCard | None, folder: ModelFolder, task: str | None, options: dict[str, Any]
) -> Task:
    """The task ``task`` (default: the model's own) with the card's options for its own task,
    the folder's preprocessing, then ``options``."""
    name = task or _own_task(card, folder)
    opts = (
        {**card.task_options, **card.preprocessing.values()} if card and name == card.task else {}
    )
    opts.update(folder.preprocessing.values())
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
    backend: str = "torch",
    **task_options: Any,
) -> OFAPipeline:
    """A named model (``list_models()``) or a checkpoint path, ready for :func:`inference_model`.

    ``pretrained`` overrides the weights of a named model; ``tokenizer`` its tokenizer source;
    ``precision`` is one of ``PRECISIONS``: ``bf16`` (weights cast), ``int8`` (the output
    projection int8, the rest fp32), ``int8-legacy`` (every Linear int8, CPU): ``model/precision.py``.
    ``compile`` decodes with a ``torch.compile``d step (``ofa_vl.model.compile``; the first
    decoding of each batch shape pays the compilation). ``backend="onnxruntime"`` runs an
    ``ofa export --format onnx`` folder (``ofa_vl.onnx.runtime``) through the same decoding.
    """
    check_precision(precision)
    check_compile(compile, precision=precision)
    card = MODELS.get(str(name_or_path))
    weights = pretrained or (name_or_path if card is None else card.name)
    if str(weights).startswith("hf-hub:"):  # the repo's snapshot: a model folder (ofa push)
        weights = fetch_folder(str(weights))
    folder = ModelFolder.find(card, weights)
    model, precision = _load_backend(weights, device, precision, compile, backend)
    tok = (
        tokenizer
        if isinstance(tokenizer, OFATokenizer)
        else OFATokenizer.from_pretrained(
            tokenizer or tokenizer_source(card, weights, model.cfg.vocab_size)
        )
    )
    if len(tok) != model.cfg.vocab_size:
        raise OFAValueError(
            f"the tokenizer has {len(tok)} tokens but the model's vocabulary has "
            f"{model.cfg.vocab_size}; pass the model's own tokenizer with tokenizer="
        )
    return OFAPipeline(
        model=model,
        tokenizer=tok,
        task=_task_for(card, folder, task, task_options),
        name=str(name_or_path),
        generation=_own_generation(card, folder, task),
        precision=precision,
        backend=backend,
        card=card,
        folder=folder,
    )


def _load_backend(
    weights: str | Path, device: Any, precision: str, compile: bool, backend: str
) -> tuple[OFA, str]:
    """The network and its precision: PyTorch's (at ``precision``, compiled if asked) or the
    exported graphs (fp32, or int8 when exported with ``--quantize int8``)."""
    if backend not in BACKENDS:
        raise OFAValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        if precision != "fp32" or compile:
            raise OFAValueError(
                "the onnxruntime backend runs the exported graphs as they are: no precision= "
                "or compile= (export with --quantize int8 for int8)"
            )
        from .onnx.runtime import load_onnx_model

        # it quacks like the part of OFA decoding calls (cfg, encode, decoder): ofa_vl.onnx
        graphs = load_onnx_model(weights, device)
        return cast(OFA, graphs), graphs.precision
    model = apply_precision(load_model(weights, device=device), precision)
    if compile:
        compile_decoder(model)
    return model, precision


def _own_generation(
    card: ModelCard | None, folder: ModelFolder, task: str | None
) -> Overlay[GenerationConfig]:
    """The card's decoding defaults, then the folder's: each belongs to the model's own task,
    not to others run on its weights (the folder's to the task it records, else to none)."""
    layers = [card.generation] if card and (task is None or task == card.task) else []
    if task is None or (folder.task is not None and task == folder.task):
        layers.append(folder.generation)
    out = Overlay.of(GenerationConfig())
    for layer in layers:
        out = out.then(layer)
    return out


_BUILDER_KEYS = ("pretrained", "device", "tokenizer", "task", "precision", "compile", "backend")


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
