"""The bundled ``ofa-tiny_shapes`` model on a fresh held-out shapes set, through the user pipeline.

:func:`evaluate` is also what measured the numbers in the model's ``MODEL_CARD.md`` (200 scenes,
seed 1234); here it runs on 60 scenes of another seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from ofa_vl.api import get_model
from ofa_vl.data import COCOCaption, RefCOCO, VQAv2, load_caption_references
from ofa_vl.data.shapes import shapes_vocabulary, write_shapes_dataset
from ofa_vl.metrics import caption_metrics, grounding_metrics, vqa_accuracy
from ofa_vl.model import OFA
from ofa_vl.tokenizer import OFATokenizer
from ofa_vl.zoo import PACKAGE_ASSETS

BUNDLED = PACKAGE_ASSETS / "ofa-tiny_shapes"
HELD_OUT_SEED = 4321  # the model was trained on seed 0; its card reports seed 1234
HELD_OUT_SCENES = 60
# a little under what the bundled weights measured on this set: Acc@0.5 0.041, VQA 0.564, CIDEr
# 2.47 (the model card's 200-scene numbers: 0.069, 0.581, 2.42; the model is undertrained)
MIN_GROUNDING_ACC = 0.02
MIN_VQA_ACC = 0.50
MIN_CIDER = 2.2


def _run(model_dir: Path, task: str, images: list[Path], **fields: Any) -> list[dict[str, Any]]:
    """The user path: ``get_model(folder, task=...)`` and its batched pipeline."""
    pipe = get_model(model_dir, task=task)
    return cast(list[dict[str, Any]], pipe([str(p) for p in images], batch_size=32, **fields))


def evaluate(model_dir: Path, data_dir: Path) -> dict[str, float]:
    """Grounding Acc@0.5, VQA accuracy (official, as a fraction), caption BLEU-4 and CIDEr."""
    refs = [s for split in ("val", "testA", "testB") for s in RefCOCO(data_dir, split=split)]
    out = _run(model_dir, "refcoco", [s.image_path for s in refs], text=[s.text for s in refs])
    boxes: list[list[float]] = [(r["pred_bboxes"] or [[0.0, 0.0, 0.0, 0.0]])[0] for r in out]
    grounding = grounding_metrics(boxes, [list(s.gt_box) for s in refs])

    questions = list(VQAv2(data_dir, "val2014"))
    out = _run(
        model_dir,
        "vqa",
        [q.image_path for q in questions],
        question=[q.question for q in questions],
    )
    vqa = vqa_accuracy(
        {q.question_id: r["pred_answer"] for q, r in zip(questions, out, strict=True)},
        {q.question_id: q.answers or [] for q in questions},
    )

    images = list(COCOCaption(data_dir, "val"))
    out = _run(model_dir, "caption", [s.image_path for s in images])
    captions = caption_metrics(
        {s.image_id: r["pred_caption"] for s, r in zip(images, out, strict=True)},
        load_caption_references(data_dir / "annotations" / "coco_karpathy_val_gt.json"),
    )
    return {
        "grounding_acc": grounding["acc"],
        "vqa_acc": vqa["overall"] / 100,
        "bleu4": captions["Bleu_4"],
        "cider": captions["CIDEr"],
        "n_refs": len(refs),
        "n_questions": len(questions),
        "n_images": len(images),
    }


def test_bundled_files_and_size() -> None:
    for name in ("model.safetensors", "tokenizer.json", "ofa_tokenizer.json", "pipeline.json"):
        assert (BUNDLED / name).is_file(), name
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 25 * 2**20
    pipeline = json.loads((BUNDLED / "pipeline.json").read_text())
    assert pipeline["interpolation"] == "bilinear"
    model = OFA.from_pretrained(BUNDLED)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.cfg.vocab_size == len(OFATokenizer.from_pretrained(BUNDLED))


def test_bundled_tokenizer() -> None:
    tok = OFATokenizer.from_pretrained(BUNDLED)
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id] == [0, 1, 2]
    assert tok.num_codes == 0 and tok.num_bins == 1000 and tok.bin_offset == len(tok) - 1000
    unknown = 3  # every word the shapes world can say is in the vocabulary
    assert [w for w in shapes_vocabulary() if unknown in tok.encode(" " + w)] == []
    ids = tok.encode(" a red circle")
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids
    assert tok.decode(ids) == "a red circle"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("held_out")
    write_shapes_dataset(root, 0, HELD_OUT_SCENES, seed=HELD_OUT_SEED, size=256)
    return root


def test_bundled_model_metrics(held_out: Path) -> None:
    scores = evaluate(BUNDLED, held_out)
    assert scores["grounding_acc"] >= MIN_GROUNDING_ACC, scores
    assert scores["vqa_acc"] >= MIN_VQA_ACC, scores
    assert scores["cider"] >= MIN_CIDER, scores
