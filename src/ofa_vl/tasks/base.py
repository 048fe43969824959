"""What every OFA task is: an instruction template, an image preprocessing, decoding defaults and
a parser of the generated tokens. Tasks are small, stateless and registered by name."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import torch

from ..errors import OFAValueError
from ..generation.config import GenerationConfig
from ..images import OFA_MEAN, OFA_STD, Interpolation
from ..preprocess import PreprocessConfig
from ..text import TextNorm
from .samples import Example, Sample

if TYPE_CHECKING:
    from ..generation import Trie
    from ..generation.scoring import CandidateSet
    from ..images import ImageInfo
    from ..shapes.scene import Scene
    from ..shapes.text import SceneText
    from ..tokenizer import OFATokenizer
    from .results import Result

TASKS: dict[str, type[Task]] = {}


class Runner(str, Enum):
    """How a task gets its answer (:mod:`ofa_vl.tasks.runners`)."""

    GENERATE = "generate"  # decode text (or boxes) with ``generate``
    SCORE = "score"  # score a fixed candidate set by teacher forcing
    CODES = "codes"  # sample a grid of image codes


@dataclass(frozen=True)
class TaskFields:
    """The text fields of one query, typed; this base has none (the image alone: caption, OCR,
    detection, classification). A task names its subclass as ``Task.Fields``."""


@dataclass(frozen=True)
class TextFields(TaskFields):
    """One text: a referring expression, a caption to match, an article, ..."""

    text: str


F = TypeVar("F", bound=TaskFields)


def register_task(cls: type[Task]) -> type[Task]:
    for name in (cls.name, *cls.aliases):
        TASKS[name] = cls
    return cls


def get_task(name: str, **options: Any) -> Task:
    """A task by name (``caption``, ``refcoco``, ``vqa``, ...), with its options."""
    if name not in TASKS:
        raise OFAValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(set(TASKS)))}")
    return TASKS[name](**options)


@dataclass
class Query:
    """One request: an image and the task's text fields (question, text, ...)."""

    image: Any
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task(Generic[F]):
    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    Fields: ClassVar[type[TaskFields]] = TaskFields  # the query's fields (no default: required)
    runner: ClassVar[Runner] = Runner.GENERATE
    text_only: ClassVar[bool] = False  # the encoder reads the instruction alone (images masked)
    # the image size and resize of the task's models unless a card / pipeline.json says otherwise
    defaults: ClassVar[PreprocessConfig] = PreprocessConfig()
    result_type: ClassVar[type[Result] | None] = None  # what it answers (read back: from_dict)
    metric: ClassVar[str] = ""  # its metric, a name of ofa_vl.metrics.METRICS ("": none)
    coco_results: ClassVar[bool] = False  # its answers are COCO results (captions or boxes)
    # the folder columns that name it (ofa_vl.data.folder; "a|b": either), read by from_columns
    folder_columns: ClassVar[tuple[str, ...]] = ()

    image_size: int = 0  # 0: the task's default (``defaults``)
    interpolation: Interpolation | None = None  # None: the task's default
    mean: tuple[float, ...] = (
        OFA_MEAN  # OFA:data/mm_data/*_dataset.py: 0.5 (ImageNet tasks: timm's)
    )
    std: tuple[float, ...] = OFA_STD
    generation: GenerationConfig = (
        GenerationConfig()
    )  # mmpretrain OFA: beam 5, 20 tokens, no-repeat 3
    # field -> normalisation before the prompt (ofa_vl.text); a model card overrides it
    text_norm: dict[str, TextNorm] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.text_norm) - set(self.fields())
        if unknown:
            raise OFAValueError(
                f"task {self.name!r} has no text field {', '.join(sorted(unknown))} to normalise; "
                f"its fields: {', '.join(self.fields()) or 'none'}"
            )
        self.text_norm = {k: TextNorm.parse(v) for k, v in self.text_norm.items()}
        self.image_size = self.image_size or self.defaults.image_size
        # a name from a card / pipeline.json is parsed
        self.interpolation = Interpolation.parse(self.interpolation or self.defaults.interpolation)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if isinstance(self.generation, Mapping):  # generation={...} given as a task option
            self.generation = GenerationConfig().replace(**self.generation)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Every query field the task reads (the names of :attr:`Fields`)."""
        return tuple(f.name for f in dataclasses.fields(cls.Fields))

    @classmethod
    def required_fields(cls) -> tuple[str, ...]:
        """The query fields the prompt needs (those of :attr:`Fields` without a default)."""
        return tuple(
            f.name
            for f in dataclasses.fields(cls.Fields)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )

    @property
    def preprocessing(self) -> PreprocessConfig:
        """How this task's model reads its inputs (images and text fields)."""
        interpolation = self.interpolation or self.defaults.interpolation
        return PreprocessConfig(
            self.image_size, interpolation, self.mean, self.std, dict(self.text_norm)
        )

    def check(self, fields: Mapping[str, Any]) -> None:
        """Raise one clear error if a field the prompt needs is missing or empty."""
        for key in self.required_fields():
            value = fields.get(key)
            if not isinstance(value, str) or not value.strip():
                raise OFAValueError(f"task {self.name!r} needs a non-empty {key!r} text")

    def fields_of(self, fields: Mapping[str, Any]) -> F:
        """The caller's fields, checked, as this task's :attr:`Fields` (texts as given)."""
        self.check(fields)
        return self._typed(fields)

    def normalize(self, fields: Mapping[str, Any]) -> F:
        """The caller's fields, checked, then each text normalised as :attr:`text_norm` says
        (the model's pipeline), as this task's :attr:`Fields`."""
        self.check(fields)
        return self._typed(self.preprocessing.text(fields))

    def _typed(self, fields: Mapping[str, Any]) -> F:
        """The :attr:`Fields` instance (keys the task does not read are left out)."""
        return cast(F, self.Fields(**{k: fields[k] for k in self.fields() if k in fields}))

    def prompt(self, fields: F) -> str:
        """The encoder instruction (with OFA's leading space)."""
        raise NotImplementedError

    def decoder_prompt(self, fields: F) -> str | None:
        """Text the decoder is forced to start with (after ``<s>``), if any."""
        return None

    def with_image(self, fields: F, info: ImageInfo, tokenizer: OFATokenizer) -> F:
        """The fields the prompt reads once the image's resize is known (default: as given)."""
        return fields

    def model_images(self, images: torch.Tensor) -> torch.Tensor:
        """The (B, 3, S, S) pixels the encoder reads (default: the preprocessed images)."""
        return images

    def for_tokenizer(self, tokenizer: OFATokenizer) -> Task:
        """This task with the options that depend on the vocabulary filled in (default: as is)."""
        return self

    def constraint_trie(self, tokenizer: OFATokenizer) -> Trie | None:
        """A :class:`~ofa_vl.generation.Trie` of allowed outputs, if any (built by :meth:`bind`)."""
        return None

    def candidate_set(self, tokenizer: OFATokenizer) -> CandidateSet | None:
        """The scored candidates, for scoring tasks (built by :meth:`bind`)."""
        return None

    def bind(self, tokenizer: OFATokenizer) -> BoundTask:
        """This task settled for ``tokenizer``: its language, answer trie and candidate table."""
        task = self.for_tokenizer(tokenizer)
        trie, cands = task.constraint_trie(tokenizer), task.candidate_set(tokenizer)
        return BoundTask(self, task, tokenizer, trie, cands)

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: F
    ) -> Result:
        """Generated ids (decoder prompt removed, ``<s>`` first) -> the typed result."""
        raise NotImplementedError

    def confidence(self, logprobs: Sequence[float]) -> float:
        """A generated answer's confidence in [0, 1] from the log-probs of its tokens (after
        ``<s>`` and the decoder prompt, through ``</s>``): by default their geometric-mean
        probability, ``exp(mean)``, the per-token normalised sequence probability the OFA
        maintainers suggested (OFA-Sys/OFA#72) for texts of any length."""
        return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0

    def finish(self, result: Result) -> Result:
        """The result once its confidence is set (default: as is; grounding drops a box below
        its ``min_confidence``)."""
        return result

    # ----------------------------------------------------------------------- labelled samples
    @classmethod
    def dataset_options(cls, samples: Sequence[Sample]) -> dict[str, Any]:
        """The task options a dataset's own samples settle (default: none)."""
        return {}

    def shapes_lines(self, scene: Scene, text: SceneText, name: str) -> list[dict[str, Any]]:
        """The folder lines of one shapes scene (``ofa data shapes-folder``), its columns."""
        raise OFAValueError(f"shapes folders hold caption, refcoco or vqa lines, not {self.name!r}")

    def from_columns(
        self, row: Mapping[str, Any], size: tuple[int, int]
    ) -> tuple[dict[str, Any], Any]:
        """One folder line's (query fields, truth), checked against the (width, height) image;
        a bad line raises :class:`~ofa_vl.tasks.samples.ColumnError`."""
        raise OFAValueError(f"task {self.name!r} does not read folder datasets")

    def examples(self, sample: Sample) -> list[Example]:
        """The training examples of a sample, the inverse of :meth:`parse` (default: the
        prompt of its normalised fields -> ``" " + truth``, a text)."""
        if not isinstance(sample.truth, str):
            raise OFAValueError(f"task {self.name!r} does not train on {sample.truth!r}")
        fields = self.normalize(sample.fields)
        dprompt = self.decoder_prompt(fields)
        return [
            Example(self.name, sample.image, self.prompt(fields), " " + sample.truth,
                    decoder_prompt=dprompt)
        ]  # fmt: skip

    def answer(self, result: Result) -> str:
        """The text an exact-match metric compares with a sample's truth."""
        raise OFAValueError(f"task {self.name!r} has no exact-match answer")


