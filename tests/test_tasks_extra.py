"""The tasks beyond caption / grounding / VQA, end to end on the fixture weights: prompts as OFA
writes them, output shapes, and the parsers on hand-made token sequences."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import MMP_CKPT

from ofa_vl import cli
from ofa_vl.api import OFAPipeline
from ofa_vl.errors import OFAValueError
from ofa_vl.images import IMAGENET_MEAN, ImageInfo
from ofa_vl.model.vqgan import VQGANDecoder, codes_to_images, load_vqgan
from ofa_vl.tasks import (
    TASKS,
    AskFields,
    EntailmentFields,
    RegionFields,
    TaskFields,
    TextFields,
    VQAFields,
    get_task,
)
from ofa_vl.tasks.detection import parse_boxes
from ofa_vl.tasks.entailment import LABELS as SNLI_LABELS
from ofa_vl.tasks.region_caption import REGION_PROMPT
from ofa_vl.tasks.text_tasks import GLUE_TASKS
from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer, bins_to_box

FAST = {"max_new_tokens": 6, "num_beams": 2}
RNG = np.random.default_rng(0)
IMAGES = [
    RNG.integers(0, 256, (48, 80, 3), dtype=np.uint8),
    RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8),
]


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_pretrained(ENGLISH_BPE)


def pipe(model, tok, name, **opts) -> OFAPipeline:
    opts.setdefault("image_size", 64)
    return OFAPipeline(model, tok, get_task(name, **opts))


def test_all_tasks_registered():
    names = {"region_caption", "itm", "snli_ve", "classify", "vqa_allcand", "detection", "ask"}
    names |= {"gigaword", "text_infill", "image_gen", "image_infill", *GLUE_TASKS}
    assert names <= set(TASKS)


# ----------------------------------------------------------------------------- grounded captioning
def test_region_prompt_is_the_pretraining_one(fixture_model, tok, monkeypatch):
    import ofa_vl.generation as gen

    captured, real = [], gen.generate
    monkeypatch.setattr(
        gen, "generate", lambda m, ids, *a, **k: (captured.append(ids), real(m, ids, *a, **k))[1]
    )
    task = get_task("region_caption", image_size=64)
    out = OFAPipeline(fixture_model, tok, task)(
        IMAGES, region=[[8, 4, 40, 30], [8, 4, 40, 30]], **FAST
    )
    ids = captured[0]
    for i, img in enumerate(IMAGES):
        h, w = img.shape[:2]
        want = [0, *tok.encode(REGION_PROMPT, add_special_tokens=False)]
        want += tok.box_to_ids([8, 4, 40, 30], 64 / w, 64 / h) + [2]
        assert ids[i, : len(want)].tolist() == want
        assert want[1] == 1437  # the lone "Ġ" of the two leading spaces
    assert ids[0, -5:-1].tolist() != ids[1, -5:-1].tolist()  # bins follow each image's resize
    assert [r["region"] for r in out] == [[8.0, 4.0, 40.0, 30.0]] * 2
    assert all(isinstance(r["pred_caption"], str) for r in out)
    assert task.generation.no_repeat_ngram_size == 3


# the fields each task reads, required ones first (what the keyword routing of inference_model,
# the CLI and the service rely on)
FIELDS = {
    "caption": ((), ()), "classify": ((), ()), "detection": ((), ()), "image_infill": ((), ()),
    "ocr": ((), ()), "snli_ve": (("hypothesis",), ("premise",)), "refcoco": (("text",), ()),
    "image_gen": (("text",), ()), "ask": (("prompt",), ("boxes",)), "itm": (("text",), ()),
    "region_caption": (("region",), ()), "gigaword": (("text",), ()), "text_infill": (("text",), ()),
    "cola": (("text",), ()), "mnli": (("text", "text2"), ()), "qnli": (("text", "question"), ()),
    "vqa": (("question",), ("objects",)), "vqa_allcand": (("question",), ("objects",)),
}  # fmt: skip


def test_each_task_declares_its_fields_as_a_dataclass():
    for name, (required, optional) in FIELDS.items():
        cls = TASKS[name]
        assert dataclasses.is_dataclass(cls.Fields), name
        assert (cls.required_fields(), cls.fields()) == (required, required + optional), name
    vqa = get_task("vqa", text_norm={"question": "pre_question"})
    typed = vqa.normalize({"question": "What Color?", "objects": ["cat"], "unread": 1})
    assert typed == VQAFields("what color?", ["cat"])
    assert vqa.prompt(typed) == " what color? object: cat"
    assert vqa.fields_of({"question": "What Color?"}) == VQAFields("What Color?")  # as given
    with pytest.raises(OFAValueError, match="^task 'vqa' needs a non-empty 'question' text$"):
        vqa.normalize({"objects": ["cat"]})
    region = get_task("region_caption").fields_of({"region": [1, 2, 3, 4]})
    assert region == RegionFields([1, 2, 3, 4])
    with pytest.raises(TypeError, match="placed"):  # the bins come from the image's resize
        get_task("region_caption").prompt(region)


@pytest.mark.parametrize("region", [None, [1, 2, 3], [10, 10, 5, 20], "a box"])
def test_region_caption_rejects_bad_regions(region):
    with pytest.raises(ValueError, match="region"):
        get_task("region_caption").check({"region": region})


# ----------------------------------------------------------------------------- matching / entailment
def test_matching_reports_yes_probability(fixture_model, tok):
    out = pipe(fixture_model, tok, "itm")(IMAGES, text=["A red circle.", "two squares"])
    itm = get_task("itm")  # the official pre_caption, then the prompt
    assert (
        itm.prompt(itm.normalize({"text": "A red-circle"}))
        == ' does the image describe " a red circle "?'
    )
    for r, text in zip(out, ["a red circle.", "two squares"]):  # echoed as the model read it
        assert r["text"] == text and 0.0 <= r["probability"] <= 1.0
        assert r["match"] == (r["probability"] > 0.5)


def test_entailment_prompts_and_labels(fixture_model, tok):
    task = get_task("snli_ve")
    assert (
        task.prompt(task.normalize({"hypothesis": "A dog"}))
        == ' does the image describe " a dog "?'
    )
    assert (
        task.prompt(task.normalize({"hypothesis": "a dog", "premise": "Two pets"}))
        == ' can image and text1 " two pets " imply text2 " a dog "?'
    )
    dog = EntailmentFields("a dog")
    assert task.decoder_tokens(dog, tok) == tok.encode(task.prompt(dog), add_special_tokens=False)
    out = pipe(fixture_model, tok, "snli_ve")(IMAGES, hypothesis="a dog", premise=["two pets", ""])
    for r in out:
        assert SNLI_LABELS[r["pred_answer"]] == r["pred_label"]
        assert set(r["scores"]) == set(SNLI_LABELS.values())
        assert r["scores"][r["pred_label"]] == max(r["scores"].values())


# ----------------------------------------------------------------------------- classification / VQA
def test_classify_labels_from_file(fixture_model, tok, tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("red circle\n\nblue square\ngreen triangle\n")
    out = pipe(fixture_model, tok, "classify", labels=names, topk=2)(IMAGES)
    for r in out:
        assert [t["label"] for t in r["topk"]][0] == r["pred_label"]
        assert len(r["topk"]) == 2 and r["topk"][0]["score"] >= r["topk"][1]["score"]
        assert r["pred_label"] in {"red circle", "blue square", "green triangle"}


def test_classify_needs_labels_and_knows_imagenet_normalisation():
    with pytest.raises(ValueError, match="labels"):
        get_task("classify").candidates()
    assert get_task("classify", normalization="imagenet").mean == IMAGENET_MEAN


def test_vqa_allcand_answers_from_the_list(fixture_model, tok):
    answers = ["yes", "no", "2", "red", "dark blue"]
    task = get_task("vqa_allcand", answers=answers)
    # the official evaluation: pre_question, and the question is the decoder prompt (prev_output)
    assert task.prompt(task.normalize({"question": "What color-is it"})) == " what color is it?"
    assert task.decoder_tokens(VQAFields("x?"), tok) == tok.encode(" x?", add_special_tokens=False)
    out = pipe(fixture_model, tok, "vqa_allcand", answers=answers)(
        IMAGES, question="what color is it?"
    )
    for r in out:
        assert set(r) == {"question", "pred_answer", "score"}
        assert r["pred_answer"] in answers and r["score"] <= 0.0
    with pytest.raises(ValueError, match="answers"):
        get_task("vqa_allcand").candidates()


# ----------------------------------------------------------------------------- detection / ask
def test_parse_boxes_on_hand_made_sequences(tok):
    info = ImageInfo(ori_shape=(100, 200), scale_factor=(256 / 200, 256 / 100))
    b = tok.bin_offset
    seq = [0, *tok.encode(" junk", add_special_tokens=False)]  # text before any box: ignored
    seq += [b + 10, b + 20, b + 110, b + 220, *tok.encode(" red circle", add_special_tokens=False)]
    seq += [b + 300, b + 5, b + 400, b + 90, *tok.encode(" dog", add_special_tokens=False)]
    seq += [b + 1, b + 2, 2]  # a truncated box, then </s>
    boxes, labels = parse_boxes(seq, tok, info)
    assert labels == ["red circle", "dog"]
    assert boxes == [
        bins_to_box([10, 20, 110, 220], 256 / 200, 256 / 100),
        bins_to_box([300, 5, 400, 90], 256 / 200, 256 / 100),
    ]
    assert parse_boxes([0, b + 1, b + 2, b + 3, b + 4, 2], tok, info)[1] == [""]  # a box, no label
    assert parse_boxes([0, 2], tok, info) == ([], [])


def test_detection_end_to_end(fixture_model, tok):
    task = get_task("detection")
    assert task.prompt(TaskFields()) == " what are the objects in the image?"
    out = pipe(fixture_model, tok, "detection")(IMAGES, **FAST)
    for r in out:
        assert set(r) == {"pred_bboxes", "pred_labels"} and len(r["pred_bboxes"]) == len(
            r["pred_labels"]
        )


def test_ask_prompt_and_boxes(fixture_model, tok):
    task = get_task("ask")
    assert task.prompt(AskFields("what is it?")) == " what is it?"
    assert task.prompt(AskFields(REGION_PROMPT)) == REGION_PROMPT  # leading spaces kept
    p = pipe(fixture_model, tok, "ask")
    plain = p(IMAGES[0], prompt="what is it?", **FAST)
    assert set(plain) == {"prompt", "text"}
    boxed = p(
        IMAGES[0],
        prompt="what is it?",
        boxes=True,
        constraint_range=(tok.bin_offset, len(tok)),
        **FAST,
    )
    assert set(boxed) == {"prompt", "text", "pred_bboxes", "pred_labels"}
    assert (
        len(boxed["pred_bboxes"]) == 1 and len(boxed["pred_bboxes"][0]) == 4
    )  # 4 bins, then 2 more


@pytest.mark.slow
def test_cli_ask(fixture_model, tmp_path, capsys, monkeypatch):
    from PIL import Image

    import ofa_vl.api

    monkeypatch.setattr(ofa_vl.api, "load_model", lambda *a, **k: fixture_model)  # no reload
    img = tmp_path / "red.png"
    Image.new("RGB", (80, 60), "red").save(img)
    fast = ["--max-new-tokens", "4", "--beams", "2", "--tokenizer", str(ENGLISH_BPE)]
    assert (
        cli.main(
            [
                "ask",
                str(img),
                "what color is it?",
                "--model",
                str(MMP_CKPT),
                *fast,
                "--boxes",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["image"] == str(img) and rows[0]["prompt"] == "what color is it?"
    assert {"text", "pred_bboxes", "pred_labels"} <= set(rows[0])


# ----------------------------------------------------------------------------- text only
def test_text_tasks_ignore_the_placeholder_image(fixture_model, tok):
    other = [np.zeros_like(i) for i in IMAGES]
    for name, fields in (
        ("gigaword", {"text": "The Quick brown fox <unk> jumped over the lazy dog ."}),
        ("text_infill", {"text": "the quick <mask> fox"}),
    ):
        p = pipe(fixture_model, tok, name)
        out = p(IMAGES, **fields, **FAST)
        assert out == p(other, **fields, **FAST)  # images_mask=False: the image is never read
        assert all(isinstance(r["pred_text"], str) for r in out)
    assert (
        get_task("gigaword").prompt(TextFields("A <unk> B"))
        == ' what is the summary of article " a unk b "?'
    )
    assert get_task("gigaword").generation.num_beams == 6
    infill = tok.encode(
        get_task("text_infill").prompt(TextFields("The <mask> sat")), add_special_tokens=False
    )
    assert infill == [
        99,
        16,
        5,
        1498,
        2788,
        9,
        22,
        5,
        50264,
        4005,
        22,
        116,
    ]  # OFA process_pure_text


GLUE_FIELDS = {"text": "A Man sleeps", "text2": "a person rests", "question": "who sleeps?"}
GLUE_PROMPTS = {
    "cola": ' is the text " a man sleeps " grammatically correct?',
    "mnli": ' can text1 " a man sleeps " imply text2 " a person rests "?',
    "rte": ' can text1 " a man sleeps " imply text2 " a person rests "?',
    "mrpc": ' does text1 " a man sleeps " and text2 " a person rests " have the same semantics?',
    "qnli": ' does " a man sleeps " contain the answer to question " who sleeps? "?',
    "qqp": ' is question " a man sleeps " and question " a person rests " equivalent?',
    "sst2": ' is the sentiment of text " a man sleeps " positive or negative?',
}


@pytest.mark.parametrize("name", sorted(GLUE_PROMPTS))
def test_glue_prompt_and_answer(fixture_model, tok, name):
    task = get_task(name)
    fields = {k: GLUE_FIELDS[k] for k in task.required_fields()}
    assert task.prompt(task.fields_of(fields)) == GLUE_PROMPTS[name]
    src = tok.encode(GLUE_PROMPTS[name], add_special_tokens=False)
    # prompt_type=src: the source with </s>
    assert task.decoder_tokens(task.fields_of(fields), tok) == [*src, 2]
    out = pipe(fixture_model, tok, name)([IMAGES[0], np.zeros((8, 8, 3), np.uint8)], **fields)
    assert out[0] == out[1]  # text only
    assert out[0]["pred_answer"] in GLUE_TASKS[name][2]


# ----------------------------------------------------------------------------- image codes
@pytest.mark.slow
def test_image_gen_codes(fixture_model, tok):
    side = fixture_model.cfg.code_image_size // 8
    p = pipe(fixture_model, tok, "image_gen", num_codes=2 * side, seed=0)
    out = p(IMAGES, text=["a red circle", "a blue square"])
    for r in out:
        codes = np.array(r["codes"])
        assert codes.shape == (2, side) and codes.min() >= 0 and codes.max() < tok.num_codes
        assert set(r) == {"codes"}
    assert p(IMAGES, text=["a red circle", "a blue square"]) == out  # seeded sampling
    assert (
        get_task("image_gen").prompt(TextFields("a cat"))
        == " what is the complete image? caption: a cat"
    )
    with pytest.raises(ValueError, match="multiple"):
        pipe(fixture_model, tok, "image_gen", num_codes=side + 1)(IMAGES[0], text="x")


def test_image_infill_reads_only_the_border(fixture_model, tok):
    side = fixture_model.cfg.code_image_size // 8
    p = pipe(fixture_model, tok, "image_infill", image_size=64, num_codes=side, seed=1)
    centre = IMAGES[1].copy()
    centre[16:48, 16:48] = 255 - centre[16:48, 16:48]
    out = p(IMAGES[1])
    assert p(centre) == out and np.array(out["codes"]).shape == (1, side)  # same seed, same codes


TINY_VQGAN = {
    "n_embed": 16,
    "embed_dim": 8,
    "ddconfig": {
        "double_z": False, "z_channels": 32, "resolution": 16, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0,
    },
}  # fmt: skip


def test_vqgan_loads_taming_checkpoint(tmp_path):
    import yaml

    ref = VQGANDecoder(TINY_VQGAN["n_embed"], TINY_VQGAN["embed_dim"], **TINY_VQGAN["ddconfig"])
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    for key in (
        "decoder.up.1.upsample.conv.weight",
        "decoder.mid.attn_1.q.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "quantize.embed.weight",
        "post_quant_conv.weight",
    ):
        assert key in state  # taming-transformers' names
    state["encoder.conv_in.weight"] = torch.zeros(1)  # encoder / loss weights are skipped
    folder = tmp_path / "vqgan"
    folder.mkdir()
    torch.save({"state_dict": state, "global_step": 1}, folder / "last.ckpt")
    (folder / "model.yaml").write_text(yaml.safe_dump({"model": {"params": TINY_VQGAN}}))
    vqgan = load_vqgan(tmp_path)  # the release folder (holding vqgan/) or vqgan/ itself
    codes = torch.randint(0, 16, (2, 3, 3))
    torch.testing.assert_close(vqgan(codes), ref.eval()(codes))
    images = codes_to_images(codes, vqgan)
    assert [im.size for im in images] == [(6, 6), (6, 6)] and images[0].mode == "RGB"


def test_image_gen_pixels_need_the_vqgan_files(fixture_model, tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.ckpt.*image_gen"):
        pipe(fixture_model, tok, "image_gen", num_codes=16, vqgan=tmp_path)(IMAGES[0], text="x")
