"""RefCOCO / RefCOCO+ / RefCOCOg in the layout of mmpretrain's ``RefCOCO`` configs:

    <data_root>/<refcoco|refcoco+|refcocog>/instances.json   COCO instances (images, annotations)
    <data_root>/<refcoco|refcoco+|refcocog>/refs(unc).p      REFER refs pickle (refs(umd).p: RefCOCOg)
    <data_root>/train2014/<file_name>                         images

One sample per (ref, sentence) of the split; the annotation's XYWH box becomes XYXY.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_vl.data.common import (
    DatasetError,
    ImageCheck,
    ImageDataset,
    load_json,
    load_pickle,
    require_keys,
)
from ofa_vl.errors import OFAValueError
from ofa_vl.tasks.samples import Sample

# REFER toolkit: the default split of each dataset (refcocog also has "google")
DEFAULT_SPLIT_BY: dict[str, str] = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
_REF_KEYS = ("ref_id", "split", "ann_id", "image_id", "sentences")


@dataclass(frozen=True, slots=True)
class RefSample:
    """One referring expression and the box it refers to (XYXY, original image pixels)."""

    sample_id: int  # the sentence's sent_id
    image_path: Path
    text: str
    gt_box: tuple[float, float, float, float]
    image_id: int
    ref_id: int
    category_id: int | None = None  # the referred object's COCO category (refs' category_id)

    def sample(self) -> Sample:
        """As every task sees it: the expression as the query, its box as truth."""
        return Sample(self.sample_id, self.image_path, {"text": self.text}, self.gt_box,
                      image_id=self.image_id, category_id=self.category_id)  # fmt: skip


def _index(path: Path, data: dict[str, Any], key: str, fields: tuple[str, ...]) -> dict[Any, Any]:
    records = data.get(key)
    if not isinstance(records, list):
        raise DatasetError(f'{path}: no "{key}" list, expected COCO instances JSON')
    index = {}
    for i, r in enumerate(records):
        index[require_keys(r, fields, path, f"{key}[{i}]")["id"]] = r
    return index


def _xyxy(bbox: Any, path: Path, ann_id: Any) -> tuple[float, float, float, float]:
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise DatasetError(f"{path}: annotation {ann_id} bbox is {bbox!r}, expected [x, y, w, h]")
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)  # mmpretrain RefCOCO: XYWH -> XYXY


class RefCOCO(ImageDataset[RefSample]):
    """Referring expressions of one split of RefCOCO, RefCOCO+ or RefCOCOg.

    Args:
        data_root: folder holding ``<dataset>/`` and ``train2014/`` (mmpretrain: data/coco).
        dataset: ``"refcoco"``, ``"refcoco+"`` or ``"refcocog"``.
        split: a ``split`` of the refs file: train/val/testA/testB (unc), train/val/test (umd).
        split_by: refs file variant, ``refs({split_by}).p``; default unc (umd for refcocog).
        check_images: ``"eager"`` (all images checked now) or ``"lazy"`` (on access).
    """

    def __init__(
        self,
        data_root: str | Path,
        dataset: str = "refcoco",
        split: str = "val",
        split_by: str | None = None,
        check_images: ImageCheck = "eager",
    ) -> None:
        if dataset not in DEFAULT_SPLIT_BY:
            raise OFAValueError(f"dataset must be one of {list(DEFAULT_SPLIT_BY)}, got {dataset!r}")
        root = Path(data_root)
        inst_file = root / dataset / "instances.json"
        refs_file = root / dataset / f"refs({split_by or DEFAULT_SPLIT_BY[dataset]}).p"
        instances = load_json(inst_file, dict, "COCO instances {images: [...], annotations: [...]}")
        images = _index(inst_file, instances, "images", ("id", "file_name"))
        anns = _index(inst_file, instances, "annotations", ("id", "image_id", "bbox"))
        refs = load_pickle(refs_file, "a pickled list of REFER refs dicts")
        if not isinstance(refs, list):
            raise DatasetError(
                f"{refs_file}: holds a {type(refs).__name__}, expected a list of refs dicts"
            )

        samples: list[RefSample] = []
        for i, ref in enumerate(refs):
            ref = require_keys(ref, _REF_KEYS, refs_file, f"ref {i}")
            if ref["split"] != split:
                continue
            ann = anns.get(ref["ann_id"])
            if ann is None:
                raise DatasetError(
                    f"{inst_file}: no annotation id {ref['ann_id']} (used by ref {ref['ref_id']} "
                    f"of {refs_file})"
                )
            image = images.get(ann["image_id"])
            if image is None:
                raise DatasetError(
                    f"{inst_file}: no image id {ann['image_id']} (used by annotation {ann['id']})"
                )
            # mmpretrain RefCOCO: data_prefix="train2014" holds every RefCOCO image
            image_path = root / "train2014" / image["file_name"]
            box = _xyxy(ann["bbox"], inst_file, ann["id"])
            for j, sent in enumerate(ref["sentences"]):
                sent = require_keys(sent, ("sent", "sent_id"), refs_file, f"ref {i} sentence {j}")
                samples.append(
                    RefSample(
                        int(sent["sent_id"]),
                        image_path,
                        sent["sent"],
                        box,
                        int(ann["image_id"]),
                        int(ref["ref_id"]),
                        ref.get("category_id"),
                    )
                )
        if not samples:
            present = sorted({str(r["split"]) for r in refs})
            raise DatasetError(f"{refs_file}: no refs in split {split!r} (splits: {present})")
        super().__init__(samples, refs_file, check_images)
