"""``GenerationConfig``: every decoding option in one frozen, typed object.

Names and meanings follow HF transformers' ``GenerationConfig`` where they overlap (``num_beams``,
``max_new_tokens``, ``min_new_tokens``, ``no_repeat_ngram_size``, ``length_penalty``,
``do_sample``, ``top_k``, ``top_p``, ``temperature``, ``suppress_tokens``, ``use_cache``,
``num_return_sequences``, ``output_scores``); the rest
are OFA's (``constraint_range`` = fairseq ``--constraint-range``, the ``fairseq`` stopping rules
with ``max_len_a`` / ``max_len_b``, ``--unnormalized``, ``--zero-shot``'s masking after softmax).
A task owns its defaults; a model card, a ``pipeline.json`` and the caller overlay them with
:meth:`GenerationConfig.replace`, which rejects an unknown key with one line naming the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OFAValueError
from ..options import check_decoding

if TYPE_CHECKING:
    import torch

    from ..config import OFAConfig
    from .trie import Trie

__all__ = ["Constraints", "GenerationConfig", "unknown_options"]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. Defaults are mmpretrain's OFA ones (beam 5, 20 new tokens, no-repeat 3)."""

    num_beams: int = 5
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 3
    length_penalty: float = 1.0
    do_sample: bool = False
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    suppress_tokens: tuple[int, ...] = ()  # HF: token ids never generated
    constraint_range: tuple[int, int] | None = None  # fairseq --constraint-range: [lo, hi) allowed
    # True masks logits before log_softmax (OFA fine-tuned mode, mmpretrain); False masks the
    # log-probs after it (OFA --zero-shot)
    constrain_before_softmax: bool = True
    fairseq: bool = False  # the official SequenceGenerator's stopping and scoring
    max_len_a: float = 0.0  # fairseq: int(max_len_a * src_len + max_len_b) tokens, then </s>
    max_len_b: int | None = None
    normalize_scores: bool = True  # False = fairseq --unnormalized
    use_cache: bool = True  # False: recompute the prefix every step (reference / benchmark)
    num_return_sequences: int = 1  # HF: the n best beams per input (n <= num_beams)
    output_scores: bool = False  # results carry each generated token's log-probability

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The option names a caller may set."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> GenerationConfig:
        """This config with ``overrides``; an unknown name is one :class:`OFAValueError`."""
        if unknown := unknown_options(overrides):
            raise unknown
        for key in ("suppress_tokens", "constraint_range"):  # lists from JSON / callers
            if isinstance(overrides.get(key), Sequence):
                overrides[key] = tuple(overrides[key])
        return dataclasses.replace(self, **overrides)

    def overlay(self, *layers: Mapping[str, Any] | None) -> GenerationConfig:
        """This config overlaid by each of ``layers`` in turn (card, pipeline.json, caller)."""
        out = self
        for layer in layers:
            out = out.replace(**dict(layer or {}))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every option, JSON-ready (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def new_tokens(self, source_len: int) -> int:
        """The length limit: ``max_new_tokens``, or fairseq's ``max_len_a * src_len + max_len_b``."""
        if self.fairseq and self.max_len_b is not None:
            # OFA:models/sequence_generator.py: max_len tokens, then one extra step for </s>
            return int(self.max_len_a * source_len + self.max_len_b) + 1
        return self.max_new_tokens

    def check(
        self,
        model: OFAConfig,
        *,
        source_len: int = 0,
        batch: int = 1,
        device: torch.device | None = None,
    ) -> None:
        """Bounds against the model and, with ``device``, the beams' caches against its memory."""
        options = {**self.to_dict(), "max_new_tokens": self.new_tokens(source_len)}
        check_decoding(options, model, batch=batch, source_len=source_len, device=device)
        n = self.num_return_sequences
        if n > (1 if self.do_sample else self.num_beams):  # HF: beams are what n-best returns
            raise OFAValueError(
                f"num_return_sequences ({n}) must not exceed num_beams ({self.num_beams})"
                + (" and needs beam search (do_sample=False)" if self.do_sample else "")
            )


def unknown_options(
    options: Mapping[str, Any], task: str | None = None, fields: Sequence[str] = ()
) -> OFAValueError | None:
    """The one error for keys of ``options`` that are no decoding option, or None. With ``task``
    (keys a caller gave beside the task's text ``fields``) it names the fields too."""
    unknown = ", ".join(sorted(set(options) - set(GenerationConfig.keys())))
    if not unknown:
        return None
    valid = ", ".join(GenerationConfig.keys())
    if task is None:
        return OFAValueError(f"unknown decoding option {unknown}; valid ones: {valid}")
    return OFAValueError(
        f"unknown keyword {unknown} for task {task!r}; its fields: "
        f"{', '.join(fields) or 'none'}; decoding options: {valid}"
    )


@dataclass(frozen=True)
class Constraints:
    """What a task forces on the decoder (derived from its prompt and its tokenizer)."""

    decoder_prompts: list[list[int]] | None = None  # per input: tokens forced after <s>
    trie: Trie | None = None  # allowed outputs ([<s>] + answer + [</s>] paths)
