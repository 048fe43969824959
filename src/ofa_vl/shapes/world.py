"""A seeded synthetic world of coloured shapes, written in the layouts of the real datasets.

A scene holds 1-3 circles, squares or triangles (5 colours, 2 sizes, disjoint boxes, smallest side
16% of the image so they stay visible at 1/16 resolution) on a light background with an optional
gradient and pixel noise. Scene ``k`` of a split is drawn from ``np.random.default_rng([seed, split,
k])`` alone, so the held-out scenes do not change with the number of training scenes. The texts come
from :mod:`ofa_vl.shapes.text`.

:func:`write_shapes_dataset` writes, under ``out`` (the ``data_root`` of mmpretrain 1.2.0's configs
``_base_/datasets/{coco_caption,coco_vqa,refcoco}.py``)::

    train2014/COCO_train2014_%012d.jpg     every scene (held-out ones too: RefCOCO reads only here)
    val2014/COCO_val2014_%012d.jpg         held-out scenes; JPEG quality 95; the id ends the name
    annotations/coco_karpathy_train.json   [{"image", "caption": str, "image_id": "coco_<id>"}],
                                           one entry per caption (the LAVIS/BLIP Karpathy files)
    annotations/coco_karpathy_val.json     [{"image", "caption": [str, ...], "image_id"}]
    annotations/coco_karpathy_val_gt.json  COCO caption ground truth for pycocoevalcap
    annotations/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json   VQAv2 questions
    annotations/v2_mscoco_{train2014,val2014}_annotations.json  VQAv2 answers (10 equal answers)
    annotations/answer_list.json           every answer, a JSON list of str
    refcoco/instances.json                 COCO instances of all scenes: categories circle=1,
                                           square=2, triangle=3; bbox [x, y, w, h] floats
    refcoco/refs(unc).p                    pickle (protocol 2) of plain dicts; split "train" for
                                           training scenes, held-out scenes k % 4 -> val, testA,
                                           val, testB; "file_name" is, as in the real file, not an
                                           image name (COCO_train2014_<id>_<object index>.jpg)
    scenes.json                            {"image_size", "seed", "colours", "categories",
                                           "scenes": [{"image_id", "split", "image",
                                           "background", "objects": [{"ann_id", "category_id",
                                           "shape", "colour", "size", "box", "centre"}]}]}
    extras.jsonl                           one JSON object a line, in scene order:
        {"task": "region_caption", "split", "image", "image_id", "ann_id", "box", "text"}
        {"task": "itm", "split", "image", "image_id", "text", "answer": "yes"|"no",
         "source": "caption"|"mutated"|"other_scene"}   (one "yes" and one "no" per scene)

Boxes in ``scenes.json`` and ``extras.jsonl`` are ``[x0, y0, x1, y1]`` pixels, ``x1``/``y1``
exclusive. Same arguments give byte-identical files.
"""

from __future__ import annotations

import functools
import io
import json
import math
import pickle
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import OFAValueError
from ..options import at_least, check_counts
from .scene import Background, Scene, ShapeObject, as_rgb
from .text import (
    COLOURS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SceneText,
    absent_expressions,
    answer_vocabulary,
    describe_scene,
    itm_negative,
    scene_texts,
    shapes_vocabulary,
    words,
)

__all__ = [
    "Background",
    "GroundingQuery",
    "Scene",
    "ShapeObject",
    "generate_scene",
    "grounding_rejection_set",
    "render_scene",
    "shapes_command",
    "shapes_corpus",
    "shapes_vocabulary",
    "write_shapes_dataset",
]

