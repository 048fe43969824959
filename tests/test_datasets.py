"""Dataset readers on tiny datasets written in the real on-disk formats."""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from ofa_vl.data import (
    COCOCaption,
    DatasetError,
    RefCOCO,
    VQAv2,
    load_answer_vocab,
    load_object_tags,
    load_pickle,
    write_vqa_submission,
)
from ofa_vl.tasks.samples import Sample
from ofa_vl.tasks.vqa import VQAAnswers


def make_images(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3), (200, 30, 30)).save(root / name)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------------------------
# COCO caption (Karpathy)

KARPATHY_TEST: list[dict[str, Any]] = [
    {
        "image": "val2014/COCO_val2014_000000391895.jpg",
        "caption": ["A man rides a bike.", "A cyclist on a dirt road."],
        "image_id": "coco_391895",
    },
    {"image": "val2014/COCO_val2014_000000522418.jpg", "caption": "A woman cuts a cake."},
]


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    write_json(tmp_path / "annotations/coco_karpathy_test.json", KARPATHY_TEST)
    write_json(
        tmp_path / "annotations/coco_karpathy_test_gt.json",
        {
            "annotations": [
                {"image_id": 391895, "caption": "A man rides a bike.", "id": 1},
                {"image_id": 391895, "caption": "A cyclist on a dirt road.", "id": 2},
                {"image_id": 522418, "caption": "A woman cuts a cake.", "id": 3},
            ],
            "images": [{"id": 391895}, {"id": 522418}],
        },
    )
    make_images(tmp_path, *(e["image"] for e in KARPATHY_TEST))
    return tmp_path


def test_coco_caption_samples(coco_root: Path) -> None:
    ds = COCOCaption(coco_root, "test")
    assert len(ds) == 2
    first, second = ds[0], ds[1]
    assert first.image_id == 391895
    assert first.image_path == coco_root / "val2014/COCO_val2014_000000391895.jpg"
    assert first.captions == ["A man rides a bike.", "A cyclist on a dirt road."]
    assert (second.image_id, second.captions) == (522418, ["A woman cuts a cake."])
    assert second.sample() == Sample(522418, second.image_path, {}, ("A woman cuts a cake.",))
    assert ds.references() == {
        391895: ["A man rides a bike.", "A cyclist on a dirt road."],
        522418: ["A woman cuts a cake."],
    }
    batches = list(DataLoader(ds, batch_size=2, collate_fn=list))  # backs a DataLoader
    assert batches == [[first, second]]


def test_coco_caption_errors(coco_root: Path) -> None:
    ann = coco_root / "annotations/coco_karpathy_test.json"
    with pytest.raises(DatasetError, match=r"coco_karpathy_val\.json: file not found"):
        COCOCaption(coco_root, "val")
    write_json(ann, {"annotations": KARPATHY_TEST})
    with pytest.raises(DatasetError, match=r"coco_karpathy_test\.json: top level is a JSON dict"):
        COCOCaption(coco_root, "test")
    write_json(ann, [{"image": KARPATHY_TEST[0]["image"]}])
    with pytest.raises(DatasetError, match=r"coco_karpathy_test\.json: entry 0 lacks.*caption"):
        COCOCaption(coco_root, "test")
    write_json(ann, [{"image": "val2014/COCO_val2014_x.jpg", "caption": "c"}])
    with pytest.raises(DatasetError, match="entry 0.image = 'x' is not an integer image id"):
        COCOCaption(coco_root, "test")


def test_coco_caption_missing_image(coco_root: Path) -> None:
    missing = coco_root / "val2014/COCO_val2014_000000522418.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=rf"{missing}: image not found .*coco_karpathy_test"):
        COCOCaption(coco_root, "test")
    ds = COCOCaption(coco_root, "test", check_images="lazy")  # checked on access only
    assert ds[0].image_id == 391895
    with pytest.raises(DatasetError, match="image not found"):
        ds[1]


def test_coco_caption_train_has_no_ground_truth_file(coco_root: Path) -> None:
    write_json(coco_root / "annotations/coco_karpathy_train.json", KARPATHY_TEST[1:])
    ds = COCOCaption(coco_root, "train")
    with pytest.raises(DatasetError, match=r"coco_karpathy_train_gt\.json: file not found"):
        ds.references()


# ----------------------------------------------------------------------------------------------
# RefCOCO

