"""OFA's decoding loop: greedy, sampling and beam search over a KV-cached decoder.

Default semantics are those of HF transformers 4.28's ``generate`` as mmpretrain's OFA drives it
(``BeamSearchScorer`` with ``length_penalty``, ``early_stopping=False``, ``forced_eos_token_id``);
``fairseq=True`` gives the official ``SequenceGenerator``'s (a sentence ends once ``num_beams``
hypotheses are finished; scores normalised by length incl. ``</s>``, or unnormalised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .constraints import NEG_INF

# (N, T') new tokens -> (N, V) next-token logits; reorder(rows) keeps decoder rows
StepFn = Callable[[torch.Tensor], torch.Tensor]
ReorderFn = Callable[[torch.Tensor], None]
# (t, sequences, logits, log_softmax?) -> scores of position t after constraints and processors
ProcessFn = Callable[[int, torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass
class SearchConfig:
    num_beams: int = 1
    max_len: int = 21  # total length incl. <s>
    length_penalty: float = 1.0
    do_sample: bool = False
    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    fairseq: bool = False
    normalize_scores: bool = True  # False = fairseq ``--unnormalized``
    pad: int = 1
    eos: int = 2
    generator: torch.Generator | None = field(default=None, repr=False)


def _sample(scores: torch.Tensor, cfg: SearchConfig) -> torch.Tensor:
    """HF warpers (temperature, top-k, top-p) then multinomial sampling."""
    scores = scores / cfg.temperature if cfg.temperature != 1.0 else scores
    if cfg.top_k > 0:
        kth = scores.topk(min(cfg.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, NEG_INF)
    if cfg.top_p < 1.0:
        sorted_scores, idx = scores.sort(dim=-1)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        remove = cum <= 1 - cfg.top_p
        remove[:, -1] = False
        scores = scores.masked_fill(remove.scatter(1, idx, remove), NEG_INF)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=cfg.generator).squeeze(1)


def greedy_or_sample(
    step: StepFn, process: ProcessFn, bos: torch.Tensor, cfg: SearchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) start tokens -> (B, L) sequences and (B,) summed log-probs of the chosen tokens."""
    seqs = bos[:, None]
    alive = torch.ones_like(bos, dtype=torch.bool)
    total = torch.zeros(bos.shape[0], device=bos.device)
    new = seqs
    while seqs.shape[1] < cfg.max_len and alive.any():
        t = seqs.shape[1] - 1
        logits = process(t, seqs, step(new)[:, -1].float(), False)  # HF: on raw logits
        tok = _sample(logits, cfg) if cfg.do_sample else logits.argmax(-1)
        logp = logits.log_softmax(-1).gather(1, tok[:, None]).squeeze(1)
        total += torch.where(alive, logp, 0.0)
        tok = torch.where(alive, tok, cfg.pad)
        alive &= tok != cfg.eos
        new = tok[:, None]
        seqs = torch.cat([seqs, new], 1)
    return seqs, total


class _Hypotheses:
    """Finished hypotheses of one sentence (HF ``BeamHypotheses``)."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst = 1e9

    def add(self, tokens: torch.Tensor, score: float) -> None:
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def best(self) -> tuple[float, torch.Tensor]:
        return sorted(self.beams, key=lambda x: x[0])[-1]


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    process: ProcessFn,
    bos: torch.Tensor,
    cfg: SearchConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) start tokens -> best (B, L) sequence per sentence and its score."""
    B, K, dev = bos.shape[0], cfg.num_beams, bos.device
    seqs = bos.repeat_interleave(K)[:, None]  # (B*K, 1)
    beam_scores = torch.zeros(B, K, device=dev)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(K, cfg.length_penalty) for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    own_rows = torch.arange(B * K, device=dev).view(B, K)
    new = seqs
    while True:
        t, cur_len = seqs.shape[1] - 1, seqs.shape[1]
        scores = process(t, seqs, step(new)[:, -1].float(), True)
        V = scores.shape[-1]
        scores = (scores + beam_scores[:, None]).view(B, K * V)
        top, idx = scores.topk(2 * K, dim=1)  # (B, 2K), sorted
        beam, tok = idx // V, idx % V
        is_eos = tok == cfg.eos
        # finished candidates: </s> among the top K of a sentence (HF) / any rank < K (fairseq)
        fin = is_eos & (torch.arange(2 * K, device=dev) < K) & ~done[:, None]
        if fin.any():
            for b, j in fin.nonzero().tolist():
                row = b * K + int(beam[b, j])
                # HF and fairseq both normalise by cur_len: tokens incl. <s> without </s> (HF),
                # generated tokens incl. </s> (fairseq); fairseq --unnormalized skips it
                norm = cur_len**cfg.length_penalty if cfg.normalize_scores else 1.0
                hyps[b].add(seqs[row].clone(), top[b, j].item() / norm)
        # continuing beams: the first K candidates that are not </s>
        keep = ~is_eos
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :K]
        next_scores = top.gather(1, order)
        next_tok = tok.gather(1, order)
        next_rows = own_rows.gather(1, beam.gather(1, order))
        next_scores = torch.where(done[:, None], 0.0, next_scores)
        next_tok = torch.where(done[:, None], cfg.pad, next_tok)
        next_rows = torch.where(done[:, None], own_rows, next_rows)
        rows = next_rows.view(-1)
        seqs = torch.cat([seqs.index_select(0, rows), next_tok.view(-1, 1)], 1)
        beam_scores = next_scores.view(-1)
        reorder(rows)
        # a sentence is done once no live beam can beat its worst finished hypothesis
        best_live = top.max(1).values
        for b in range(B):
            h = hyps[b]
            if done[b] or len(h.beams) < K:
                continue
            if cfg.fairseq or h.worst >= best_live[b].item() / cur_len**cfg.length_penalty:
                done[b] = True
        new = next_tok.view(-1, 1)
        if done.all() or seqs.shape[1] >= cfg.max_len:
            break
    # sentences still open: their live beams join the hypotheses (HF ``finalize``)
    for b in range(B):
        if not done[b]:
            norm = seqs.shape[1] ** cfg.length_penalty if cfg.normalize_scores else 1.0
            for row in range(b * K, (b + 1) * K):
                hyps[b].add(seqs[row], beam_scores[row].item() / norm)
    best = [h.best() for h in hyps]
    lengths = [len(s) for _, s in best]
    width = min(max(lengths) + 1, cfg.max_len)
    out = seqs.new_full((B, width), cfg.pad)
    for b, (_, s) in enumerate(best):
        out[b, : len(s)] = s
        if len(s) < width:
            out[b, len(s)] = cfg.eos
    return out, torch.tensor([s for s, _ in best], device=dev)
