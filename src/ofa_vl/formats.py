"""Results in the formats labelling and evaluation tools read: COCO results JSON and
`supervision <https://github.com/roboflow/supervision>`_ ``Detections``.

COCO results (``COCO.loadRes``, the COCO evaluation server's upload format): a caption is
``{"image_id", "caption"}``; a box ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}``
in original-image pixels, scored by the result's ``confidence`` (so AP ranks by it). Both read a
result's dict (:meth:`~ofa_vl.tasks.results.Result.as_dict`), so ``ofa test`` converts its
``predictions.jsonl`` with the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import OFAValueError
from .tasks.results import BoxesResult, GroundingResult, Result

if TYPE_CHECKING:
    import supervision as sv

__all__ = ["coco_entries", "to_coco", "to_detections"]


def coco_entries(
    record: Mapping[str, Any],
    image_id: int | str,
    category_id: int | None = None,
    categories: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One result dict -> its COCO results entries (one caption, or one per box).

    A box's category is ``categories[label]`` for detection's labelled boxes (labels not in it are
    left out), else ``category_id`` (default 1: one class, as for a referring expression).
    """
    if "pred_caption" in record:
        return [{"image_id": image_id, "caption": record["pred_caption"]}]
    if "pred_bboxes" not in record:
        raise OFAValueError(
            f"COCO results hold captions and boxes; this result has {', '.join(record)}"
        )
    labels = record.get("pred_labels")
    out = []
    for k, (x0, y0, x1, y1) in enumerate(record["pred_bboxes"]):
        cat = category_id or 1
        if labels is not None and categories is not None:
            if labels[k] not in categories:
                continue
            cat = categories[labels[k]]
        score = record.get("confidence")
        out.append(
            {
                "image_id": image_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": 1.0 if score is None else score,
                "category_id": cat,
            }
        )
    return out


def to_coco(
    results: Sequence[Result],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | None = None,
    categories: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """COCO results JSON (a list, for ``json.dump``) of ``results[i]`` answering image
    ``image_ids[i]``; ``category_ids[i]`` is the class of a grounding query's box (e.g. the
    referred object's), ``categories`` maps detection labels to ids."""
    if len(image_ids) != len(results) or (category_ids and len(category_ids) != len(results)):
        raise OFAValueError(
            f"to_coco needs one image id (and category) per result ({len(results)})"
        )
    return [
        entry
        for i, r in enumerate(results)
        for entry in coco_entries(
            r.as_dict(), image_ids[i], category_ids[i] if category_ids else None, categories
        )
    ]


def to_detections(result: Result, categories: Mapping[str, int] | None = None) -> sv.Detections:
    """A grounding or detection result as ``supervision.Detections`` (``pip install
    'ofa-vl[supervision]'``): ``xyxy`` the boxes, ``confidence`` the result's, ``data["class_name"]``
    the labels (the referring expression for grounding) and, with ``categories``, ``class_id``."""
    import numpy as np
    import supervision as sv

    if isinstance(result, GroundingResult):
        names = [result.text] * len(result.boxes)
    elif isinstance(result, BoxesResult):
        names = list(result.labels)
    else:
        raise OFAValueError(f"supervision Detections hold boxes, not a {type(result).__name__}")
    n = len(result.boxes)
    xyxy = np.asarray(result.boxes, dtype=np.float64).reshape(n, 4)
    conf = np.full(n, 1.0 if result.confidence is None else result.confidence, dtype=np.float32)
    class_id = None
    if categories is not None:
        class_id = np.asarray([categories.get(name, -1) for name in names], dtype=int)
    return sv.Detections(
        xyxy=xyxy, confidence=conf, class_id=class_id, data={"class_name": np.asarray(names)}
    )