INSTANCES = {
    "images": [
        {"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "width": 640, "height": 427},
        {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 640, "height": 480},
    ],
    "annotations": [
        {"id": 1719310, "image_id": 581857, "bbox": [103.9, 300.0, 135.4, 124.9], "category_id": 1},
        {"id": 1720000, "image_id": 581857, "bbox": [10, 20, 30, 40], "category_id": 1},
        {"id": 5, "image_id": 9, "bbox": [0, 0, 640, 480], "category_id": 51},
    ],
}


def ref(ref_id: int, split: str, ann_id: int, image_id: int, *sents: tuple[int, str]) -> dict:
    return {
        "ref_id": ref_id,
        "split": split,
        "ann_id": ann_id,
        "image_id": image_id,
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
        "category_id": 1,
        "sent_ids": [s for s, _ in sents],
        "sentences": [
            {"sent": t, "raw": t.upper(), "sent_id": s, "tokens": t.split()} for s, t in sents
        ],
    }


REFS = [
    ref(0, "testA", 1719310, 581857, (0, "woman in blue"), (1, "left lady")),
    ref(1, "val", 1720000, 581857, (2, "man on right"), (3, "guy"), (4, "right person")),
    ref(2, "val", 5, 9, (5, "the bowl")),
    ref(3, "train", 5, 9, (6, "food")),
]


def write_refcoco(root: Path, dataset: str = "refcoco", refs_name: str = "refs(unc).p") -> Path:
    write_json(root / dataset / "instances.json", INSTANCES)
    (root / dataset / refs_name).write_bytes(pickle.dumps(REFS, protocol=2))
    make_images(root, *(f"train2014/{im['file_name']}" for im in INSTANCES["images"]))
    return root / dataset / refs_name


def test_refcoco_samples(tmp_path: Path) -> None:
    write_refcoco(tmp_path)
    ds = RefCOCO(tmp_path, "refcoco", "val")
    assert [(s.sample_id, s.ref_id, s.text) for s in ds] == [
        (2, 1, "man on right"),
        (3, 1, "guy"),
        (4, 1, "right person"),
        (5, 2, "the bowl"),
    ]
    s = ds[0]
    assert s.image_id == 581857
    assert s.image_path == tmp_path / "train2014/COCO_train2014_000000581857.jpg"
    assert s.gt_box == (10.0, 20.0, 40.0, 60.0)  # XYWH [10, 20, 30, 40] -> XYXY
    assert s.sample() == Sample(2, s.image_path, {"text": "man on right"}, s.gt_box,
                                image_id=581857, category_id=s.category_id)  # fmt: skip
    a = RefCOCO(tmp_path, "refcoco", "testA")[0]
    assert a.gt_box == pytest.approx((103.9, 300.0, 239.3, 424.9))  # 103.9+135.4, 300+124.9


def test_refcocog_uses_umd_refs(tmp_path: Path) -> None:
    write_refcoco(tmp_path, "refcocog", "refs(umd).p")
    assert len(RefCOCO(tmp_path, "refcocog", "train")) == 1
    with pytest.raises(DatasetError, match=r"refcocog/refs\(google\)\.p: file not found"):
        RefCOCO(tmp_path, "refcocog", "train", split_by="google")


def test_refcoco_errors(tmp_path: Path) -> None:
    refs_file = write_refcoco(tmp_path)
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: no refs in split 'test' .*'testA'"):
        RefCOCO(tmp_path, "refcoco", "test")
    refs_file.write_bytes(pickle.dumps({"refs": REFS}))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: holds a dict, expected a list"):
        RefCOCO(tmp_path, "refcoco", "val")
    refs_file.write_bytes(pickle.dumps([{k: v for k, v in REFS[1].items() if k != "ann_id"}]))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: ref 0 lacks key\(s\) \['ann_id'\]"):
        RefCOCO(tmp_path, "refcoco", "val")
    refs_file.write_bytes(pickle.dumps([{**REFS[1], "ann_id": 42}]))
    with pytest.raises(DatasetError, match=r"instances\.json: no annotation id 42"):
        RefCOCO(tmp_path, "refcoco", "val")
    write_json(tmp_path / "refcoco/instances.json", INSTANCES["images"])
    with pytest.raises(DatasetError, match=r"instances\.json: top level is a JSON list"):
        RefCOCO(tmp_path, "refcoco", "val")


def test_refcoco_missing_image(tmp_path: Path) -> None:
    write_refcoco(tmp_path)
    (tmp_path / "train2014/COCO_train2014_000000000009.jpg").unlink()
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000009\.jpg: image not found"):
        RefCOCO(tmp_path, "refcoco", "val")


def py2_pickle(obj: Any) -> bytes:
    """Protocol-2 pickle with Python 2 byte strings (SHORT_BINSTRING), as the REFER refs are."""

    def enc(o: Any) -> bytes:
        if isinstance(o, str):
            return b"U" + bytes([len(o.encode())]) + o.encode()
        if isinstance(o, int):
            return b"J" + struct.pack("<i", o)  # BININT
        if isinstance(o, list):
            return b"](" + b"".join(map(enc, o)) + b"e"  # EMPTY_LIST MARK ... APPENDS
        return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"  # ... SETITEMS

    return b"\x80\x02" + enc(obj) + b"."


def test_refcoco_reads_python2_refs(tmp_path: Path) -> None:
    refs_file = write_refcoco(tmp_path)
    refs_file.write_bytes(py2_pickle([ref(7, "val", 5, 9, (70, "café table"))]))
    ((sample_id, text),) = [(s.sample_id, s.text) for s in RefCOCO(tmp_path, "refcoco", "val")]
    assert (sample_id, text) == (70, "café table")  # UTF-8 bytes decoded to str


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    refs_file = write_refcoco(tmp_path)
    refs_file.write_bytes(pickle.dumps([_Exploit(marker)]))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: refusing to unpickle posix\.system"):
        RefCOCO(tmp_path, "refcoco", "val")
    assert not marker.exists()
    # any class lookup is refused, even a harmless one
    (tmp_path / "od.pkl").write_bytes(pickle.dumps(OrderedDict(a=1)))
    with pytest.raises(DatasetError, match=r"od\.pkl: refusing to unpickle collections\.Ordered"):
        load_pickle(tmp_path / "od.pkl", "data")
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match=r"bad\.pkl: unreadable pickle"):
        load_pickle(tmp_path / "bad.pkl", "data")


