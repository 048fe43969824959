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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OFAValueError
from ..options import bounds_of, check_decoding, check_range

if TYPE_CHECKING:
    import torch

    from ..config import OFAConfig
    from .trie import Trie

__all__ = ["Constraints", "GenerationConfig", "unknown_options"]


def _option(
    default: Any, help: str, service: Mapping[str, Any] | None = None, **bounds: float
) -> Any:
    """A decoding option: its one-line ``help`` (CLI, OpenAPI), its bounds (``ge``, ``gt``,
    ``le``: what the library accepts) and, when the HTTP service accepts it, ``service``: that
    service's own caps and name (``le``, ``ge``, ``alias``; limits of a shared server, not of
    the model)."""
    meta: dict[str, Any] = {"help": help, **bounds}
    if service is not None:
        meta["service"] = dict(service)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. Defaults are mmpretrain's OFA ones (beam 5, 20 new tokens, no-repeat 3).

    Each field's bounds are declared once, in its metadata: the config checks them when built
    (:meth:`check_bounds`), and the HTTP service's request model is generated from them.
    """

    num_beams: int = _option(5, "beam width (1: greedy)", {"le": 16}, ge=1)
    max_new_tokens: int = _option(20, "most tokens generated after <s>", {"le": 256}, ge=1)
    min_new_tokens: int = _option(0, "fewest tokens generated before </s>", {"le": 256}, ge=0)
    no_repeat_ngram_size: int = _option(
        3, "never repeat an n-gram of this size (0: off)", {"le": 16}, ge=0
    )
    length_penalty: float = _option(
        1.0, "beam scores over length ** length_penalty", {"ge": -10, "le": 10}
    )
    do_sample: bool = _option(False, "sample instead of searching", {})
    top_k: int = _option(50, "sample among the k most likely tokens (0: off)", {}, ge=0)
    top_p: float = _option(1.0, "sample within this probability mass (nucleus)", {}, gt=0, le=1)
    temperature: float = _option(
        1.0, "divide the logits by this before sampling", {"le": 100}, gt=0
    )
    suppress_tokens: tuple[int, ...] = _option((), "token ids never generated (HF)")
    constraint_range: tuple[int, int] | None = _option(
        None, "fairseq --constraint-range: only token ids in [lo, hi) are generated"
    )
    # True masks logits before log_softmax (OFA fine-tuned mode, mmpretrain); False masks the
    # log-probs after it (OFA --zero-shot)
    constrain_before_softmax: bool = _option(
        True, "mask disallowed tokens before log_softmax (False: after, OFA --zero-shot)"
    )
    fairseq: bool = _option(False, "the official SequenceGenerator's stopping and scoring")
    max_len_a: float = _option(0.0, "fairseq: int(max_len_a * src_len + max_len_b) tokens")
    max_len_b: int | None = _option(None, "fairseq: see max_len_a (None: max_new_tokens)")
    normalize_scores: bool = _option(True, "length-normalise beam scores (False: --unnormalized)")
    use_cache: bool = _option(True, "reuse the decoder's keys and values (False: recompute)")
    num_return_sequences: int = _option(
        1, "answer the n best beams per input (n <= num_beams)", {"le": 16, "alias": "n_best"},
        ge=1,
    )  # fmt: skip
    output_scores: bool = _option(False, "results carry each generated token's log-probability")

    def __post_init__(self) -> None:
        self.check_bounds()

    def check_bounds(self) -> None:
        """Every option within its declared bounds (one line naming option, value and range)."""
        for f in dataclasses.fields(self):
            check_range(f.name, getattr(self, f.name), **bounds_of(f.metadata))

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
