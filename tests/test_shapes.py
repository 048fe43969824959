"""The synthetic shapes world: determinism, file formats, and texts that are true of the pixels."""

from __future__ import annotations

import json
import pickle
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ofa_vl.shapes.text import COLOURS, RELATION_MARGIN, SHAPES, SIZES, words
from ofa_vl.shapes.world import (
    AREA_FACTOR,
    COLOUR_RGB,
    Scene,
    generate_scene,
    render_scene,
    shapes_command,
    shapes_corpus,
    shapes_vocabulary,
    write_shapes_dataset,
)

N_TRAIN, N_VAL, SIZE = 60, 24, 256
ATTRIBUTE_OF = {
    **dict.fromkeys(COLOURS, "colour"),
    **dict.fromkeys(SHAPES, "shape"),
    **dict.fromkeys(SIZES, "size"),
}
# test's own reading of the spatial words: (axis, sign), "a left of b" when sign * (a - b) > margin
AXES = {
    "left of": (0, -1),
    "right of": (0, 1),
    "above": (1, -1),
    "below": (1, 1),
    "on the left": (0, -1),
    "on the right": (0, 1),
    "at the top": (1, -1),
    "at the bottom": (1, 1),
}
RELATIONS = list(AXES)[:4]
NUMBER = {"one": 1, "two": 2, "three": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(out, N_TRAIN, N_VAL, seed=7, size=SIZE)
    return out


@pytest.fixture(scope="module")
def scenes(dataset: Path) -> dict[int, dict[str, Any]]:
    return {s["image_id"]: s for s in _json(dataset / "scenes.json")["scenes"]}


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _centre(obj: dict[str, Any], axis: int) -> float:
    return float(obj["centre"][axis])


def _beyond(a: dict[str, Any], b: dict[str, Any], relation: str) -> bool | None:
    axis, sign = AXES[relation]
    d = sign * (_centre(a, axis) - _centre(b, axis))
    margin = RELATION_MARGIN * SIZE
    return True if d > margin else False if d < -margin else None


def _matching(phrase: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects fitting "small red circle" / "red shape" / "small one" (test's own parser)."""
    attrs = {ATTRIBUTE_OF[w]: w for w in phrase.split() if w not in ("shape", "one")}
    return [o for o in objects if all(o[a] == v for a, v in attrs.items())]


def _resolve(expression: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All objects an expression "the [size] [colour] noun [spatial]" can refer to."""
    assert expression.startswith("the ")
    phrase, spatial = expression[4:], None
    for suffix in ("on the left", "on the right", "at the top", "at the bottom"):
        if phrase.endswith(" " + suffix):
            phrase, spatial = phrase[: -len(suffix) - 1], suffix
    group = _matching(phrase, objects)
    if spatial is None:
        return group
    return [t for t in group if all(o is t or _beyond(t, o, spatial) for o in group)]


def _describes(text: str, scene: dict[str, Any]) -> bool:
    """Whether a caption names exactly the scene's objects (with their sizes where it says them)."""
    pattern = rf"\b(?:({'|'.join(SIZES)}) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b"
    named = re.findall(pattern, text)
    sized = all(size for size, _, _ in named)
    return Counter(t if sized else t[1:] for t in named) == Counter(
        (o["size"], o["colour"], o["shape"]) if sized else (o["colour"], o["shape"])
        for o in scene["objects"]
    )


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refs file asks for class {module}.{name}")


def _refs(dataset: Path) -> list[dict[str, Any]]:
    with (dataset / "refcoco/refs(unc).p").open("rb") as f:
        return _NoClasses(f).load()


def _questions(dataset: Path, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    qs = _json(dataset / f"annotations/v2_OpenEnded_mscoco_{split}2014_questions.json")
    anns = _json(dataset / f"annotations/v2_mscoco_{split}2014_annotations.json")
    return list(zip(qs["questions"], anns["annotations"], strict=True))


def _extras(dataset: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (dataset / "extras.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("make_rng", [random.Random, np.random.default_rng])
def test_generate_scene_is_seeded_and_well_formed(make_rng: Any) -> None:
    for seed in range(50):
        scene = generate_scene(make_rng(seed), size=SIZE)
        assert scene == generate_scene(make_rng(seed), size=SIZE)
        assert 1 <= len(scene.objects) <= 3
        for i, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert x1 - x0 >= 40 if obj.size == "small" else x1 - x0 >= 79
            for other in scene.objects[i + 1 :]:
                ox0, oy0, ox1, oy1 = other.box
                assert x1 <= ox0 or ox1 <= x0 or y1 <= oy0 or oy1 <= y0, "boxes overlap"
    assert generate_scene(make_rng(0)) != generate_scene(make_rng(1))


def test_scene_dict_round_trip_renders_the_same_pixels() -> None:
    scene = generate_scene(np.random.default_rng(3), size=128)
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert again == scene
    assert np.array_equal(np.asarray(render_scene(again)), np.asarray(render_scene(scene)))


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    def files(out: Path, seed: int, workers: int = 1) -> dict[str, bytes]:
        write_shapes_dataset(out, 12, 8, seed=seed, size=128, workers=workers)
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    first, again, other = (
        files(tmp_path / "a", 1),
        files(tmp_path / "b", 1, workers=2),  # rendered in 2 processes: the same bytes
        files(tmp_path / "c", 2),
    )
    assert first == again
    assert first.keys() == other.keys()
    annotations = [k for k in first if not k.endswith(".jpg") and "answer_list" not in k]
    assert len(annotations) == 11
    assert all(first[k] != other[k] for k in annotations)


def test_held_out_scenes_do_not_depend_on_training_size(tmp_path: Path) -> None:
    def val_captions(n_train: int) -> list[Any]:
        write_shapes_dataset(tmp_path / str(n_train), n_train, 5, size=128)
        return [
            e["caption"] for e in _json(tmp_path / f"{n_train}/annotations/coco_karpathy_val.json")
        ]

    assert val_captions(3) == val_captions(9)


def test_boxes_are_tight_around_the_drawn_shapes(dataset: Path, scenes: dict[int, Any]) -> None:
    for scene in scenes.values():
        pixels = np.asarray(Image.open(dataset / scene["image"]).convert("RGB"), dtype=np.int16)
        assert pixels.shape == (SIZE, SIZE, 3)
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            a0, b0 = max(x0 - 3, 0), max(y0 - 3, 0)  # boxes are >= 5 px apart
            window = pixels[b0 : y1 + 3, a0 : x1 + 3]
            mask = np.abs(window - np.array(COLOUR_RGB[obj["colour"]])).max(-1) < 60
            ys, xs = np.nonzero(mask)
            found = (xs.min() + a0, ys.min() + b0, xs.max() + a0 + 1, ys.max() + b0 + 1)
            assert np.abs(np.array(found) - np.array(obj["box"])).max() <= 2, (obj, found)
            assert mask.sum() >= 0.8 * AREA_FACTOR[obj["shape"]] * (x1 - x0) * (y1 - y0)


def test_caption_files(dataset: Path, scenes: dict[int, Any]) -> None:
    train = _json(dataset / "annotations/coco_karpathy_train.json")
    val = _json(dataset / "annotations/coco_karpathy_val.json")
    assert len(train) == 5 * N_TRAIN and len(val) == N_VAL
    for entry in train:
        assert isinstance(entry["caption"], str) and entry["image"].startswith("train2014/")
    gt = _json(dataset / "annotations/coco_karpathy_val_gt.json")
    assert gt["type"] == "captions" and {"info", "licenses"} <= gt.keys()
    assert [i["id"] for i in gt["images"]] == [int(e["image"][-16:-4]) for e in val]
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"]) == 5 * N_VAL
    for entry in [*train, *val]:
        image_id = int(Path(entry["image"]).stem.split("_")[-1])
        assert entry["image_id"] == f"coco_{image_id}" and (dataset / entry["image"]).is_file()
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        for caption in captions:
            assert caption == caption.lower() and re.fullmatch(r"[a-z ]+", caption)
            objects = scenes[image_id]["objects"]
            assert _describes(caption, scenes[image_id]), caption
            count = caption.split()[0]
            assert NUMBER.get(count, len(objects)) == len(objects)
            if m := re.match(rf"a (.+?) ({'|'.join(RELATIONS)}) a (.+?)(?: and|$)", caption):
                subjects, others = _matching(m[1], objects), _matching(m[3], objects)
                assert any(_beyond(a, b, m[2]) for a in subjects for b in others), caption


def test_vqa_files(dataset: Path, scenes: dict[int, Any]) -> None:
    answer_list = _json(dataset / "annotations/answer_list.json")
    assert isinstance(answer_list, list) and all(isinstance(a, str) for a in answer_list)
    for split in ("train", "val"):
        header = _json(dataset / f"annotations/v2_OpenEnded_mscoco_{split}2014_questions.json")
        assert header["data_subtype"] == f"{split}2014"
        pairs = _questions(dataset, split)
        assert len({q["question_id"] for q, _ in pairs}) == len(pairs)
        assert {q["image_id"] for q, _ in pairs} == {
            i for i, scene in scenes.items() if scene["split"] == split
        }
        for q, ann in pairs:
            assert q["question_id"] == ann["question_id"] and q["image_id"] == ann["image_id"]
            assert q["question"].endswith("?") and q["question"] == q["question"].lower()
            image = dataset / f"{split}2014/COCO_{split}2014_{q['image_id']:012d}.jpg"
            assert image.is_file()
            assert ann["answer_type"] in ("yes/no", "number", "other")
            assert q["question"].startswith(ann["question_type"])
            assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
            assert {(a["answer"], a["answer_confidence"]) for a in ann["answers"]} == {
                (ann["multiple_choice_answer"], "yes")
            }
            assert ann["multiple_choice_answer"] in answer_list


def test_refcoco_files(dataset: Path, scenes: dict[int, Any]) -> None:
    instances = _json(dataset / "refcoco/instances.json")
    assert [c["name"] for c in instances["categories"]] == list(SHAPES)
    images = {i["id"]: i for i in instances["images"]}
    assert images.keys() == scenes.keys()
    for image in images.values():
        assert (dataset / "train2014" / image["file_name"]).is_file()
        assert image["width"] == image["height"] == SIZE
    anns = {a["id"]: a for a in instances["annotations"]}
    assert len(anns) == sum(len(s["objects"]) for s in scenes.values())
    for scene in scenes.values():
        for obj in scene["objects"]:
            ann = anns[obj["ann_id"]]
            x0, y0, x1, y1 = obj["box"]
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert ann["image_id"] == scene["image_id"] and ann["iscrowd"] == 0
            assert SHAPES[ann["category_id"] - 1] == obj["shape"]

    refs = _refs(dataset)
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert len(set(sent_ids)) == len(sent_ids)
    assert [r["ref_id"] for r in refs] == list(range(len(refs)))
    for ref in refs:
        ann = anns[ref["ann_id"]]
        assert ref["image_id"] == ann["image_id"] and ref["category_id"] == ann["category_id"]
        assert (ref["split"] == "train") == (scenes[ref["image_id"]]["split"] == "train")
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for sent in ref["sentences"]:
            assert sent["sent"] == sent["raw"] and sent["tokens"] == sent["sent"].split()


def test_referring_expressions_pick_exactly_their_object(
    dataset: Path, scenes: dict[int, Any]
) -> None:
    boxes = {a["id"]: a["bbox"] for a in _json(dataset / "refcoco/instances.json")["annotations"]}
    kinds: Counter[bool] = Counter()
    for ref in _refs(dataset):
        objects = scenes[ref["image_id"]]["objects"]
        assert 1 <= len(ref["sentences"]) <= 3
        for sent in ref["sentences"]:
            (found,) = _resolve(sent["sent"], objects)
            assert found["ann_id"] == ref["ann_id"]
            x0, y0, x1, y1 = found["box"]
            assert boxes[ref["ann_id"]] == [x0, y0, x1 - x0, y1 - y0]
            kinds[" on the " in sent["sent"] or " at the " in sent["sent"]] += 1
    assert kinds[True] > 0 and kinds[False] > 0


def test_answers_follow_from_the_scene(dataset: Path, scenes: dict[int, Any]) -> None:
    types: Counter[str] = Counter()
    for split in ("train", "val"):
        for q, ann in _questions(dataset, split):
            objects, text = scenes[q["image_id"]]["objects"], q["question"]
            answer = ann["multiple_choice_answer"]
            if m := re.fullmatch(r"what (color|shape|size) is (the .+)\?", text):
                (obj,) = _resolve(m[2], objects)
                expected = obj[{"color": "colour"}.get(m[1], m[1])]
                assert expected not in m[2].split(), "the expression names the answer"
            elif m := re.fullmatch(r"how many (.+)s are there\?", text):
                expected = str(len(_matching(m[1], objects)))
            elif m := re.fullmatch(r"is there a (.+)\?", text):
                expected = "yes" if _matching(m[1], objects) else "no"
            elif m := re.fullmatch(rf"is (the .+) ({'|'.join(RELATIONS)}) (the .+)\?", text):
                (a,), (b,) = _resolve(m[1], objects), _resolve(m[3], objects)
                holds = _beyond(a, b, m[2])
                assert holds is not None
                expected = "yes" if holds else "no"
            else:
                raise AssertionError(f"unexpected question {text!r}")
            assert answer == expected, text
            types[ann["answer_type"]] += 1
            assert ann["answer_type"] == (
                "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"
            )
    assert set(types) == {"yes/no", "number", "other"}


def test_yes_no_answers_are_balanced(dataset: Path) -> None:
    answers = [
        ann["multiple_choice_answer"]
        for split in ("train", "val")
        for _, ann in _questions(dataset, split)
        if ann["answer_type"] == "yes/no"
    ]
    assert 0.4 <= answers.count("yes") / len(answers) <= 0.6


def test_region_captions_and_image_text_pairs(dataset: Path, scenes: dict[int, Any]) -> None:
    captions = {
        int(Path(e["image"]).stem[-12:]): e["caption"]
        for e in _json(dataset / "annotations/coco_karpathy_val.json")
    }
    sources: Counter[str] = Counter()
    extras = _extras(dataset)
    for scene in scenes.values():
        mine = [e for e in extras if e["image_id"] == scene["image_id"]]
        regions = [e for e in mine if e["task"] == "region_caption"]
        assert [(e["ann_id"], e["box"]) for e in regions] == [
            (o["ann_id"], o["box"]) for o in scene["objects"]
        ]
        for e, obj in zip(regions, scene["objects"], strict=True):
            assert e["text"] == f"a {obj['size']} {obj['colour']} {obj['shape']}"
        pairs = {e["answer"]: e for e in mine if e["task"] == "itm"}
        assert len(pairs) == 2 == sum(e["task"] == "itm" for e in mine)
        assert _describes(pairs["yes"]["text"], scene)
        assert not _describes(pairs["no"]["text"], scene)
        if scene["image_id"] in captions:
            assert pairs["yes"]["text"] in captions[scene["image_id"]]
        sources[pairs["no"]["source"]] += 1
    assert set(sources) == {"mutated", "other_scene"}


@pytest.mark.slow
def test_vocabulary_is_exactly_the_words_used(dataset: Path) -> None:
    vocab = shapes_vocabulary()
    assert vocab == sorted(set(vocab)) and all(w == w.lower() for w in vocab)
    texts = [e["text"] for e in _extras(dataset)]
    texts += [s["sent"] for r in _refs(dataset) for s in r["sentences"]]
    for split in ("train", "val"):
        for q, ann in _questions(dataset, split):
            texts += [q["question"], ann["multiple_choice_answer"]]
    assert {w for t in texts for w in words(t)} <= set(vocab)
    assert {w for t in shapes_corpus(400, seed=3) for w in words(t)} == set(vocab)


def test_corpus_is_the_texts_of_the_dataset(dataset: Path) -> None:
    corpus = set(shapes_corpus(N_TRAIN, seed=7, size=SIZE))
    train = {e["caption"] for e in _json(dataset / "annotations/coco_karpathy_train.json")}
    train |= {q["question"] for q, _ in _questions(dataset, "train")}
    train |= {e["text"] for e in _extras(dataset) if e["task"] == "region_caption"}
    assert train <= corpus


def test_readers_consume_the_dataset(dataset: Path) -> None:
    from ofa_vl.data import coco_caption as caption
    from ofa_vl.data import refcoco, vqa

    assert len(caption.COCOCaption(dataset, "train")) == 5 * N_TRAIN
    assert len(caption.COCOCaption(dataset, "val")) == N_VAL
    assert len(vqa.VQAv2(dataset, "val2014")) == len(_questions(dataset, "val"))
    for split in ("train", "val", "testA", "testB"):
        assert len(refcoco.RefCOCO(dataset, split=split)) > 0


def test_shapes_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counts = shapes_command(tmp_path, train=4, val=2, seed=1, size=96)
    assert counts["train_images"] == 4 and counts["val_images"] == 2
    assert str(tmp_path) in capsys.readouterr().out
    assert len(list((tmp_path / "val2014").iterdir())) == 2
    assert len(list((tmp_path / "train2014").iterdir())) == 6