# ----------------------------------------------------------------------------------------------
# VQAv2


def vqa_answers(*answers: str) -> list[dict]:
    return [
        {"answer": a, "answer_confidence": "yes", "answer_id": i} for i, a in enumerate(answers, 1)
    ]


QUESTIONS = {
    "info": {},
    "task_type": "Open-Ended",
    "data_type": "mscoco",
    "data_subtype": "val2014",
    "questions": [
        {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
        {"image_id": 262148, "question": "How many people?", "question_id": 262148001},
        {"image_id": 393225, "question": "Is the bowl full?", "question_id": 393225000},
    ],
}
ANNOTATIONS = {
    "annotations": [
        {
            "question_id": 262148000,
            "image_id": 262148,
            "question_type": "none of the above",
            "answer_type": "other",
            "multiple_choice_answer": "down",
            "answers": vqa_answers(*["down"] * 7, "at table", "skateboard", "table"),
        },
        {
            "question_id": 262148001,
            "image_id": 262148,
            "question_type": "how many",
            "answer_type": "number",
            "multiple_choice_answer": "2",
            "answers": vqa_answers(*["2"] * 8, "two", "3"),
        },
        {
            "question_id": 393225000,
            "image_id": 393225,
            "question_type": "is the",
            "answer_type": "yes/no",
            "multiple_choice_answer": "no",
            "answers": vqa_answers(*["no"] * 10),
        },
    ]
}


@pytest.fixture
def vqa_root(tmp_path: Path) -> Path:
    write_json(tmp_path / "annotations/v2_OpenEnded_mscoco_val2014_questions.json", QUESTIONS)
    write_json(tmp_path / "annotations/v2_mscoco_val2014_annotations.json", ANNOTATIONS)
    make_images(
        tmp_path,
        "val2014/COCO_val2014_000000262148.jpg",
        "val2014/COCO_val2014_000000393225.jpg",
    )
    return tmp_path


def test_vqa_samples(vqa_root: Path) -> None:
    ds = VQAv2(vqa_root, "val2014")
    assert len(ds) == 3
    s = ds[1]
    assert (s.question_id, s.image_id, s.question) == (262148001, 262148, "How many people?")
    assert s.image_path == vqa_root / "val2014/COCO_val2014_000000262148.jpg"
    assert s.answers == ["2"] * 8 + ["two", "3"]
    assert s.answer_type == "number"
    assert s.objects is None and ds.ans2label is None
    truth = VQAAnswers(tuple(s.answers), "number")
    assert s.sample() == Sample(262148001, s.image_path,
                                {"question": "How many people?", "objects": None}, truth,
                                image_id=262148)  # fmt: skip
    assert [x.answer_type for x in ds] == ["other", "number", "yes/no"]


def test_vqa_test_dev_without_annotations(tmp_path: Path) -> None:
    questions = {"questions": [{"image_id": 1, "question": "What?", "question_id": 10}]}
    write_json(tmp_path / "annotations/v2_OpenEnded_mscoco_test-dev2015_questions.json", questions)
    make_images(tmp_path, "test2015/COCO_test2015_000000000001.jpg")
    ds = VQAv2(tmp_path, "test-dev2015")
    assert len(ds) == 1
    s = ds[0]
    assert s.image_path == tmp_path / "test2015/COCO_test2015_000000000001.jpg"
    assert (s.answers, s.answer_type) == (None, None)
    assert s.sample().truth is None  # a test split: predictions are submitted, not scored


def test_vqa_object_tags_and_answer_vocab(vqa_root: Path) -> None:
    tags_json = write_json(vqa_root / "tags.json", {"262148": ["man", "skateboard"], "393225": []})
    tags_tsv = vqa_root / "tags.tsv"
    tags_tsv.write_text("262148\tman&&skateboard\n393225\t\n")
    assert (
        load_object_tags(tags_json)
        == load_object_tags(tags_tsv)
        == {
            262148: ["man", "skateboard"],
            393225: [],
        }
    )
    (vqa_root / "ans2label.pkl").write_bytes(pickle.dumps({"yes": 0, "no": 1, "2": 2}))
    ds = VQAv2(vqa_root, "val2014", object_tags=tags_tsv, answer_vocab=vqa_root / "ans2label.pkl")
    assert [s.objects for s in ds] == [["man", "skateboard"], ["man", "skateboard"], []]
    assert ds.ans2label == {"yes": 0, "no": 1, "2": 2}
    vocab_list = write_json(vqa_root / "answers.json", ["yes", "no", "2"])
    assert load_answer_vocab(vocab_list) == {"yes": 0, "no": 1, "2": 2}

    write_json(tags_json, {"262148": ["man"]})
    with pytest.raises(DatasetError, match=r"tags\.json: no object tags for image 393225"):
        VQAv2(vqa_root, "val2014", object_tags=tags_json)
    with pytest.raises(DatasetError, match=r"tags\.txt: unknown object tags format"):
        load_object_tags(vqa_root / "tags.txt")
    write_json(vocab_list, {"yes": "0"})
    with pytest.raises(DatasetError, match=r"answers\.json: expected a dict answer -> label"):
        load_answer_vocab(vocab_list)


def test_vqa_errors(vqa_root: Path) -> None:
    ann_file = vqa_root / "annotations/v2_mscoco_val2014_annotations.json"
    q_file = vqa_root / "annotations/v2_OpenEnded_mscoco_val2014_questions.json"
    write_json(ann_file, {"annotations": ANNOTATIONS["annotations"][:2]})
    with pytest.raises(DatasetError, match=rf"{ann_file}: no annotation for question 393225000"):
        VQAv2(vqa_root, "val2014")
    ann_file.unlink()
    with pytest.raises(DatasetError, match=rf"{ann_file}: file not found"):
        VQAv2(vqa_root, "val2014")
    write_json(q_file, QUESTIONS["questions"])
    with pytest.raises(DatasetError, match=rf"{q_file}: top level is a JSON list, expected a dict"):
        VQAv2(vqa_root, "val2014")
    write_json(q_file, {"questions": [{"image_id": 1, "question_id": 2}]})
    with pytest.raises(DatasetError, match=r"questions\[0\] lacks key\(s\) \['question'\]"):
        VQAv2(vqa_root, "val2014")


def test_vqa_missing_image(vqa_root: Path) -> None:
    (vqa_root / "val2014/COCO_val2014_000000393225.jpg").unlink()
    with pytest.raises(DatasetError, match=r"COCO_val2014_000000393225\.jpg: image not found"):
        VQAv2(vqa_root, "val2014")


def test_write_vqa_submission(tmp_path: Path) -> None:
    path = write_vqa_submission({262148000: "down", 262148001: "2"}, tmp_path / "out/vqa.json")
    assert json.loads(path.read_text()) == [
        {"question_id": 262148000, "answer": "down"},
        {"question_id": 262148001, "answer": "2"},
    ]
