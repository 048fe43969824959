"""COCO results JSON and the supervision adapter, read by the real libraries (issue 27)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ofa_vl.api import get_model
from ofa_vl.cli import main
from ofa_vl.errors import OFAValueError
from ofa_vl.formats import to_coco, to_detections
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.tasks.results import BoxesResult, GroundingResult, VQAResult
from ofa_vl.zoo import DEFAULT_MODEL

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco_world")
    write_shapes_dataset(root, 0, 12, seed=2727, size=256)
    return root


def test_grounding_results_load_and_score_with_cocoeval(
    world: Path, tmp_path: Path, capsys
) -> None:
    """``ofa test --coco-results``: every RefCOCO box as a COCO detection of the referred object's
    category; COCOeval over the shapes instances finds them (xyxy -> xywh done right)."""
    args = ["test", DEFAULT_MODEL, "--dataset", "refcoco", "--data-root", str(world)]
    assert (
        main([*args, "--split", "val", "--workers", "0", "--out", str(tmp_path), "--coco-results"])
        == 0
    )
    capsys.readouterr()
    entries = json.loads((tmp_path / "coco_results.json").read_text())
    assert entries and all(len(e["bbox"]) == 4 and 0 <= e["score"] <= 1 for e in entries)
    gt = COCO(str(world / "refcoco/instances.json"))
    dt = gt.loadRes(str(tmp_path / "coco_results.json"))
    ev = COCOeval(gt, dt, "bbox")
    # the evaluated images' objects: those some expression refers to (RefCOCO refs only the unique)
    ev.params.imgIds = sorted({e["image_id"] for e in entries})
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    capsys.readouterr()
    # measured 0.68 and 0.92: each expression of an object is one more detection (duplicates
    # count as false positives) and objects no expression refers to are misses; boxes read as
    # [x0, y0, x1, y1] instead of [x, y, w, h] would score near 0
    ap50, recall = ev.stats[1], ev.stats[8]
    assert ap50 > 0.6 and recall > 0.85, ev.stats


def test_caption_results_load_as_coco(world: Path, tmp_path: Path) -> None:
    pipe = get_model(DEFAULT_MODEL, task="caption")
    gt = COCO(str(world / "annotations/coco_karpathy_val_gt.json"))
    ids = sorted(gt.getImgIds())[:4]
    paths = [world / f"val2014/COCO_val2014_{i:012d}.jpg" for i in ids]
    results = pipe.run([str(p) for p in paths])
    entries = to_coco(results, ids)
    assert entries == [{"image_id": i, "caption": r.caption} for i, r in zip(ids, results)]
    dt = gt.loadRes(entries)
    assert {a["image_id"]: a["caption"] for a in dt.dataset["annotations"]} == {
        i: r.caption for i, r in zip(ids, results)
    }


def test_to_coco_boxes_and_labels() -> None:
    ground = GroundingResult("the red circle", [[10.0, 20.0, 50.0, 80.0]], confidence=0.9)
    boxes = BoxesResult(
        [[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0]], ["circle", "cat"], confidence=0.5
    )
    out = to_coco([ground, boxes], [7, 8], categories={"circle": 1})
    assert out == [
        {"image_id": 7, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.9, "category_id": 1},
        {"image_id": 8, "bbox": [0.0, 0.0, 4.0, 4.0], "score": 0.5, "category_id": 1},
    ]  # "cat" has no category: left out
    with pytest.raises(OFAValueError, match="one image id"):
        to_coco([ground], [1, 2])
    with pytest.raises(OFAValueError, match="captions and boxes"):
        to_coco([VQAResult("q", "a")], [1])


def test_supervision_round_trips_boxes() -> None:
    sv = pytest.importorskip("supervision")
    boxes = [[10.5, 20.25, 50.0, 80.0], [0.0, 1.0, 3.0, 5.0]]
    result = BoxesResult(boxes, ["circle", "square"], confidence=0.75)
    det = to_detections(result, categories={"circle": 1, "square": 2})
    assert isinstance(det, sv.Detections) and len(det) == 2
    assert det.xyxy.tolist() == boxes and det.class_id.tolist() == [1, 2]
    assert det.data["class_name"].tolist() == ["circle", "square"]
    kept = det[det.class_id == 2]  # supervision's own filtering and IoU read the boxes back
    assert kept.xyxy.tolist() == [boxes[1]] and kept.confidence.tolist() == [0.75]
    assert np.allclose(sv.box_iou_batch(det.xyxy, np.asarray(boxes)).diagonal(), 1.0)
    empty = to_detections(GroundingResult("absent", []))
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)
