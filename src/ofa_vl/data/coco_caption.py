"""COCO captions, Karpathy split, in the layout of mmpretrain's ``COCOCaption`` configs:

<data_root>/annotations/coco_karpathy_{split}.json     [{"image": "val2014/COCO_val2014_000000391895.jpg",
                                                          "caption": [..] | "..."}, ...]
<data_root>/annotations/coco_karpathy_{split}_gt.json  COCO caption ground truth (val, test)
<data_root>/val2014/COCO_val2014_000000391895.jpg      images, named relative to data_root
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ofa_vl.data.common import (
    DatasetError,
    ImageCheck,
    ImageDataset,
    load_json,
    require_keys,
)
from ofa_vl.tasks.samples import Sample

_GT_LAYOUT = 'COCO caption ground truth {"annotations": [{"image_id", "caption"}], "images": [...]}'


@dataclass(frozen=True, slots=True)
class CaptionSample:
    """One image of the Karpathy split with its reference captions."""

    image_id: int
    image_path: Path
    captions: list[str]

    def sample(self) -> Sample:
        """As every task sees it: the image id, the captions as truth."""
        return Sample(self.image_id, self.image_path, {}, tuple(self.captions))


def load_caption_references(path: str | Path) -> dict[int, list[str]]:
    """Read COCO-format caption ground truth (e.g. ``coco_karpathy_test_gt.json``).

    Returns:
        image id -> reference captions, in file order (the ``references`` of
        :func:`ofa_vl.metrics.caption_metrics`).
    """
    path = Path(path)
    data = load_json(path, dict, _GT_LAYOUT)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise DatasetError(f'{path}: no "annotations" list, expected {_GT_LAYOUT}')
    references: dict[int, list[str]] = {}
    for i, ann in enumerate(annotations):
        ann = require_keys(ann, ("image_id", "caption"), path, f"annotations[{i}]")
        image_id = _as_int(ann["image_id"], path, f"annotations[{i}].image_id")
        references.setdefault(image_id, []).append(str(ann["caption"]))
    return references


def _as_int(value: object, path: Path, where: str) -> int:
    # mmpretrain's caption metric: image ids are int()-converted (they may be numeric strings)
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where} = {value!r} is not an integer image id") from None


class COCOCaption(ImageDataset[CaptionSample]):
    """Karpathy-split COCO captions: one sample per entry of ``coco_karpathy_{split}.json``.

    Args:
        data_root: folder holding ``annotations/`` and the image folders (mmpretrain: data/coco).
        split: ``"train"``, ``"val"`` or ``"test"``.
        check_images: ``"eager"`` (all images checked now) or ``"lazy"`` (on access).
    """

    def __init__(
        self, data_root: str | Path, split: str = "test", check_images: ImageCheck = "eager"
    ) -> None:
        root = Path(data_root)
        ann_file = root / "annotations" / f"coco_karpathy_{split}.json"
        self.gt_file = root / "annotations" / f"coco_karpathy_{split}_gt.json"
        entries = load_json(ann_file, list, 'a list of {"image": <path>, "caption": [..] | str}')
        samples = []
        for i, entry in enumerate(entries):
            entry = require_keys(entry, ("image", "caption"), ann_file, f"entry {i}")
            image = str(entry["image"])
            # mmpretrain COCOCaption: the image id is the number ending the file name
            image_id = _as_int(Path(image).stem.rsplit("_", 1)[-1], ann_file, f"entry {i}.image")
            captions = entry["caption"]
            if isinstance(captions, str):
                captions = [captions]
            if not (
                isinstance(captions, list)
                and captions
                and all(isinstance(c, str) for c in captions)
            ):
                raise DatasetError(
                    f"{ann_file}: entry {i}.caption is {captions!r}, expected a string or a "
                    "non-empty list of strings"
                )
            samples.append(CaptionSample(image_id, root / image, captions))
        super().__init__(samples, ann_file, check_images)

    def references(self) -> dict[int, list[str]]:
        """The reference captions of ``coco_karpathy_{split}_gt.json`` (val and test only)."""
        return load_caption_references(self.gt_file)
