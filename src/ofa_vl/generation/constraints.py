"""Vectorised logits constraints of OFA's decoding, applied to all rows at once.

- forced decoder prompt (VQA with VinVL objects: the decoder starts with the question);
- a trie over allowed answers (VQA ``ans2label``; OFA:utils/trie.py);
- a token range (fairseq ``--constraint-range``: tokens [4, a) and [b, V) banned);
- bad words, no-repeat n-grams (HF ``NoRepeatNGramLogitsProcessor``), minimum length and a
  forced ``</s>`` at the last step (HF ``ForcedEOSTokenLogitsProcessor``).
"""

from __future__ import annotations

import torch

from .trie import Trie

NEG_INF = float("-inf")


def ban_repeated_ngrams(tokens: torch.Tensor, scores: torch.Tensor, n: int) -> None:
    """In place: forbid tokens that would repeat an n-gram already in ``tokens`` (N, L)."""
    N, L = tokens.shape
    if n <= 0 or n > L:
        return
    if n == 1:
        scores.scatter_(1, tokens, NEG_INF)
        return
    windows = tokens.unfold(1, n, 1)  # (N, L - n + 1, n)
    last = tokens[:, L - n + 1 :]  # (N, n - 1)
    hit = (windows[:, :, :-1] == last[:, None, :]).all(-1)  # (N, W)
    banned = torch.zeros_like(scores).scatter_add_(1, windows[:, :, -1], hit.to(scores.dtype))
    scores.masked_fill_(banned > 0, NEG_INF)


class PromptAndTrie:
    """Forced per-image decoder prompts, then (optionally) a trie over the answer tokens.

    Rows are ``group`` consecutive rows per image. Position ``t`` counts generated tokens after
    ``<s>``: positions ``< len(prompt)`` are forced; the trie starts after the prompt with the
    state reached by ``<s>`` (answers are inserted as ``[<s>] + answer + [</s>]``).
    """

    def __init__(
        self,
        prompts: list[list[int]] | None,
        trie: Trie | None,
        batch_size: int,
        group: int,
        device: torch.device,
        bos: int = 0,
    ):
        self.trie = trie.to(device) if trie is not None else None
        lens = [len(p) for p in prompts] if prompts else [0] * batch_size
        width = max(lens + [1])
        table = torch.full((batch_size, width), -1, dtype=torch.long)
        for i, p in enumerate(prompts or []):
            table[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        self.prompt = table.to(device).repeat_interleave(group, 0)  # (N, P)
        self.prompt_len = torch.tensor(lens, device=device).repeat_interleave(group)  # (N,)
        self.bos = bos

    def select(self, rows: torch.Tensor) -> None:
        """Keep the prompts of rows ``rows`` (the others' sentences are done)."""
        self.prompt, self.prompt_len = self.prompt[rows], self.prompt_len[rows]

    def _states(self, seqs: torch.Tensor) -> torch.Tensor:
        """Trie state of every row: ``<s>`` then the tokens after the row's prompt."""
        assert self.trie is not None
        N, L = seqs.shape
        states = self.trie.advance(
            torch.zeros(N, dtype=torch.long, device=seqs.device),
            torch.full((N,), self.bos, dtype=torch.long, device=seqs.device),
        )
        for col in range(1, L):  # position col - 1 of the generated part
            moved = self.trie.advance(states, seqs[:, col])
            states = torch.where(self.prompt_len > col - 1, states, moved)
        return states

    def mask(self, t: int, seqs: torch.Tensor, scores: torch.Tensor) -> None:
        """In place: restrict the scores of position ``t`` given the rows so far (N, t + 1)."""
        in_prompt = self.prompt_len > t
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if self.trie is not None:
            allowed = self.trie.allowed_mask(self._states(seqs), scores.shape[1])
        if in_prompt.any():
            forced = torch.zeros_like(allowed)
            col = self.prompt[:, min(t, self.prompt.shape[1] - 1)].clamp(min=0)
            forced[torch.arange(scores.shape[0], device=scores.device), col] = True
            allowed = torch.where(in_prompt[:, None], forced, allowed)
        scores.masked_fill_(~allowed, NEG_INF)


def constraint_range_mask(scores: torch.Tensor, lo: int, hi: int) -> None:
    """In place: fairseq ``--constraint-range=lo,hi`` (special tokens 0-3 stay allowed)."""
    scores[:, 4:lo] = NEG_INF
    scores[:, hi:] = NEG_INF


def ban_tokens(scores: torch.Tensor, tokens: list[int]) -> None:
    if tokens:
        scores[:, tokens] = NEG_INF


def force_token(scores: torch.Tensor, token: int) -> None:
    """In place: only ``token`` is possible (HF sets it to 0, everything else to -inf)."""
    scores.fill_(NEG_INF)
    scores[:, token] = 0.0