COLOUR_RGB = {
    "red": (215, 40, 40),
    "green": (35, 150, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (135, 55, 175),
}
SIDE_RANGE = {"small": (0.16, 0.21), "large": (0.31, 0.40)}  # box side / image side
SPACING = 0.02  # min distance between boxes and to the image border / image side
BACKGROUND_LEVELS = (200, 245)  # range of each channel of the background colour
GRADIENT_SPAN = 30  # at most this much added to / taken from a channel across the image
NOISE_STD = (2.0, 6.0)  # range of the noise level, for the half of the scenes that have noise
MIN_IMAGE_SIZE = 64
AREA_FACTOR = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # shape area / box area
# gradient direction -> weights of (x, y) in [0, 1] of the share of ``Background.gradient`` added
GRADIENTS = {
    "none": (0.0, 0.0),
    "horizontal": (1.0, 0.0),
    "vertical": (0.0, 1.0),
    "diagonal": (0.5, 0.5),
}
SPLITS = ("train", "val")
HELD_OUT_REF_SPLITS = ("val", "testA", "val", "testB")  # RefCOCO split of held-out scene k % 4
JPEG_QUALITY = 95
VQA_ANSWERS = 10  # human answers per VQAv2 question; all equal here
_INFO = {"description": "ofa-vl synthetic shapes"}
_PLACEMENT_TRIES = 100
assert set(COLOUR_RGB) == set(COLOURS) and set(SIDE_RANGE) == set(SIZES)


def generate_scene(rng: random.Random | np.random.Generator, size: int = 256) -> Scene:
    """Draw a scene of 1-3 non-overlapping shapes on a ``size`` x ``size`` image.

    A shape that finds no free place after a hundred tries is left out (about 3% of the scenes
    with several shapes have one shape fewer than drawn).
    """
    if size < MIN_IMAGE_SIZE:
        raise OFAValueError(f"image size must be at least {MIN_IMAGE_SIZE}, got {size}")
    gen = (
        rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng.getrandbits(64))
    )
    border, gap = max(2, round(SPACING * size)), max(4, round(SPACING * size))
    objects: list[ShapeObject] = []
    for _ in range(int(gen.integers(1, MAX_OBJECTS + 1))):
        shape, colour, size_name = (str(gen.choice(values)) for values in (SHAPES, COLOURS, SIZES))
        side = round(gen.uniform(*SIDE_RANGE[size_name]) * size)
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = (int(v) for v in gen.integers(border, size - border - side + 1, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, other.box, gap) for other in objects):
                objects.append(ShapeObject(shape, colour, size_name, box))
                break
    background = Background(
        colour=as_rgb(gen.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1, size=3)),
        gradient=as_rgb(gen.integers(-GRADIENT_SPAN, GRADIENT_SPAN + 1, size=3)),
        direction=str(gen.choice(list(GRADIENTS))),
        noise=round(float(gen.uniform(*NOISE_STD)), 2) if gen.random() < 0.5 else 0.0,
        seed=int(gen.integers(2**31)),
    )
    return Scene(size, tuple(objects), background)


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image; the same scene always gives the same pixels."""
    bg, n = scene.background, scene.image_size
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    wx, wy = GRADIENTS[bg.direction]
    t = wx * ramp[None, :] + wy * ramp[:, None]  # (n, n)
    pixels = t[..., None] * np.asarray(bg.gradient, np.float32) + np.float32(0.5)  # 0.5: rounding
    pixels += np.asarray(bg.colour, np.float32)
    if bg.noise:  # luminance noise, the same on the three channels
        noise = np.random.default_rng(bg.seed).standard_normal((n, n, 1), np.float32)
        pixels += noise * np.float32(bg.noise)
    image = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        _DRAW[obj.shape](draw, (x0, y0, x1 - 1, y1 - 1), COLOUR_RGB[obj.colour])
    return image


def shapes_corpus(
    n_scenes: int = 2000,
    seed: int = 0,
    size: int = 256,
    split: str = "train",
    captions_per_image: int = 5,
) -> Iterator[str]:
    """The texts of the first ``n_scenes`` scenes of ``split`` (what the dataset of that seed says).

    Captions, referring expressions, questions, answers and region captions; no task prompts.
    """
    for k in range(n_scenes):
        _, text, _ = _scene(seed, split, k, size, captions_per_image)
        yield from scene_texts(text)


def write_shapes_dataset(
    out_dir: str | Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    size: int = 256,
    captions_per_image: int = 5,
    workers: int = 1,
) -> dict[str, int]:
    """Generate ``n_train`` + ``n_val`` scenes and write them in the real datasets' layouts.

    ``workers`` > 1 renders the images in that many processes (same files).

    Returns the number of images, captions, refs, referring sentences, questions, region captions
    and image-text pairs written. The layout is described in the module docstring.
    """
    check_counts(captions_per_image=captions_per_image, workers=workers, scenes=n_train + n_val)
    at_least("train", n_train, 0)
    at_least("val", n_val, 0)
    out = Path(out_dir)
    for sub in ("annotations", "refcoco", "train2014", "val2014"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(split, k) for split, count in zip(SPLITS, (n_train, n_val), strict=True)
            for k in range(count)]  # fmt: skip
    make = functools.partial(_make_item, out, seed, size, captions_per_image)
    image_ids = range(1, len(jobs) + 1)
    if workers > 1:  # every scene has its own seeded stream: the files do not depend on workers
        with ProcessPoolExecutor(workers) as pool:
            items = list(pool.map(make, jobs, image_ids, chunksize=32))
    else:
        items = list(map(make, jobs, image_ids))

    _dump(out / "annotations/coco_karpathy_train.json", _karpathy(items, "train"))
    _dump(out / "annotations/coco_karpathy_val.json", _karpathy(items, "val"))
    _dump(out / "annotations/coco_karpathy_val_gt.json", _caption_gt(items))
    for split in SPLITS:
        questions, answers = _vqa(items, split)
        _dump(out / f"annotations/v2_OpenEnded_mscoco_{split}2014_questions.json", questions)
        _dump(out / f"annotations/v2_mscoco_{split}2014_annotations.json", answers)
    _dump(out / "annotations/answer_list.json", answer_vocabulary())
    _dump(out / "refcoco/instances.json", _instances(items))
    refs = _refs(items)
    (out / "refcoco/refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    _dump(out / "scenes.json", _scenes(items, seed, size))
    extras = _extras(items)
    (out / "extras.jsonl").write_text("".join(json.dumps(e) + "\n" for e in extras))
    return {
        "train_images": n_train,
        "val_images": n_val,
        "captions": sum(len(it.text.captions) for it in items),
        "refs": len(refs),
        "ref_sentences": sum(len(r["sentences"]) for r in refs),
        "questions": sum(len(it.text.questions) for it in items),
        "region_captions": sum(e["task"] == "region_caption" for e in extras),
        "itm_pairs": sum(e["task"] == "itm" for e in extras),
    }


def shapes_command(
    out: str | Path,
    train: int = 2000,
    val: int = 200,
    seed: int = 0,
    size: int = 256,
    workers: int = 1,
) -> dict[str, int]:
    """``ofa data shapes --out DIR --train N --val M --seed S``: write the dataset, print counts."""
    counts = write_shapes_dataset(out, train, val, seed=seed, size=size, workers=workers)
    print(f"wrote the shapes dataset to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


FOLDER_SPLITS = ("train", "validation", "test")


def write_shapes_folder(
    out_dir: str | Path,
    task: str = "caption",
    counts: Sequence[int] = (200, 20, 20),
    seed: int = 0,
    size: int = 256,
) -> dict[str, int]:
    """Shapes scenes as a folder dataset (:mod:`ofa_vl.data.folder`): ``train/``, ``validation/``,
    ``test/``, each with its JPEG images and a ``metadata.jsonl`` of ``task``'s columns
    (``caption``, ``refcoco`` or ``vqa``: the task's ``shapes_lines``). Returns the lines
    written per split."""
    from ..tasks import get_task  # the task knows its columns (ARCHITECTURE.md: a lazy crossing)

    lines_of = get_task(task).shapes_lines
    for split, n in zip(FOLDER_SPLITS, counts, strict=True):
        at_least(split, n, 0)
    written = {}
    for i, (split, n) in enumerate(zip(FOLDER_SPLITS, counts, strict=True)):
        if n == 0:
            continue
        folder = Path(out_dir) / split
        lines: list[dict[str, Any]] = []
        for k in range(n):
            rng = np.random.default_rng([seed, 10 + i, k])  # streams apart from the COCO layout's
            scene = generate_scene(rng, size)
            lines += lines_of(scene, describe_scene(scene, rng), f"{k:05d}.jpg")
            folder.mkdir(parents=True, exist_ok=True)
            render_scene(scene).save(folder / f"{k:05d}.jpg", quality=JPEG_QUALITY)
        (folder / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        written[split] = len(lines)
    return written


@dataclass(frozen=True)
class GroundingQuery:
    """A referring expression and the box of its object, or None when it names an absent one."""

    image: Image.Image
    text: str
    box: tuple[int, int, int, int] | None


REJECTION_STREAM = 20  # rng stream of the rejection sets, apart from the COCO layout's and folders'


def grounding_rejection_set(n_scenes: int, seed: int, size: int = 256) -> list[GroundingQuery]:
    """Two queries per scene: a referring expression of one of its objects and one naming an
    object the scene lacks (:func:`~ofa_vl.shapes.text.absent_expressions`), for choosing
    and measuring a grounding model's "not in the image" threshold. Scene ``k`` is drawn from
    ``default_rng([seed, 20, k])`` alone."""
    at_least("scenes", n_scenes)
    queries = []
    for k in range(n_scenes):
        rng = np.random.default_rng([seed, REJECTION_STREAM, k])
        scene = generate_scene(rng, size)
        image = render_scene(scene)
        text = describe_scene(scene, rng)
        present = [
            (e, obj) for obj, es in zip(scene.objects, text.expressions, strict=True) for e in es
        ]
        expression, obj = present[int(rng.integers(len(present)))]
        queries.append(GroundingQuery(image, expression, obj.box))
        absent = absent_expressions(scene)
        queries.append(GroundingQuery(image, absent[int(rng.integers(len(absent)))], None))
    return queries


@dataclass(frozen=True)
class _Item:
    split: str
    index: int  # within the split
    image_id: int
    scene: Scene
    text: SceneText
    rng: np.random.Generator  # the scene's own stream, continued for its image-text pairs

    def image(self, folder: str) -> str:
        return _image_path(folder, self.image_id)


_Painter = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], tuple[int, ...]], None]
_DRAW: dict[str, _Painter] = {  # shape -> draw it filling the inclusive box (x0, y0, x1, y1)
    "circle": lambda d, xy, fill: d.ellipse(xy, fill=fill),
    "square": lambda d, xy, fill: d.rectangle(xy, fill=fill),
    "triangle": lambda d, xy, fill: d.polygon(
        [((xy[0] + xy[2]) / 2, xy[1]), (xy[0], xy[3]), (xy[2], xy[3])], fill=fill
    ),
}


def _make_item(
    out: Path, seed: int, size: int, captions_per_image: int, job: tuple[str, int], image_id: int
) -> _Item:
    split, k = job
    scene, text, rng = _scene(seed, split, k, size, captions_per_image)
    _write_image(out, split, image_id, scene)
    return _Item(split, k, image_id, scene, text, rng)


def _scene(
    seed: int, split: str, k: int, size: int, captions_per_image: int
) -> tuple[Scene, SceneText, np.random.Generator]:
    rng = np.random.default_rng([seed, SPLITS.index(split), k])
    scene = generate_scene(rng, size)
    return scene, describe_scene(scene, rng, captions_per_image), rng


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    """Whether two boxes are at least ``gap`` pixels apart along x or y."""
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap


def _image_path(folder: str, image_id: int) -> str:
    return f"{folder}2014/COCO_{folder}2014_{image_id:012d}.jpg"


def _write_image(out: Path, split: str, image_id: int, scene: Scene) -> None:
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    for folder in dict.fromkeys(("train", split)):
        (out / _image_path(folder, image_id)).write_bytes(buffer.getvalue())


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")))


def _karpathy(items: list[_Item], split: str) -> list[dict[str, Any]]:
    """LAVIS Karpathy files: training has one entry per caption, evaluation one per image."""
    entries = []
    for it in (it for it in items if it.split == split):
        entry: dict[str, Any] = {"image": it.image(split), "image_id": f"coco_{it.image_id}"}
        if split == "train":
            entries += [{"caption": c, **entry} for c in it.text.captions]
        else:
            entries.append({**entry, "caption": it.text.captions})
    return entries


def _caption_gt(items: list[_Item]) -> dict[str, Any]:
    held_out = [it for it in items if it.split == "val"]
    pairs = [(it.image_id, c) for it in held_out for c in it.text.captions]
    return {
        "info": _INFO,
        "licenses": [],
        "type": "captions",
        "images": [{"id": it.image_id} for it in held_out],
        "annotations": [
            {"image_id": image_id, "id": i, "caption": c}
            for i, (image_id, c) in enumerate(pairs, 1)
        ],
    }


def _vqa(items: list[_Item], split: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """VQAv2 question and annotation files of one split; question id = image id * 1000 + k."""
    header = {
        "info": _INFO,
        "license": {},
        "data_type": "mscoco",
        "data_subtype": f"{split}2014",
    }
    questions, annotations = [], []
    for it in (it for it in items if it.split == split):
        for k, q in enumerate(it.text.questions):
            ids = {"image_id": it.image_id, "question_id": it.image_id * 1000 + k}
            questions.append({**ids, "question": q.question})
            answers = [
                {"answer": q.answer, "answer_confidence": "yes", "answer_id": i}
                for i in range(1, VQA_ANSWERS + 1)
            ]
            annotations.append(
                {
                    **ids,
                    "question_type": q.question_type,
                    "answer_type": q.answer_type,
                    "multiple_choice_answer": q.answer,
                    "answers": answers,
                }
            )
    return (
        {**header, "task_type": "Open-Ended", "questions": questions},
        {**header, "annotations": annotations},
    )


def _ann_id(image_id: int, index: int) -> int:
    return image_id * 10 + index  # MAX_OBJECTS < 10


def _instances(items: list[_Item]) -> dict[str, Any]:
    annotations = []
    for it in items:
        for j, obj in enumerate(it.scene.objects):
            x0, y0, x1, y1 = obj.box
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": _ann_id(it.image_id, j),
                    "image_id": it.image_id,
                    "bbox": [float(x0), float(y0), float(w), float(h)],
                    "category_id": SHAPES.index(obj.shape) + 1,
                    "area": round(AREA_FACTOR[obj.shape] * w * h, 2),
                    "iscrowd": 0,
                }
            )
    return {
        "info": _INFO,
        "licenses": [],
        "images": [
            {
                "id": it.image_id,
                "file_name": Path(it.image("train")).name,
                "width": it.scene.image_size,
                "height": it.scene.image_size,
            }
            for it in items
        ],
        "annotations": annotations,
        "categories": _categories(),
    }


def _refs(items: list[_Item]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    sent_id = 0
    for it in items:
        split = (
            "train"
            if it.split == "train"
            else HELD_OUT_REF_SPLITS[it.index % len(HELD_OUT_REF_SPLITS)]
        )
        for j, expressions in enumerate(it.text.expressions):
            if not expressions:
                continue
            sent_ids = list(range(sent_id, sent_id + len(expressions)))
            sent_id += len(expressions)
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": _ann_id(it.image_id, j),
                    "image_id": it.image_id,
                    "split": split,
                    "sent_ids": sent_ids,
                    "sentences": [
                        {"tokens": words(s), "raw": s, "sent_id": i, "sent": s}
                        for i, s in zip(sent_ids, expressions, strict=True)
                    ],
                    "category_id": SHAPES.index(it.scene.objects[j].shape) + 1,
                    "file_name": f"COCO_train2014_{it.image_id:012d}_{j}.jpg",
                }
            )
    return refs


def _scenes(items: list[_Item], seed: int, size: int) -> dict[str, Any]:
    scenes = []
    for it in items:
        data = it.scene.to_dict()
        for j, obj in enumerate(data["objects"]):
            obj["ann_id"] = _ann_id(it.image_id, j)
            obj["category_id"] = SHAPES.index(obj["shape"]) + 1
        scenes.append(
            {"image_id": it.image_id, "split": it.split, "image": it.image(it.split), **data}
        )
    return {
        "image_size": size,
        "seed": seed,
        "colours": COLOUR_RGB,
        "sizes": SIDE_RANGE,
        "categories": _categories(),
        "scenes": scenes,
    }


def _categories() -> list[dict[str, Any]]:
    return [{"id": i, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES, 1)]


def _extras(items: list[_Item]) -> list[dict[str, Any]]:
    """Region captions of every object and one true and one false caption per scene."""
    captions = {
        split: [(it.scene, it.text.captions) for it in items if it.split == split]
        for split in SPLITS
    }
    extras: list[dict[str, Any]] = []
    for it in items:
        where = {"split": it.split, "image": it.image(it.split), "image_id": it.image_id}
        for j, (obj, region) in enumerate(zip(it.scene.objects, it.text.regions, strict=True)):
            extras.append(
                {
                    "task": "region_caption",
                    **where,
                    "ann_id": _ann_id(it.image_id, j),
                    "box": list(obj.box),
                    "text": region,
                }
            )
        k = int(it.rng.integers(len(it.text.captions)))
        negative, source = itm_negative(
            it.scene, it.text.caption_specs[k], captions[it.split], it.rng
        )
        extras += [
            {
                "task": "itm",
                **where,
                "text": it.text.captions[k],
                "answer": "yes",
                "source": "caption",
            },
            {"task": "itm", **where, "text": negative, "answer": "no", "source": source},
        ]
    return extras
