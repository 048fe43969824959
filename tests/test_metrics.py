"""Metrics on small hand-checked cases; caption metrics against pycocoevalcap's COCOEvalCap."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ofa_vl.data.common import DatasetError
from ofa_vl.metrics import (
    MetricError,
    answer_soft_scores,
    as_percentages,
    box_iou,
    caption_metrics,
    grounding_metrics,
    load_caption_references,
    normalize_answer,
    question_accuracy,
    vqa_acc_mmpretrain,
    vqa_accuracy,
    vqa_score,
)
from ofa_vl.metrics import caption as caption_module

# ----------------------------------------------------------------------------------------------
# VQA


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # manualMap, lower-cased
        ("none", "0"),
        ("the dog.", "dog"),  # article dropped, final period stripped
        ("A cat", "cat"),
        ("dont", "don't"),  # contractions table
        ("yes!", "yes"),  # "!" not next to a space: replaced by a space, then split away
        ("yes !", "yes"),  # " !" present: removed
        ("t-shirt", "t shirt"),  # "-" inside a word becomes a space
        ("1,000", "1000"),  # commaStrip matches: every punctuation mark is removed
        ("3.5", "3.5"),  # a period before a digit stays
        ("red, white", "red white"),  # ", " present: comma removed
        ("somebody'd", "somebodyd"),  # the official table's oddity, kept
        ("a" + "." * 35, "a..."),  # re.UNICODE passed as count: at most 32 periods removed
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # an answer given by k of 10 humans; leave one out 10 times:
        # k of the subsets drop a matching human (k-1 matches), 10-k keep all k
        (0, 0.0),
        (1, 0.3),  # (1*min(0/3,1) + 9*min(1/3,1)) / 10 = 3/10
        (2, 0.6),  # (2*(1/3) + 8*(2/3)) / 10 = (2/3 + 16/3) / 10 = 0.6
        (3, 0.9),  # (3*(2/3) + 7*1) / 10 = 9/10
        (4, 1.0),  # (4*1 + 6*1) / 10
        (10, 1.0),
    ],
)
def test_question_accuracy_leave_one_out(k: int, expected: float) -> None:
    gts = ["red"] * k + ["blue"] * (10 - k)
    assert question_accuracy("red", gts) == pytest.approx(expected)


def test_question_accuracy_normalises_only_when_humans_disagree() -> None:
    # vqaEval.py: all ten say "2" -> no normalisation, so "two" does not match
    assert question_accuracy("two", ["2"] * 10) == 0.0
    assert question_accuracy(" two\n", ["two"] * 10) == 1.0  # cleaned only
    assert question_accuracy("Two", ["two"] * 10) == 0.0  # not lower-cased: compared verbatim
    # humans disagree -> everything normalised: "Two" -> "2" matches 9 of 10 answers
    assert question_accuracy("Two", ["2"] * 5 + ["two"] * 4 + ["3"]) == 1.0
    assert question_accuracy("the dog.", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)


def test_vqa_accuracy_per_answer_type() -> None:
    gts = {
        1: ["yes"] * 10,  # "yes" -> 1.0
        2: ["2"] * 2 + ["3"] * 8,  # "2" -> 0.6
        3: ["red"] + ["blue"] * 9,  # "red" -> 0.3
        4: ["cat"] * 10,  # "dog" -> 0.0
    }
    preds = {1: "yes", 2: "2", 3: "red", 4: "dog"}
    types = {1: "yes/no", 2: "number", 3: "other", 4: "other"}
    result = vqa_accuracy(preds, gts, types)
    # overall (1 + 0.6 + 0.3 + 0) / 4 = 0.475; other (0.3 + 0) / 2 = 0.15
    assert result == {"overall": 47.5, "yes/no": 100.0, "number": 60.0, "other": 15.0}
    # subset, no types: (1 + 0.6 + 0.3) / 3 = 0.63333 -> 63.33
    assert vqa_accuracy({1: "yes", 2: "2", 3: "red"}, gts) == {"overall": 63.33}
    with pytest.raises(ValueError, match="question id"):
        vqa_accuracy({5: "yes"}, gts)


# A hand-made set on which the two published VQA accuracies differ. Expected numbers are the
# reference code's own output on it (scratch script, not imported by the tests):
# - official: GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py at a013f00 ("Fixed
#   processing answers bug", the 2021 fix; its two Python 2 print statements made print()), VQAEval
#   on a stub VQA object with these answers (answer_id 1..10) and predictions, n=2;
# - mmpretrain: mmpretrain 1.2.0 mmpretrain/evaluation/metrics/vqa.py VQAAcc (mmengine stubbed),
#   samples as its COCOVQA builds them (distinct answers, weight count / 10).
SEPARATING_SET = {  # question id: (prediction, ten human answers, answer type)
    1: (
        "two",
        ["2"] * 10,
        "number",
    ),  # unanimous: official compares verbatim, mmpretrain normalises
    2: ("Yes", ["yes"] * 10, "yes/no"),  # unanimous: case matters to the official script only
    3: ("red", ["red"] + ["blue"] * 9, "other"),  # one human: 0.3 (leave-one-out) vs 0.1 / 0.3
    4: ("2", ["2"] * 2 + ["3"] * 8, "number"),  # 0.6 vs 0.2 / 0.3
    5: ("cat", ["cat"] * 3 + ["dog"] * 7, "other"),  # 0.9 vs 1
    6: ("dog", ["dog"] * 2 + ["dog."] + ["cat"] * 7, "other"),  # both merge "dog." into "dog"
    7: ("t-shirt", ["t shirt"] * 4 + ["shirt"] * 6, "other"),  # both 1
    8: ("blue", ["red"] * 10, "other"),  # both 0
    9: ("yes", ["yes"] * 10, "yes/no"),  # both 1
}
# vqaEval.py: accuracy["overall"], accuracy["perAnswerType"]; evalQA (per question, x100)
OFFICIAL = {"overall": 52.22, "number": 30.0, "yes/no": 50.0, "other": 62.0}
OFFICIAL_PER_QUESTION = [0.0, 0.0, 30.0, 60.0, 90.0, 90.0, 100.0, 0.0, 100.0]
# VQAAcc.compute_metrics(...)["acc"], and per question (each question alone)
MMPRETRAIN = 77.77777777777779
MMPRETRAIN_PER_QUESTION = [100.0, 100.0, 100 / 3, 200 / 3, 100.0, 100.0, 100.0, 0.0, 100.0]


def test_official_and_mmpretrain_vqa_accuracy_on_a_separating_set() -> None:
    preds = {q: p for q, (p, _, _) in SEPARATING_SET.items()}
    gts = {q: h for q, (_, h, _) in SEPARATING_SET.items()}
    types = {q: t for q, (_, _, t) in SEPARATING_SET.items()}
    assert vqa_accuracy(preds, gts, types) == OFFICIAL
    assert vqa_acc_mmpretrain(preds, gts) == pytest.approx(MMPRETRAIN, abs=1e-12)
    for q, official, mmp in zip(SEPARATING_SET, OFFICIAL_PER_QUESTION, MMPRETRAIN_PER_QUESTION):
        assert round(100 * question_accuracy(preds[q], gts[q]), 2) == official, q
        assert vqa_acc_mmpretrain({q: preds[q]}, gts) == pytest.approx(mmp, abs=1e-12), q
    assert vqa_acc_mmpretrain(preds, gts, full_score_weight=1.0) == pytest.approx(
        100 * (1 + 1 + 0.1 + 0.2 + 0.3 + 0.3 + 0.4 + 0 + 1) / 9
    )  # the matching weights themselves
    with pytest.raises(ValueError, match="question id"):
        vqa_acc_mmpretrain({10: "yes"}, gts)
    with pytest.raises(ValueError, match="no predictions"):
        vqa_acc_mmpretrain({}, gts)


def test_vqa_score_soft_targets() -> None:
    assert answer_soft_scores(["2"] * 2 + ["3"] * 8) == pytest.approx({"2": 0.6, "3": 1.0})
    refs = {
        1: {"yes": 1.0},
        2: answer_soft_scores(["2"] * 2 + ["3"] + ["4"] * 7),  # {"2": 0.6, "3": 0.3, "4": 1.0}
        3: {"dog": 1.0},
    }
    # (1.0 + 0.3 + 0) / 3; OFA compares verbatim, so "Dog" scores 0
    assert vqa_score({1: "yes", 2: "3", 3: "Dog"}, refs) == pytest.approx(1.3 / 3)


def test_soft_scores_equal_official_accuracy() -> None:
    rng = random.Random(0)
    for _ in range(50):
        gts = [rng.choice(["a", "b", "c", "d"]) for _ in range(10)]
        for answer, score in answer_soft_scores(gts).items():
            assert question_accuracy(answer, gts) == pytest.approx(score)


# ----------------------------------------------------------------------------------------------
# Grounding


def test_box_iou_hand_cases() -> None:
    pred = [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]]
    gt = [[1, 1, 3, 3], [0, 0, 2, 2], [1, 0, 2, 1], [5, 5, 6, 6]]
    # 1/(4+4-1) = 1/7; identical 1; touching edge 0; disjoint 0
    expected = torch.tensor([1 / 7, 1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(box_iou(pred, gt), expected)
    torch.testing.assert_close(box_iou(np.array(pred), torch.tensor(gt)), expected)
    with pytest.raises(ValueError, match="box counts"):
        box_iou(pred, gt[:2])


def test_grounding_metrics_hand_cases() -> None:
    pred = [[0, 0, 10, 10], [0, 0, 2, 1], [0, 0, 10, 10], [0, 0, 1, 1]]
    gt = [[0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 10, 6], [3, 3, 4, 4]]
    # IoUs: 1, 1/2 (exactly 0.5: OFA's +1e-6 makes it a miss), 60/100 = 0.6, 0
    result = grounding_metrics(pred, gt)
    assert result["acc"] == pytest.approx(2 / 4)
    assert result["miou"] == pytest.approx((1 + 0.5 + 0.6 + 0) / 4)


def test_grounding_accuracy_matches_ofa_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=gen) * 50
    wh = torch.rand(500, 2, generator=gen) * 30 + 1
    gt = torch.cat([xy, xy + wh], 1)
    pred = gt + torch.randn(500, 4, generator=gen) * 6
    hits = 0
    for p, g in zip(pred.tolist(), gt.tolist()):  # OFA eval_refcoco, one pair at a time
        w = min(p[2], g[2]) - max(p[0], g[0])
        h = min(p[3], g[3]) - max(p[1], g[1])
        union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - w * h
        hits += w * h / (union + 1e-6) >= 0.5 and w > 0 and h > 0
    assert 0 < hits < 500
    assert grounding_metrics(pred, gt)["acc"] == pytest.approx(hits / 500)


# ----------------------------------------------------------------------------------------------
# Caption


def test_caption_metrics_needs_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caption_module.shutil, "which", lambda name: None)
    with pytest.raises(MetricError, match="apt-get install default-jre-headless"):
        caption_metrics({1: "a cat"}, {1: ["a cat"]})


def test_as_percentages() -> None:
    scores = {"CIDEr": 1.38237, "Bleu_4": 0.41012}
    assert as_percentages(scores) == {"CIDEr": 138.2, "Bleu_4": 41.0}


def test_load_caption_references(tmp_path) -> None:
    gt = tmp_path / "coco_karpathy_test_gt.json"
    anns = [
        {"image_id": 391895, "caption": "A man rides a bike.", "id": 1},
        {"image_id": "391895", "caption": "a cyclist", "id": 2},
        {"image_id": 522418, "caption": "A woman cuts a cake.", "id": 3},
    ]
    gt.write_text(json.dumps({"annotations": anns, "images": [{"id": 391895}, {"id": 522418}]}))
    assert load_caption_references(gt) == {
        391895: ["A man rides a bike.", "a cyclist"],
        522418: ["A woman cuts a cake."],
    }
    gt.write_text(json.dumps(anns))
    with pytest.raises(DatasetError, match=r"coco_karpathy_test_gt\.json.*expected a dict"):
        load_caption_references(gt)


def test_caption_metrics_rejects_missing_references() -> None:
    with pytest.raises(ValueError, match=r"image id\(s\) \[2\]"):
        caption_metrics({1: "a cat", 2: "a dog"}, {1: ["a cat"]})


PREDICTIONS = {
    391895: "a man riding a bike down a dirt road",
    522418: "a woman cutting a cake with a knife.",
    184613: "a boy holding an umbrella next to cows",
}
REFERENCES = {
    391895: [
        "A man with a red helmet on a small moped on a dirt road.",
        "Man riding a motor bike on a dirt road on the countryside.",
    ],
    522418: [
        "A woman wearing a net on her head cutting a cake.",
        "A woman cutting a large white sheet cake.",
    ],
    184613: [
        "A child holding a flowered umbrella and petting a yak.",
        "A young man holding an umbrella next to a herd of cattle.",
    ],
    1000: ["An image without a prediction is not evaluated."],
}


@pytest.mark.slow
@pytest.mark.java
def test_caption_metrics_match_coco_eval_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap import eval as coco_eval
    from pycocoevalcap.meteor import meteor
    from pycocotools.coco import COCO

    # METEOR's JVM takes ~10 s to load its tables: both pipelines share one (same scores)
    shared = meteor.Meteor()
    monkeypatch.setattr(meteor, "Meteor", lambda: shared)
    monkeypatch.setattr(coco_eval, "Meteor", lambda: shared)
    monkeypatch.setattr(coco_eval, "Spice", _ZeroScorer)  # SPICE downloads CoreNLP: left out

    # OFA:run_scripts/caption/coco_eval.py, on in-memory COCO objects
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in REFERENCES],
        "annotations": [
            {"image_id": i, "caption": c, "id": n}
            for n, (i, c) in enumerate(((i, c) for i, cs in REFERENCES.items() for c in cs), 1)
        ],
    }
    coco.createIndex()
    coco_res = coco.loadRes([{"image_id": i, "caption": c} for i, c in PREDICTIONS.items()])
    evaluator = coco_eval.COCOEvalCap(coco, coco_res)
    evaluator.params["image_id"] = coco_res.getImgIds()
    evaluator.evaluate()
    expected = {k: v for k, v in evaluator.eval.items() if k != "SPICE"}

    result = caption_metrics(PREDICTIONS, REFERENCES)
    assert list(result) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert result == pytest.approx(expected, rel=1e-12)
    assert 0 < result["METEOR"] < 1


class _ZeroScorer:
    """Stands in for a Java scorer whose value a test does not check."""

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        return 0.0, [0.0] * len(gts)

    def method(self) -> str:
        return "zero"


def test_caption_metrics_identical_captions(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycocoevalcap.meteor import meteor

    monkeypatch.setattr(meteor, "Meteor", _ZeroScorer)  # checked above; saves a 10 s JVM start
    captions = {
        1: "a man riding a red bike down a dirt road",
        2: "two dogs play with a ball on green grass",
    }
    result = caption_metrics(captions, {i: [c] for i, c in captions.items()})
    # every n-gram precision is 1 and the lengths are equal: BLEU-n = 1 (up to the 1e-9 smoothing)
    for n in range(1, 5):
        assert result[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-8)
    # LCS = whole sentence: precision = recall = 1
    assert result["ROUGE_L"] == pytest.approx(1.0)
    # CIDEr-D: cosine 1 for n = 1..4 (n-grams of one image have idf log 2 > 0, shared ones idf 0
    # on both sides), no length penalty: mean over n of 1, times 10
    assert result["CIDEr"] == pytest.approx(10.0)
