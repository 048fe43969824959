"""What every OFA task is: an instruction template, an image preprocessing, decoding defaults and
a parser of the generated tokens. Tasks are small, stateless and registered by name."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import OFAValueError
from ..text import TextNorm, normalize_text

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..model import OFA
    from ..tokenizer import OFATokenizer

TASKS: dict[str, type[Task]] = {}


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
class Task:
    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()  # the query fields the prompt needs
    optional: ClassVar[tuple[str, ...]] = ()  # fields it reads when given

    image_size: int = 480
    interpolation: str = "bilinear"  # "bilinear" = cv2 INTER_LINEAR, "bicubic" = Pillow
    generation: dict[str, Any] = field(default_factory=dict)
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

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Every query field the task reads."""
        return cls.required + cls.optional

    def normalize(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with each text normalised as :attr:`text_norm` says (the model's pipeline)."""
        out = dict(fields)
        for key, how in self.text_norm.items():
            if isinstance(out.get(key), str):
                out[key] = normalize_text(out[key], how)
        return out

    def check(self, fields: dict[str, Any]) -> None:
        """Raise one clear error if a field the prompt needs is missing or empty."""
        for key in self.required:
            value = fields.get(key)
            if not isinstance(value, str) or not value.strip():
                raise OFAValueError(f"task {self.name!r} needs a non-empty {key!r} text")

    def prompt(self, fields: dict[str, Any]) -> str:
        """The encoder instruction (with OFA's leading space)."""
        raise NotImplementedError

    def decoder_prompt(self, fields: dict[str, Any]) -> str | None:
        """Text the decoder is forced to start with (after ``<s>``), if any."""
        return None

    def for_tokenizer(self, tokenizer: OFATokenizer) -> Task:
        """This task with the options that depend on the vocabulary filled in (default: as is)."""
        return self

    def constraint_trie(self, tokenizer: OFATokenizer) -> Any:
        """A :class:`~ofa_vl.generation.Trie` of allowed outputs, if any."""
        return None

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Generated ids (decoder prompt removed, ``<s>`` first) -> the result dict."""
        raise NotImplementedError

    def predict(
        self,
        model: OFA,
        tokenizer: OFATokenizer,
        images: torch.Tensor,
        infos: list[ImageInfo],
        fields: list[dict[str, Any]],
        generation: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Run the task on a preprocessed batch: prompts -> ``generate`` -> :meth:`parse`.

        Scoring tasks (classification, matching) override this.
        """
        from ..generation import generate

        task = self.for_tokenizer(tokenizer)
        if task is not self:
            return task.predict(model, tokenizer, images, infos, fields, generation)
        enc = tokenizer([self.prompt(f) for f in fields], return_tensors="pt")
        dec_texts = [self.decoder_prompt(f) for f in fields]
        prompts = None
        if any(t is not None for t in dec_texts):
            prompts = [tokenizer.encode(t or "", add_special_tokens=False) for t in dec_texts]
        seqs = generate(
            model,
            enc["input_ids"].to(images.device),
            images,
            decoder_prompts=prompts,
            constraint_trie=self.constraint_trie(tokenizer),
            **generation,
        )
        assert isinstance(seqs, torch.Tensor)
        results = []
        for i, f in enumerate(fields):
            tokens = seqs[i].tolist()
            if prompts is not None:  # mmpretrain: the forced prompt is not part of the answer
                tokens = tokens[:1] + tokens[1 + len(prompts[i]) :]
            results.append(self.parse(tokens, tokenizer, infos[i], f))
        return results


LANGUAGES = ("en", "zh")


@dataclass
class BilingualTask(Task):
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
