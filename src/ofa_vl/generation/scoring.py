"""Teacher-forced scoring of a fixed candidate set: OFA's all-candidate evaluation.

``OFA:utils/eval_utils.py`` ``eval_vqa_gen`` / ``eval_snli_ve`` / ``eval_image_classify``: the
encoder runs once per image; for every chunk of candidates the decoder reads
``<s> + decoder prompt + candidate``, its logits at each candidate position are masked to the trie
children of that prefix *before* ``log_softmax``, and a candidate scores the sum of the log-probs of
its tokens and ``</s>`` (prompt positions are not counted, no length normalisation). Classification,
image-text matching, visual entailment, VQA and the GLUE tasks all use :func:`score_candidates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import OFAValueError
from .trie import Trie

if TYPE_CHECKING:
    from ..model import OFA, EncoderOutput
    from ..tokenizer import OFATokenizer

__all__ = ["CandidateSet", "score_candidates"]


@dataclass(frozen=True)
class CandidateSet:
    """Candidate answers, their tokens and the trie over them, tabulated for batched scoring."""

    names: tuple[str, ...]
    trie: (
        Trie  # over [<s>] + tokens + [</s>] (OFA:utils/trie.py, as the tasks' build_model inserts)
    )
    targets: torch.Tensor  # (C, L) tokens then </s>, <pad> after
    states: torch.Tensor  # (C, L) trie state before each target token (after <s> + tokens[:j])
    lengths: torch.Tensor  # (C,) number of targets: len(tokens) + 1

    @classmethod
    def build(cls, names: Sequence[str], tokenizer: OFATokenizer) -> CandidateSet:
        """Candidates as OFA encodes answers: ``BPE(" " + name)`` (OFA:tasks/mm_tasks/vqa_gen.py)."""
        if not names:
            raise OFAValueError("the candidate set is empty")
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        empty = [n for n in names if not n.strip()]
        if empty:
            raise OFAValueError(f"empty candidate names: {empty[:3]}")
        tokens = [tokenizer.encode(" " + n.strip(), add_special_tokens=False) for n in names]
        trie = Trie([[bos, *t, eos] for t in tokens], eos)
        C, L = len(tokens), max(len(t) for t in tokens) + 1
        targets = torch.full((C, L), pad, dtype=torch.long)
        for i, t in enumerate(tokens):
            targets[i, : len(t) + 1] = torch.tensor([*t, eos])
        lengths = torch.tensor([len(t) + 1 for t in tokens])
        states = torch.empty(C, L, dtype=torch.long)
        states[:, 0] = trie.advance(torch.zeros(C, dtype=torch.long), torch.full((C,), bos))
        for j in range(1, L):
            states[:, j] = trie.advance(states[:, j - 1], targets[:, j - 1])
        return cls(tuple(names), trie, targets, states, lengths)

    def __len__(self) -> int:
        return len(self.names)


@torch.inference_mode()
def score_candidates(
    model: OFA,
    encoder_output: EncoderOutput,
    prompts: Sequence[Sequence[int]],
    candidates: CandidateSet,
    chunk_size: int = 20,
) -> torch.Tensor:
    """Summed log-probability (B, C) of every candidate for every encoded input.

    Args:
        encoder_output: ``model.encode(...)`` of B inputs, reused for all candidates.
        prompts: per input, the decoder prompt tokens between ``<s>`` and the candidate (empty for
            OFA's ``prompt_type=none``).
        chunk_size: candidates per decoder pass (OFA's ``valid_batch_size``, 20).
    """
    if chunk_size < 1:
        raise OFAValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B = len(prompts)
    dev = encoder_output.last_hidden_state.device
    cfg = model.cfg
    trie = candidates.trie.to(dev)
    plens = torch.tensor([len(p) for p in prompts], device=dev)  # (B,)
    P = int(plens.max()) if B else 0
    rows = torch.arange(B, device=dev)
    scores = []
    for start in range(0, len(candidates), chunk_size):
        sl = slice(start, start + chunk_size)
        lengths = candidates.lengths[sl].to(dev)
        n, L = lengths.shape[0], int(lengths.max())
        targets = candidates.targets[sl, :L].to(dev)  # (n, L)
        allowed = trie.allowed_mask(candidates.states[sl, :L].reshape(-1).to(dev), cfg.vocab_size)
        allowed = allowed.view(n, L, -1)
        # decoder input per (input, candidate): <s> + prompt + candidate tokens (not its </s>)
        answer = targets[:, :-1].masked_fill(targets[:, :-1] == cfg.eos_token_id, cfg.pad_token_id)
        dec = torch.full((B, n, 1 + P + L - 1), cfg.pad_token_id, dtype=torch.long, device=dev)
        dec[:, :, 0] = cfg.bos_token_id
        for b, prompt in enumerate(prompts):
            p = len(prompt)
            dec[b, :, 1 : 1 + p] = torch.tensor(list(prompt), dtype=torch.long, device=dev)
            dec[b, :, 1 + p : p + L] = answer
        enc = encoder_output.index_select(rows.repeat_interleave(n))
        logits = model.decoder(dec.view(B * n, -1), enc).view(B, n, dec.shape[-1], -1)
        # the logits at position plen + j predict target j
        pos = plens[:, None] + torch.arange(L, device=dev)  # (B, L)
        picked = logits.transpose(1, 2)[rows[:, None], pos].transpose(1, 2)  # (B, n, L, V)
        logp = picked.float().masked_fill(~allowed, float("-inf")).log_softmax(-1)
        tok = logp.gather(-1, targets[None, :, :, None].expand(B, n, L, 1)).squeeze(-1)
        valid = torch.arange(L, device=dev) < lengths[:, None]  # (n, L)
        scores.append(torch.where(valid, tok, 0.0).sum(-1))
    return torch.cat(scores, 1)