@dataclass(frozen=True)
class BoundTask:
    """A task bound to a tokenizer: what its runner needs, built once per pipeline."""

    source: Task  # the task as configured (what the pipeline holds)
    task: Task  # with the tokenizer's options settled (the prompt language)
    tokenizer: OFATokenizer
    trie: Trie | None = None  # allowed answers (VQA's ans2label)
    candidates: CandidateSet | None = None  # scoring tasks' candidates and their trie


LANGUAGES = ("en", "zh")


@dataclass
class BilingualTask(Task[F]):
    """A task with an English and a Chinese (OFA-CN) prompt.

    The official code picks the prompt by its BPE (``OFA:data/mm_data/*_dataset.py``: ``GPT2BPE``
    English, ``BertBPE`` Chinese); ``language=None`` does the same with the tokenizer.
    """

    language: str | None = None  # "en" | "zh"; None: the tokenizer's (OFATokenizer.language)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.language not in (None, *LANGUAGES):
            raise OFAValueError(
                f"task {self.name!r}: language must be one of {', '.join(LANGUAGES)}, "
                f"got {self.language!r}"
            )

    def for_tokenizer(self, tokenizer: OFATokenizer) -> Task:
        """This task with the prompt language settled by the tokenizer when unset."""
        return self if self.language else replace(self, language=tokenizer.language)
