"""The base of tasks answered by scoring a fixed candidate set instead of generating.

Classification, image-text matching, visual entailment, all-candidate VQA and GLUE differ only in
their prompt, their candidates, what the decoder is prompted with (``prompt_type``) and how the
scores are reported; the scoring itself is :func:`ofa_vl.generation.scoring.score_candidates`, run by
:func:`ofa_vl.tasks.runners.score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from ..generation.scoring import CandidateSet
from .base import F, Runner, Task
from .results import Result

if TYPE_CHECKING:
    from ..tokenizer import OFATokenizer

PromptType = Literal["none", "src", "prev_output"]


@dataclass
class ScoringTask(Task[F]):
    """A task whose answer is the best-scoring of :meth:`candidates` (no generation)."""

    runner = Runner.SCORE
    # OFA-NOTES 2.1 prompt_type: none -> <s>; src -> <s> + source + </s>; prev_output -> <s> + source
    prompt_type: PromptType = "none"
    chunk_size: int = 20  # candidates per decoder pass (OFA's valid_batch_size)

    def candidates(self) -> Sequence[str]:
        """The candidate answers, in the order scores are reported."""
        raise NotImplementedError

    def report(self, scores: torch.Tensor, names: Sequence[str], fields: F) -> Result:
        """One input's (C,) candidate log-probabilities -> its typed result."""
        raise NotImplementedError

    def candidate_set(self, tokenizer: OFATokenizer) -> CandidateSet:
        """The tokenised candidates and their trie (built when a pipeline binds the tokenizer)."""
        return CandidateSet.build(self.candidates(), tokenizer)

    def decoder_tokens(self, fields: F, tokenizer: OFATokenizer) -> list[int]:
        """The decoder prompt between ``<s>`` and the candidate, per ``prompt_type``."""
        if self.prompt_type == "none":
            return []
        source = tokenizer.encode(self.prompt(fields), add_special_tokens=False)
        return source + [tokenizer.eos_token_id] if self.prompt_type == "src" else source
