"""A prefix trie over allowed token sequences, stored as tensors for vectorised masking.

OFA:utils/trie.py / mmpretrain's ``Trie``: sequences are ``[<s>] + tokens + [</s>]``; off the trie
only ``</s>`` is allowed.
"""

from __future__ import annotations

import torch


class Trie:
    def __init__(self, sequences: list[list[int]], eos: int = 2):
        self.eos = eos
        nodes: list[dict[int, int]] = [{}]
        for seq in sequences:
            cur = 0
            for tok in seq:
                nxt = nodes[cur].get(tok)
                if nxt is None:
                    nodes.append({})
                    nxt = nodes[cur][tok] = len(nodes) - 1
                cur = nxt
        self._nodes = nodes
        edges = sorted((s, t, c) for s, kids in enumerate(nodes) for t, c in kids.items())
        self.stride = max((t for _, t, _ in edges), default=0) + 1
        self.keys = torch.tensor([s * self.stride + t for s, t, _ in edges], dtype=torch.long)
        self.children = torch.tensor([c for _, _, c in edges], dtype=torch.long)
        self.tokens = torch.tensor([t for _, t, _ in edges], dtype=torch.long)
        counts = torch.tensor([len(kids) for kids in nodes], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    @property
    def num_states(self) -> int:
        return len(self._nodes)

    def get_next_layer(self, prefix: list[int]) -> list[int]:
        """Allowed next tokens after ``prefix`` (plain Python, as the reference does it)."""
        cur = 0
        for tok in prefix:
            nxt = self._nodes[cur].get(tok)
            if nxt is None:
                return [self.eos]
            cur = nxt
        return list(self._nodes[cur])

    def to(self, device: torch.device) -> Trie:
        for name in ("keys", "children", "tokens", "offsets"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def advance(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) states x (N,) tokens -> (N,) next states; -1 = off the trie."""
        if self.keys.numel() == 0:
            return torch.full_like(states, -1)
        key = states * self.stride + tokens
        pos = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        hit = (self.keys[pos] == key) & (states >= 0) & (tokens < self.stride)
        return torch.where(hit, self.children[pos], torch.full_like(states, -1))

    def allowed_mask(self, states: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(N,) states -> (N, V) True where the token is allowed next."""
        N = states.shape[0]
        mask = torch.zeros(N, vocab_size, dtype=torch.bool, device=states.device)
        on = states >= 0
        mask[~on, self.eos] = True
        s = states.clamp(min=0)
        counts = torch.where(on, self.offsets[s + 1] - self.offsets[s], 0)
        total = int(counts.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(N, device=states.device), counts)
            first = torch.repeat_interleave(self.offsets[s], counts)
            within = torch.arange(total, device=states.device) - torch.repeat_interleave(
                counts.cumsum(0) - counts, counts
            )
            mask[rows, self.tokens[first + within]] = True
        return mask
