"""Candidate scoring (classification, matching, entailment, all-candidate VQA, GLUE) against a
brute-force reference: one full model forward per candidate, trie mask from the plain-Python trie."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerance import assert_close_to

from ofa_vl.api import OFAPipeline
from ofa_vl.generation.scoring import CandidateSet, score_candidates
from ofa_vl.images import preprocess_batch
from ofa_vl.tasks import get_task
from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer

# shared prefixes (" red ..."), multi-token names and a one-token name: every trie branch is used
LABELS = ["red circle", "red square", "red", "blue triangle", "dark blue square", "cat", "zebra"]
ANSWERS = ["yes", "no", "2", "red", "dark blue", "blue", "circle on the left"]


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_pretrained(ENGLISH_BPE)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, list]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48 + 16 * i, 64, 3), dtype=np.uint8) for i in range(2)]
    return preprocess_batch(images, 64, "bicubic")


@torch.no_grad()
def brute_force(model, tok, task, images, fields, images_mask=None) -> torch.Tensor:
    """(B, C) scores, each candidate on its own: full forward, mask, log_softmax, sum."""
    names = task.candidates()
    trie = task.candidate_set(tok).trie
    bos, eos = tok.bos_token_id, tok.eos_token_id
    out = torch.zeros(len(fields), len(names))
    for b, f in enumerate(task.fields_of(f) for f in fields):
        ids = torch.tensor([tok.encode(task.prompt(f))])
        prompt = task.decoder_tokens(f, tok)
        mask = None if images_mask is None else images_mask[b : b + 1]
        for c, name in enumerate(names):
            answer = tok.encode(" " + name, add_special_tokens=False)
            dec = torch.tensor([[bos, *prompt, *answer]])
            logits = model(ids, images[b : b + 1], dec, images_mask=mask).logits[0]
            for j, target in enumerate([*answer, eos]):
                allowed = trie.get_next_layer([bos, *answer[:j]])
                row = torch.full_like(logits[0], float("-inf"))
                row[allowed] = logits[len(prompt) + j, allowed]
                out[b, c] += row.log_softmax(-1)[target]
    return out


def scores_of(model, tok, task, images, fields, images_mask=None) -> torch.Tensor:
    """The batched path: right-padded prompts encoded once, all candidates chunked."""
    fields = [task.fields_of(f) for f in fields]
    enc = model.encode(tok([task.prompt(f) for f in fields])["input_ids"], images, images_mask)
    prompts = [task.decoder_tokens(f, tok) for f in fields]
    return score_candidates(model, enc, prompts, task.candidate_set(tok), task.chunk_size)


CASES = [  # task, options, per-image fields: prompt types none / prev_output / src all covered
    ("classify", {"labels": LABELS}, [{}, {}]),
    (
        "vqa_allcand",
        {"answers": ANSWERS},
        [{"question": "what color is it?"}, {"question": "how many?"}],
    ),
    (
        "snli_ve",
        {},
        [{"hypothesis": "a red shape", "premise": "two shapes"}, {"hypothesis": "a cat"}],
    ),
    ("itm", {}, [{"text": "a red circle"}, {"text": "two blue squares on the left"}]),
    (
        "mnli",
        {},
        [{"text": "a man sleeps", "text2": "a person rests"}, {"text": "no", "text2": "yes"}],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options", "fields"), CASES, ids=[c[0] for c in CASES])
def test_batched_chunked_scores_match_brute_force(fixture_model, tok, batch, name, options, fields):
    images, _ = batch
    task = get_task(name, **options)
    mask = torch.zeros(2, dtype=torch.bool) if name == "mnli" else None  # GLUE: text only
    want = brute_force(fixture_model, tok, task, images, fields, mask)
    for chunk in (1, 3, len(task.candidates()) + 5):
        task.chunk_size = chunk
        got = scores_of(fixture_model, tok, task, images, fields, mask)
        assert_close_to(got, want)


def test_task_predict_reports_the_best_scores(fixture_model, tok, batch):
    images, infos = batch
    task = get_task("classify", labels=LABELS, topk=3)
    want = scores_of(fixture_model, tok, task, images, [{}, {}])
    out = OFAPipeline(fixture_model, tok, task).predict_batch(images, infos, [{}, {}])
    for row, result in zip(want, out):
        res = result.to_dict()
        assert result.score == pytest.approx(float(row.max()), abs=1e-4)  # the best candidate's
        assert list(result.candidates) == LABELS and result.candidates[LABELS[0]] == pytest.approx(
            float(row[0]), abs=1e-4
        )
        best = row.topk(3)
        assert [t["label"] for t in res["topk"]] == [LABELS[i] for i in best.indices]
        assert res["pred_label"] == LABELS[int(best.indices[0])]
        assert res["pred_score"] == pytest.approx(float(best.values[0]), abs=1e-4)


def test_candidate_set_states_follow_the_trie(tok):
    cands = CandidateSet.build(ANSWERS, tok)
    for c, name in enumerate(ANSWERS):
        tokens = tok.encode(" " + name, add_special_tokens=False)
        assert cands.targets[c, : len(tokens) + 1].tolist() == [*tokens, tok.eos_token_id]
        assert int(cands.lengths[c]) == len(tokens) + 1
        for j in range(len(tokens) + 1):
            mask = cands.trie.allowed_mask(cands.states[c, j : j + 1], len(tok))[0]
            want = cands.trie.get_next_layer([tok.bos_token_id, *tokens[:j]])
            assert sorted(mask.nonzero().flatten().tolist()) == sorted(want)


def test_candidate_set_rejects_empty(tok):
    with pytest.raises(ValueError, match="empty"):
        CandidateSet.build([], tok)
    with pytest.raises(ValueError, match="empty candidate"):
        CandidateSet.build(["cat", "  "], tok)


def test_chunk_size_must_be_positive(fixture_model, tok):
    enc = fixture_model.encode(torch.tensor([tok.encode(" hi")]))
    with pytest.raises(ValueError, match="chunk_size"):
        score_candidates(fixture_model, enc, [[]], CandidateSet.build(["a"], tok), chunk_size=0)
