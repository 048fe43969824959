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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) start tokens -> (B, L) sequences, (B,) summed log-probs of the chosen tokens and their
    (B, L - 1) log-probs (0 after ``</s>``)."""
    seqs = bos[:, None]
    alive = torch.ones_like(bos, dtype=torch.bool)
    logps: list[torch.Tensor] = []
    new = seqs
    while seqs.shape[1] < cfg.max_len and alive.any():
        t = seqs.shape[1] - 1
        logits = process(t, seqs, step(new)[:, -1].float(), False)  # HF: on raw logits
        tok = _sample(logits, cfg) if cfg.do_sample else logits.argmax(-1)
        logp = logits.log_softmax(-1).gather(1, tok[:, None]).squeeze(1)
        logps.append(torch.where(alive, logp, 0.0))
        tok = torch.where(alive, tok, cfg.pad)
        alive &= tok != cfg.eos
        new = tok[:, None]
        seqs = torch.cat([seqs, new], 1)
    token_logps = torch.stack(logps, 1) if logps else seqs.new_zeros(bos.shape[0], 0).float()
    return seqs, token_logps.sum(1), token_logps


class _Hypotheses:
    """Finished hypotheses of one sentence (HF ``BeamHypotheses``)."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        # (score, tokens without </s>, log-prob of each generated token incl. its </s>)
        self.beams: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        self.worst = 1e9

    def add(self, tokens: torch.Tensor, score: float, logps: torch.Tensor) -> None:
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, tokens, logps))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def best(self, n: int = 1) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """The ``n`` best hypotheses, best first (of equal scores the later added first, as
        ``sorted(...)[-1]`` picked the best one)."""
        return sorted(self.beams, key=lambda x: x[0])[::-1][:n]


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    process: ProcessFn,
    bos: torch.Tensor,
    cfg: SearchConfig,
    num_return: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) start tokens -> the ``num_return`` best (B * n, L) sequences per sentence (best
    first), their scores (B * n,) and their tokens' (B * n, L - 1) log-probs (0 on padding).

    A sentence that is done leaves the batch: ``reorder`` then gets fewer rows (the survivors'
    beams, sentences in their order), so its rows stop costing compute in later steps.
    """
    B, K, dev = bos.shape[0], cfg.num_beams, bos.device
    seqs = bos.repeat_interleave(K)[:, None]  # (A*K, 1), A = sentences still decoding
    seq_logps = torch.zeros(B * K, 0, device=dev)  # (A*K, t): each chosen token's log-prob
    beam_scores = torch.zeros(B, K, device=dev)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(K, cfg.length_penalty) for _ in range(B)]
    active = list(range(B))  # sentence of each group of K rows
    new = seqs
    while True:
        t, cur_len, A = seqs.shape[1] - 1, seqs.shape[1], len(active)
        logp = process(t, seqs, step(new)[:, -1].float(), True)
        V = logp.shape[-1]
        scores = (logp + beam_scores[:, None]).view(A, K * V)
        top, idx = scores.topk(2 * K, dim=1)  # (A, 2K), sorted
        top_logp = logp.view(A, K * V).gather(1, idx)  # the new token's own log-prob
        beam, tok = idx // V, idx % V
        is_eos = tok == cfg.eos
        # finished candidates: </s> among the top K of a sentence (HF) / any rank < K (fairseq)
        fin = is_eos & (torch.arange(2 * K, device=dev) < K)
        if fin.any():
            for a, j in fin.nonzero().tolist():
                row = a * K + int(beam[a, j])
                # HF and fairseq both normalise by cur_len: tokens incl. <s> without </s> (HF),
                # generated tokens incl. </s> (fairseq); fairseq --unnormalized skips it
                norm = cur_len**cfg.length_penalty if cfg.normalize_scores else 1.0
                logps = torch.cat([seq_logps[row], top_logp[a, j, None]])
                hyps[active[a]].add(seqs[row].clone(), top[a, j].item() / norm, logps)
        # continuing beams: the first K candidates that are not </s>
        order = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :K]
        own_rows = torch.arange(A * K, device=dev).view(A, K)
        rows = own_rows.gather(1, beam.gather(1, order)).view(-1)
        next_tok = tok.gather(1, order).view(-1, 1)
        beam_scores = top.gather(1, order).view(-1)
        seqs = torch.cat([seqs.index_select(0, rows), next_tok], 1)
        seq_logps = torch.cat(
            [seq_logps.index_select(0, rows), top_logp.gather(1, order).view(-1, 1)], 1
        )
        # a sentence is done once no live beam can beat its worst finished hypothesis
        best_live = top.max(1).values.tolist()
        norm = cur_len**cfg.length_penalty
        done = [
            len(hyps[b].beams) == K and (cfg.fairseq or hyps[b].worst >= best_live[a] / norm)
            for a, b in enumerate(active)
        ]
        if all(done) or seqs.shape[1] >= cfg.max_len:
            break
        if any(done):  # done sentences leave the batch
            kept = own_rows[torch.tensor([not d for d in done], device=dev)].view(-1)
            rows, seqs, seq_logps = rows[kept], seqs[kept], seq_logps[kept]
            next_tok, beam_scores = next_tok[kept], beam_scores[kept]
            active = [b for b, d in zip(active, done) if not d]
        reorder(rows)
        new = next_tok
    # sentences still open: their live beams join the hypotheses (HF ``finalize``)
    norm = seqs.shape[1] ** cfg.length_penalty if cfg.normalize_scores else 1.0
    for a, b in enumerate(active):
        if not done[a]:
            for row in range(a * K, (a + 1) * K):
                hyps[b].add(seqs[row], beam_scores[row].item() / norm, seq_logps[row])
    best = [h.best(num_return) for h in hyps]
    return _stack([hyp for n_best in best for hyp in n_best], cfg)


def _stack(
    hyps: list[tuple[float, torch.Tensor, torch.Tensor]], cfg: SearchConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hypotheses -> right-padded (N, L) sequences with ``</s>`` closing each (HF ``finalize``),
    their (N,) scores and (N, L - 1) token log-probs."""
    dev = hyps[0][1].device
    width = min(max(len(s) for _, s, _ in hyps) + 1, cfg.max_len)
    out = torch.full((len(hyps), width), cfg.pad, dtype=torch.long, device=dev)
    logps = torch.zeros(len(hyps), width - 1, device=dev)
    for b, (_, s, lp) in enumerate(hyps):
        out[b, : len(s)] = s
        if len(s) < width:
            out[b, len(s)] = cfg.eos
        logps[b, : len(lp)] = lp
    return out, torch.tensor([score for score, _, _ in hyps], device=dev), logps
