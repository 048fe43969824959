"""``get_model`` / ``inference_model`` / ``list_models``: a named model, an image, a result.

``get_model`` returns an :class:`OFAPipeline` = network + tokenizer + task (prompt, preprocessing,
decoding defaults, parsing). ``inference_model`` batches any number of inputs through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from .checkpoints import load_model, save_pretrained
from .errors import OFAValueError
from .generation import GenerationConfig
from .generation.config import unknown_options
from .images import ImageInfo, ImageSource
from .model import OFA
from .model.compile import compile_decoder
from .model.precision import apply_precision, check_precision, model_dtype
from .options import check_compile
from .tasks import TASKS, BoundTask, Query, Result, Task, get_task
from .tasks.runners import run
from .tokenizer import CHINESE_VOCAB, CHINESE_VOCAB_SIZE, ENGLISH_BPE, OFATokenizer
from .zoo import MODELS, PACKAGE_ASSETS, ModelCard, download, list_models, resolve_checkpoint

PIPELINE_FILE = "pipeline.json"  # a model folder's preprocessing (open_clip style)
# what a pipeline.json may set: the task's PreprocessConfig fields and its decoding defaults
PIPELINE_KEYS = ("image_size", "interpolation", "mean", "std", "text_norm", "generation")
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
    generation: dict[str, Any] = field(default_factory=dict)  # the card's / pipeline.json's
    precision: str = "fp32"  # of the model's weights: ofa_vl.model.precision.PRECISIONS
    backend: str = "torch"  # BACKENDS
    card: ModelCard | None = field(default=None, repr=False)
    preprocessing: dict[str, Any] = field(default_factory=dict, repr=False)  # from pipeline.json
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
            task=_task_for(self.card, task, task_options, self.preprocessing),
            generation=_card_generation(self.card, task),
        )

    def decoding(self, **overrides: Any) -> GenerationConfig:
        """The task's decoding defaults, overlaid by the model's (card, ``pipeline.json``), then
        by ``overrides``; an unknown option is one clear error."""
        return self.task.generation.overlay(self.generation, overrides)

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
        """Preprocessed images (B, 3, S, S) + their infos and text fields -> one typed result each.

        Text fields are checked, then normalised as the model's pipeline says (``task.text_norm``)
        into the task's typed ``Fields``.
        """
        typed = [self.task.normalize(f) for f in fields]
        config = self.decoding(**overrides)
        dtype = model_dtype(self.model) if self.backend == "torch" else torch.float32
        images = images.to(self.device, dtype)  # bf16 models take bf16 images
        return run(self.bind(), self.model, images, list(infos), typed, config)

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
        import json
        import tempfile

        from .publish import push_folder

        if self.precision != "fp32":
            raise OFAValueError(f"push an fp32 pipeline, not a {self.precision} one")
        with tempfile.TemporaryDirectory(prefix="ofa-pipeline-") as tmp:
            folder = Path(tmp)
            save_pretrained(self.model, folder / "model.safetensors")
            self.tokenizer.save_pretrained(folder)
            pre = self.task.preprocessing  # what this pipeline's task reads, as pipeline.json
            settings = {
                "image_size": pre.image_size,
                "interpolation": pre.interpolation.value,
                "mean": list(pre.mean),
                "std": list(pre.std),
                "text_norm": {k: v.value for k, v in pre.text_norm.items()},
                "generation": self.generation,
            }
            (folder / PIPELINE_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            return push_folder(folder, repo_id, task=self.task.name, **options)

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
    backend: str = "torch",
    **task_options: Any,
) -> OFAPipeline:
    """A named model (``list_models()``) or a checkpoint path, ready for :func:`inference_model`.

    ``pretrained`` overrides the weights of a named model; ``tokenizer`` its tokenizer source;
    ``precision`` is one of ``PRECISIONS``: ``bf16`` (weights cast), ``int8`` (torchao weight-only),
    ``int8-dynamic`` (torchao int8 activations too), ``int8-legacy`` (``quantize_dynamic``, CPU).
    ``compile`` decodes with a ``torch.compile``d step (``ofa_vl.model.compile``; the first
    decoding of each batch shape pays the compilation). ``backend="onnxruntime"`` runs an
    ``ofa export --format onnx`` folder (``ofa_vl.onnx.runtime``) through the same decoding.
    """
    check_precision(precision)
    check_compile(compile, precision=precision)
    card = MODELS.get(str(name_or_path))
    weights = pretrained or (name_or_path if card is None else card.name)
    if str(weights).startswith("hf-hub:"):  # the repo's snapshot: a model folder (ofa push)
        weights = resolve_checkpoint(str(weights))
    model, precision = _load_backend(weights, device, precision, compile, backend)
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
    preprocessing = pipeline_options(card, weights)
    # pipeline.json's decoding options, as the card's, belong to the model's own task
    folder_generation = preprocessing.pop("generation", {})
    folder_generation = folder_generation if task is None else {}
    pipe = OFAPipeline(
        model=model,
        tokenizer=tok,
        task=_task_for(card, task, task_options, preprocessing),
        name=str(name_or_path),
        generation={**_card_generation(card, task), **folder_generation},
        precision=precision,
        backend=backend,
        card=card,
        preprocessing=preprocessing,
    )
    pipe.decoding()  # an unknown option in the card or pipeline.json fails here, not per call
    return pipe


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


def pipeline_options(card: ModelCard | None, weights: str | Path) -> dict[str, Any]:
    """A model folder's ``pipeline.json``: its preprocessing (``image_size``, ``interpolation``,
    ``mean``, ``std``, ``text_norm``) and decoding defaults (``generation``)."""
    folder = _model_dir(card, weights)
    if folder is None or not (folder / PIPELINE_FILE).is_file():
        return {}
    import json

    cfg = json.loads((folder / PIPELINE_FILE).read_text())
    return {k: cfg[k] for k in PIPELINE_KEYS if k in cfg}


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
