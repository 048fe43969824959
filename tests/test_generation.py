"""The decoding engine against mmpretrain's generation, and its constraints against brute force."""

import copy

import pytest
import torch
from tolerance import assert_matches_reference

from ofa_vl import Trie
from ofa_vl.generation.constraints import ban_repeated_ngrams
from ofa_vl.model.precision import apply_precision


@pytest.mark.parametrize("mode", ["greedy", "beam5"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_sequences_match_reference(fixture_model, golden, mode, use_cache):
    i, g = golden["inputs"], golden["generate"][mode]
    kwargs = {k: v for k, v in g["kwargs"].items() if k != "use_cache"}
    out = fixture_model.generate(
        i["input_ids"], i["images"], use_cache=use_cache, return_scores=True, **kwargs
    )
    assert torch.equal(out.sequences, g["sequences"])
    if "sequences_scores" in g:
        assert_matches_reference(out.scores, golden, "generate", mode, "sequences_scores")


def hf_banned(tokens, n):
    """HF 4.28 NoRepeatNGramLogitsProcessor, written plainly."""
    out = []
    for row in tokens.tolist():
        seen = {}
        for j in range(len(row) - n + 1):
            seen.setdefault(tuple(row[j : j + n - 1]), []).append(row[j + n - 1])
        out.append(set(seen.get(tuple(row[len(row) - n + 1 :]), [])) if len(row) >= n else set())
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_plain_python(n):
    g = torch.Generator().manual_seed(n)
    tokens = torch.randint(0, 4, (16, 9), generator=g)
    scores = torch.zeros(16, 6)
    ban_repeated_ngrams(tokens, scores, n)
    for row, banned in enumerate(
        hf_banned(tokens, n) if n > 1 else [set(r) for r in tokens.tolist()]
    ):
        assert {j for j in range(6) if scores[row, j] == float("-inf")} == banned


def test_trie_mask_matches_reference_lookup():
    answers = [[0, 5, 6, 2], [0, 5, 7, 2], [0, 9, 2]]
    trie = Trie(answers, eos=2)
    prefixes = [[0], [0, 5], [0, 5, 7], [0, 9, 2], [0, 4], [0, 5, 6]]
    masks = []
    for p in prefixes:
        s = torch.zeros(1, dtype=torch.long)
        for tok in p:
            s = trie.advance(s, torch.tensor([tok]))
        masks.append(trie.allowed_mask(s, 12)[0])
    for p, m in zip(prefixes, masks):
        assert set(m.nonzero().flatten().tolist()) == set(trie.get_next_layer(p))
    assert trie.get_next_layer([0, 4]) == [2]  # off the trie: only </s>


def test_trie_constrained_decoding_only_gives_allowed_answers(fixture_model, golden):
    i = golden["inputs"]
    answers = [[0, 4420, 2], [0, 117, 2], [0, 1104, 4420, 2], [0, 2085, 117, 117, 2]]
    trie = Trie(answers)
    for beams in (1, 5):
        seqs = fixture_model.generate(
            i["input_ids"], i["images"], num_beams=beams, max_new_tokens=8, constraint_trie=trie
        )
        for row in seqs.tolist():
            row = [t for t in row if t != 1]
            assert row in answers, row


def test_decoder_prompt_is_forced_then_trie(fixture_model, golden):
    i = golden["inputs"]
    prompts = [[99, 473], [5]]
    trie = Trie([[0, 4420, 2], [0, 117, 2]])
    seqs = fixture_model.generate(
        i["input_ids"],
        i["images"],
        num_beams=3,
        max_new_tokens=6,
        decoder_prompts=prompts,
        constraint_trie=trie,
    )
    for row, p in zip(seqs.tolist(), prompts):
        assert row[1 : 1 + len(p)] == p
        assert row[1 + len(p)] in (4420, 117) and row[2 + len(p)] == 2


def test_constraint_range_keeps_tokens_in_range(fixture_model, golden):
    i = golden["inputs"]
    seqs = fixture_model.generate(
        i["input_ids"], i["images"], num_beams=2, max_new_tokens=5, constraint_range=(58457, 59457)
    )
    body = seqs[:, 1:]
    assert (((body >= 58457) & (body < 59457)) | (body <= 3)).all()


def test_min_new_tokens_and_length_limit(fixture_model, golden):
    i = golden["inputs"]
    seqs = fixture_model.generate(
        i["input_ids"], i["images"], num_beams=1, max_new_tokens=4, min_new_tokens=4
    )
    assert seqs.shape == (2, 5) and (seqs[:, -1] == 2).all() and (seqs[:, 1:4] != 2).all()


def test_sampling_is_seeded_and_top_k_1_is_greedy(fixture_model, golden):
    i = golden["inputs"]
    greedy = fixture_model.generate(
        i["input_ids"], i["images"], num_beams=1, max_new_tokens=6, no_repeat_ngram_size=0
    )
    top1 = fixture_model.generate(
        i["input_ids"], i["images"], do_sample=True, top_k=1, max_new_tokens=6, no_repeat_ngram_size=0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.equal(greedy, top1)
    a, b = (
        fixture_model.generate(i["input_ids"], i["images"], do_sample=True, top_p=0.9, temperature=1.5,
                               max_new_tokens=6, generator=torch.Generator().manual_seed(s))
        for s in (1, 1)
    )  # fmt: skip
    assert torch.equal(a, b)


def test_fairseq_mode_stops_at_max_len_b(fixture_model, golden):
    i = golden["inputs"]
    out = fixture_model.generate(
        i["input_ids"],
        i["images"],
        fairseq=True,
        max_len_b=4,
        num_beams=3,
        normalize_scores=False,
        return_scores=True,
    )
    assert out.sequences.shape[1] <= 6 and (out.sequences[:, 0] == 0).all()  # <s>, 4, </s>
    assert (out.sequences == 2).any(1).all()


@pytest.mark.slow
def test_finished_sentences_leave_the_batch(fixture_model, monkeypatch):
    """Sentences of one batch that end early (short answers, short forced prompts) leave it: the
    decoder sees fewer rows, and every sentence's ids equal those of decoding it alone."""
    torch.manual_seed(0)
    images = torch.randn(6, 3, 64, 64).clamp(-1, 1)
    ids = torch.randint(4, 500, (6, 7))
    ids[:, 0], ids[:, -1] = 0, 2
    short = [[0, 100 + a, 2] for a in range(4)]
    long = [[0, *range(200 + 10 * a, 203 + 12 * a), 2] for a in range(4)]
    prompts = [[5] * (3 * (j % 3)) for j in range(6)]
    kw = dict(num_beams=2, max_new_tokens=12, length_penalty=0.0, constrain_before_softmax=False,
              constraint_trie=Trie(short + long))  # fmt: skip
    rows: list[int] = []
    step = fixture_model.decoder.step
    monkeypatch.setattr(
        fixture_model.decoder, "step", lambda t, s: rows.append(len(t)) or step(t, s)
    )
    batch = fixture_model.generate(ids, images, decoder_prompts=prompts, **kw)
    assert rows[0] == 12 and rows[-1] < rows[0]  # 6 sentences x 2 beams, then fewer
    naive = fixture_model.generate(ids, images, decoder_prompts=prompts, use_cache=False, **kw)
    assert torch.equal(batch, naive)
    for j in range(6):
        alone = fixture_model.generate(
            ids[j : j + 1], images[j : j + 1], decoder_prompts=prompts[j : j + 1], **kw
        )[0]
        assert torch.equal(batch[j, : len(alone)], alone), j
        assert (batch[j, len(alone) :] == 1).all(), j  # right-padded


@pytest.mark.slow
def test_bf16_weights_decode_in_bf16(fixture_model, golden):
    """``--precision bf16``: weights, images and KV cache in bf16, logits close to the reference's
    fp32 ones. (On the regenerated fixture, whose sharpened attention makes near-ties, bf16 beam
    ids diverge from fp32 after the first step; on the previous fixture all 22 agreed.)"""
    model = apply_precision(copy.deepcopy(fixture_model), "bf16")
    i, g = golden["inputs"], golden["generate"]["beam5"]
    images = i["images"].to(torch.bfloat16)
    state = model.decoder.init_state(model.encode(i["input_ids"], images), 5, 11)
    assert state.cache.k[0].dtype == torch.bfloat16
    kwargs = {k: v for k, v in g["kwargs"].items() if k != "use_cache"}
    out = model.generate(i["input_ids"], images, **kwargs)
    ref = g["sequences"]
    assert out.shape == ref.shape and (out[:, 0] == 0).all() and (out[:, -1] == 2).all()
    with torch.no_grad():
        logits = model(i["input_ids"], images, i["decoder_input_ids_nopad"]).logits
    logits = logits.float().log_softmax(-1)  # as test_api's precision check
    gold = golden["decoder"]["logits_nopad"].log_softmax(-1)
    assert (logits - gold).abs().mean() < 0.05 * gold.abs().mean() and not torch.equal(logits, gold)
