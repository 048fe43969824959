"""``fairseq=True`` against the official generator's rules, computed by hand on a toy language model.

OFA:models/sequence_generator.py (the official OFA fork's ``SequenceGenerator``):
- ``max_len = int(max_len_a * src_len + max_len_b)``; ``for step in range(max_len + 1)`` ("one
  extra step for EOS marker"), ``</s>`` forced when ``step >= max_len``: at most ``max_len`` tokens
  then ``</s>``; ``</s>`` banned while ``step < min_len``;
- ``2 * beam`` candidates; a ``</s>`` among the first ``beam`` of them finishes a hypothesis scored
  ``cumulative log-prob / (step + 1) ** len_penalty`` (tokens incl. ``</s>``; ``--unnormalized``:
  no division);
- ``is_finished``: a sentence ends as soon as ``beam`` hypotheses are finished, even when a live beam
  could still beat them (HF's rule, the default, keeps going while one could).
"""

from __future__ import annotations

import math

import pytest
import torch

from ofa_vl.config import OFAConfig
from ofa_vl.generation.search import SearchConfig, beam_search
from ofa_vl.model import OFA

BOS, PAD, EOS, A, B = 0, 1, 2, 3, 4
# next-token probabilities of a toy LM by step and last token (A / B); absent tokens: 0
TABLE: list[dict[int, dict[int, float]]] = [
    {BOS: {EOS: 0.25, A: 0.4, B: 0.35}},
    {A: {EOS: 0.5, A: 0.3, B: 0.2}, B: {EOS: 0.6, A: 0.1, B: 0.3}},
    {A: {EOS: 0.9, A: 0.05, B: 0.05}, B: {EOS: 0.8, A: 0.1, B: 0.1}},
]
LATER = {EOS: 0.9, A: 0.05, B: 0.05}


def toy_search(**options: object) -> tuple[list[int], float]:
    """Beam search (2 beams) over the toy LM: the best sequence and its score."""
    t = 0

    def step(new: torch.Tensor) -> torch.Tensor:  # (N, 1) last tokens -> (N, 1, V) log-probs
        nonlocal t
        rows = []
        for last in new[:, -1].tolist():
            probs = TABLE[t].get(last, LATER) if t < len(TABLE) else LATER
            rows.append([math.log(probs[v]) if v in probs else -math.inf for v in range(5)])
        t += 1
        return torch.tensor(rows)[:, None]

    def process(t: int, seqs: torch.Tensor, logits: torch.Tensor, normalize: bool) -> torch.Tensor:
        return logits.log_softmax(-1) if normalize else logits

    cfg = SearchConfig(num_beams=2, max_len=8, pad=PAD, eos=EOS, **options)  # type: ignore[arg-type]
    seqs, scores, _ = beam_search(step, lambda rows: None, process, torch.tensor([BOS]), cfg)
    return seqs[0].tolist(), float(scores[0])


# Worked by hand (2 beams, 4 candidates a step):
# step 0: A .4, B .35, </s> .25 (rank 2 of 4: not among the first 2, not finished)
# step 1: B</s> .35*.6 = .21, A</s> .4*.5 = .2 (ranks 0, 1: finished, scores log(.21)/2, log(.2)/2),
#         then AA .12, BB .105 live. fairseq: 2 finished = beam size: done, best "B".
# HF: the best live candidate log(.21)/2 beats the worst finished log(.2)/2: go on.
# step 2: AA</s> .108 -> log(.108)/3 = -0.742 replaces "A" (-0.805); BB</s> .084 -> -0.826 is not
#         kept; live BBA, BBB .0105. step 3: their </s> .00945 -> log(.00945)/4 = -1.17 cannot beat
#         the worst finished (-0.780): done, best "AA".
def test_fairseq_stops_once_beam_size_hypotheses_are_finished() -> None:
    seq, score = toy_search(fairseq=True)
    assert seq == [BOS, B, EOS] and score == pytest.approx(math.log(0.21) / 2)


def test_hf_rule_goes_on_while_a_live_beam_can_win() -> None:
    seq, score = toy_search(fairseq=False)
    assert seq == [BOS, A, A, EOS] and score == pytest.approx(math.log(0.108) / 3)


def test_fairseq_scores_unnormalized_and_with_length_penalty() -> None:
    assert toy_search(fairseq=True, normalize_scores=False)[1] == pytest.approx(math.log(0.21))
    # len_penalty 2: log(.21) / 2**2 = -0.390 beats log(.2) / 4 = -0.402: still "B"
    seq, score = toy_search(fairseq=True, length_penalty=2.0)
    assert seq == [BOS, B, EOS] and score == pytest.approx(math.log(0.21) / 4)


@pytest.fixture(scope="module")
def tiny() -> OFA:
    torch.manual_seed(0)
    cfg = OFAConfig(
        vocab_size=40, embed_dim=16, encoder_layers=1, decoder_layers=1, num_heads=2,
        resnet_layers=(1, 1, 1), resnet_width=8, max_positions=64, image_bucket_size=8,
    )  # fmt: skip
    return OFA(cfg).eval()


@pytest.mark.parametrize(("a", "b", "tokens"), [(0.0, 4, 4), (0.0, 1, 1), (0.5, 2, 5)])
def test_fairseq_length_limit_is_max_len_tokens_then_eos(tiny: OFA, a: float, b: int, tokens: int):
    """``</s>`` banned everywhere it is not forced: ``int(a * src_len + b)`` tokens, then ``</s>``
    (OFA refcoco: ``--max-len-b=4 --min-len=4`` reads 4 bins)."""
    ids = torch.tensor([[0, 5, 6, 7, 8, 9, 2]])  # src_len 7: int(0.5 * 7 + 2) = 5
    images = torch.zeros(1, 3, 32, 32)
    for beams in (1, 3):
        seqs = tiny.generate(
            ids, images, num_beams=beams, fairseq=True, max_len_a=a, max_len_b=b,
            suppress_tokens=[EOS], no_repeat_ngram_size=0,
        )  # fmt: skip
        assert seqs.shape == (1, 1 + tokens + 1), beams
        assert seqs[0, -1] == EOS and (seqs[0, 1:-1] != EOS).all()
