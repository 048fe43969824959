"""The base of tasks answered by scoring a fixed candidate set instead of generating.

Classification, image-text matching, visual entailment, all-candidate VQA and GLUE differ only in
their prompt, their candidates, what the decoder is prompted with (``prompt_type``) and how the
scores are reported; the scoring itself is :func:`ofa_vl.scoring.score_candidates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..scoring import CandidateSet, score_candidates
from .base import Task

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..model import OFA
    from ..tokenizer import OFATokenizer

PromptType = Literal["none", "src", "prev_output"]


@dataclass
class ScoringTask(Task):
    """A task whose answer is the best-scoring of :meth:`candidates` (no generation)."""

    # OFA-NOTES 2.1 prompt_type: none -> <s>; src -> <s> + source + </s>; prev_output -> <s> + source
    prompt_type: PromptType = "none"
    chunk_size: int = 20  # candidates per decoder pass (OFA's valid_batch_size)
    _candidates: CandidateSet | None = field(default=None, init=False, repr=False)

    def candidates(self) -> Sequence[str]:
        """The candidate answers, in the order scores are reported."""
        raise NotImplementedError

    def report(
        self, scores: torch.Tensor, names: Sequence[str], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """One input's (C,) candidate log-probabilities -> its result dict."""
        raise NotImplementedError

    def candidate_set(self, tokenizer: OFATokenizer) -> CandidateSet:
        """The tokenised candidates and their trie, built once."""
        if self._candidates is None:
            self._candidates = CandidateSet.build(self.candidates(), tokenizer)
        return self._candidates

    def decoder_tokens(self, fields: dict[str, Any], tokenizer: OFATokenizer) -> list[int]:
        """The decoder prompt between ``<s>`` and the candidate, per ``prompt_type``."""
        if self.prompt_type == "none":
            return []
        source = tokenizer.encode(self.prompt(fields), add_special_tokens=False)
        return source + [tokenizer.eos_token_id] if self.prompt_type == "src" else source

    @torch.inference_mode()
    def predict(
        self,
        model: OFA,
        tokenizer: OFATokenizer,
        images: torch.Tensor,
        infos: list[ImageInfo],
        fields: list[dict[str, Any]],
        generation: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Encode each input once and score every candidate; of ``generation`` only
        ``images_mask`` (set by text-only tasks) is used."""
        ids = tokenizer([self.prompt(f) for f in fields], return_tensors="pt")["input_ids"]
        enc = model.encode(ids.to(images.device), images, generation.get("images_mask"))
        cands = self.candidate_set(tokenizer)
        prompts = [self.decoder_tokens(f, tokenizer) for f in fields]
        scores = score_candidates(model, enc, prompts, cands, self.chunk_size).cpu()
        return [self.report(scores[i], cands.names, f) for i, f in enumerate(fields)]
