"""Each seed model's whole path against mmpretrain 1.2.0's own inferencers: image file and text in,
result dict out (goldens/pipelines.json, made by scripts/goldens/make_goldens.py).

The reference ran ``ImageCaptionInferencer`` / ``VisualGroundingInferencer`` /
``VisualQuestionAnsweringInferencer`` on each model's config file (its test pipeline, data
preprocessor and generation_cfg), the network shrunk to the fixture size with the fixture weights.
Here ofa-vl's zoo card of the same name runs on the same weights: strings must be equal, boxes
equal to float round-off.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
import torch
from conftest import GOLDENS, IMAGES, MMP_CKPT

from ofa_vl.api import OFAPipeline, get_model

GOLD = json.loads((GOLDENS / "pipelines.json").read_text())
CASES = GOLD["cases"]
FIELDS = ("question", "text", "objects")


def case_id(case: dict) -> str:
    model = case["model"].removeprefix("ofa-base_3rdparty-")
    text = case["inputs"].get("question") or case["inputs"].get("text") or ""
    return f"{model}-{case['inputs']['image']}-{text.strip()[:12]}"


@cache
def pipeline(name: str) -> OFAPipeline:
    options: dict[str, Any] = {}
    if name.endswith("finetuned_vqa"):  # the answer list the reference got as ans2label
        options["answers"] = GOLD["meta"]["answers"]
    return get_model(name, pretrained=MMP_CKPT, device="cpu", **options)


def fields_of(case: dict) -> dict[str, Any]:
    return {k: v for k, v in case["inputs"].items() if k in FIELDS}


@cache
def _result(index: int) -> dict[str, Any]:
    case = CASES[index]
    pipe = pipeline(case["model"])
    out = pipe(IMAGES / case["inputs"]["image"], **fields_of(case), **case["generation_overrides"])
    assert isinstance(out, dict)
    return out


def result(case: dict) -> dict[str, Any]:
    return _result(CASES.index(case))


def test_goldens_cover_every_seed_model_on_several_inputs() -> None:
    by_model: dict[str, set[str]] = {}
    for case in CASES:
        by_model.setdefault(case["model"], set()).add(case["inputs"]["image"])
    assert len(by_model) == 4 and all(len(images) >= 3 for images in by_model.values())


@pytest.mark.parametrize("case", [c for c in CASES if fields_of(c)], ids=case_id)
def test_prompt_ids_equal_reference(case: dict) -> None:
    """The encoder prompt: the text normalisation of the config's test pipeline, then the
    model's prompt template, then the tokenizer."""
    pipe = pipeline(case["model"])
    ids = pipe.tokenizer.encode(pipe.task.prompt(pipe.task.normalize(fields_of(case))))
    assert ids == case["prompt_ids"], f"ofa-vl {ids} != mmpretrain {case['prompt_ids']}"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_prediction_equals_reference(case: dict) -> None:
    got, want = result(case), case["result"]
    for key, value in want.items():
        if key == "pred_bboxes":  # (1, 4) in original-image pixels
            assert len(got[key]) == 1, f"no box; mmpretrain's tokens {case['tokens']}"
            torch.testing.assert_close(
                torch.tensor(got[key], dtype=torch.float64),
                torch.tensor(value, dtype=torch.float64),
                rtol=1e-6,
                atol=1e-4,
            )
        elif key.startswith("pred_"):
            assert got[key] == value, f"{key}: mmpretrain's tokens {case['tokens']}"


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if "question" in c["result"]], ids=case_id)
def test_echoed_question_equals_reference(case: dict) -> None:
    """mmpretrain's VQA result carries the question as its pipeline left it (cleaned, with the
    object tags appended)."""
    assert result(case)["question"] == case["result"]["question"]
