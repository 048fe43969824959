"""Task outputs against expectations from outside ofa-vl's own code: mmpretrain's ``CleanCaption``
on captions with punctuation, mmpretrain's ``OFAAddObjects`` prompts token for token, and the side
tasks' parsers and reports on hand-computed numbers.

No golden data from ``../shared``: the bundled model, the packaged English BPE and a tiny random
model with its vocabulary are enough.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ofa_vl.generation as gen
from ofa_vl.api import OFAPipeline, get_model
from ofa_vl.config import OFAConfig
from ofa_vl.images import ImageInfo, preprocess
from ofa_vl.model import OFA
from ofa_vl.model.vqgan import VQGANDecoder, codes_to_images
from ofa_vl.shapes.world import generate_scene, render_scene
from ofa_vl.tasks import TaskFields, TextFields, get_task
from ofa_vl.tasks.caption import clean_caption
from ofa_vl.tasks.detection import parse_boxes
from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer
from ofa_vl.zoo import DEFAULT_MODEL

SCENE = render_scene(generate_scene(random.Random(3), 128))
DATA = Path(__file__).parent / "data"
TINY_DD = {  # a taming decoder configuration small enough for a test
    "z_channels": 32, "resolution": 16, "out_ch": 3, "ch": 32, "ch_mult": [1],
    "num_res_blocks": 0, "attn_resolutions": [],
}  # fmt: skip


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_pretrained(ENGLISH_BPE)


@pytest.fixture(scope="module")
def english_model(tok: OFATokenizer) -> OFA:
    """A tiny random OFA with the English vocabulary (the prompts are what is checked)."""
    torch.manual_seed(0)
    cfg = OFAConfig(
        vocab_size=len(tok), embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2,
        resnet_layers=(1, 1, 1), resnet_width=8, max_positions=128, image_bucket_size=8,
    )  # fmt: skip
    return OFA(cfg).eval()


def generate_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every ``generate`` call the tasks make (arguments and returned sequences)."""
    calls: list[dict[str, Any]] = []
    real = gen.generate

    def spy(model: OFA, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = real(model, input_ids, *args, **kwargs)
        constraints = args[3]  # (images, images_mask, config, constraints)
        calls.append(
            {
                "input_ids": input_ids.tolist(),
                "decoder_prompts": constraints.decoder_prompts,
                "out": out.sequences,
            }
        )
        return out

    monkeypatch.setattr(gen, "generate", spy)
    return calls


# ----------------------------------------------------------------------------- caption cleaning
def mmpretrain_clean(text: str) -> str:
    """mmpretrain 1.2.0 ``CleanCaption(lowercase=False, remove_chars=string.punctuation)._clean``
    (datasets/transforms/processing.py), transcribed: strip, delete the characters, fold runs of
    whitespace; no strip afterwards."""
    text = text.strip().translate(str.maketrans({ch: None for ch in string.punctuation}))
    return re.sub(r"\s{2,}", " ", text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [  # worked by hand from CleanCaption's three steps
        ("  A Dog, and a KITTEN!!! sitting next-to each other...  ",
         "A Dog and a KITTEN sitting nextto each other"),  # case kept (lowercase=False)
        ("a dog . ", "a dog "),  # stripped first: the space before the removed "." stays
        ("a , b", "a b"),  # "a  b": the double space folds
        ("tab\there", "tab\there"),  # one whitespace character is not a run
        ("x\t\ny", "x y"),
        ("it's 3:30 (pm)", "its 330 pm"),
        ("café’s ☕", "café’s ☕"),  # not ASCII punctuation: kept
        ('"#$%&*+/;<=>@[\\]^_`{|}~', ""),
    ],
)  # fmt: skip
def test_clean_caption_by_hand(raw: str, expected: str) -> None:
    assert clean_caption(raw) == expected == mmpretrain_clean(raw)


def test_caption_parse_of_a_punctuated_caption(tok: OFATokenizer) -> None:
    # tokenizer golden (mmpretrain's OFATokenizer on the OFA BPE): the ids of this caption
    ids = [250, 8563, 6, 8, 10, 229, 23728, 2796, 16506, 2828, 220, 12, 560, 349, 97, 734]
    assert tok.decode(ids) == "A Dog, and a KITTEN!!! sitting next-to each other..."
    out = get_task("caption").parse([0, *ids, 2], tok, ImageInfo((1, 1), (1.0, 1.0)), TaskFields())
    assert out.to_dict() == {"pred_caption": "A Dog and a KITTEN sitting nextto each other"}


def test_caption_pipeline_drops_generated_punctuation() -> None:
    """The bundled model forced to emit punctuation: the pipeline's caption has none of it."""
    pipe = get_model(DEFAULT_MODEL, task="caption")
    t = pipe.tokenizer
    marks = [i for i in range(4, t.bin_offset) if t.decode([i]) in set(string.punctuation)]
    assert len(marks) == 3  # '?', '"', ':' are words of the shapes vocabulary
    words = t.encode(" a circle", add_special_tokens=False)
    # only these 5 tokens, each at most once (no-repeat 1), at least 5 of them: all 5, any order
    banned = [i for i in range(t.bin_offset + t.num_bins) if i not in [2, *marks, *words]]
    opts = dict(
        num_beams=1, max_new_tokens=6, min_new_tokens=5, no_repeat_ngram_size=1,
        suppress_tokens=banned,
    )  # fmt: skip
    out = pipe(SCENE, **opts)["pred_caption"]
    ids = t([pipe.task.prompt(TaskFields())])["input_ids"]
    pixels, _ = preprocess(SCENE, pipe.task.image_size, pipe.task.interpolation)  # type: ignore[arg-type]
    seq = pipe.model.generate(ids, pixels[None], **opts)[0].tolist()
    assert sorted(seq[1:6]) == sorted(marks + words) and seq[6] == 2  # punctuation emitted
    raw = t.decode(seq, skip_special_tokens=True)
    assert out == mmpretrain_clean(raw) and out.strip()
    assert not set(out) & set(string.punctuation), out


# ----------------------------------------------------------------------------- VQA object tags
# mmpretrain 1.2.0 OFAAddObjects (datasets/transforms/processing.py):
#   prompt = '{} object: {}'.format(question, ' '.join(objects)); decoder_prompt = question = prompt
# OFA.preprocess_text: ' ' + question, tokenised with <s> ... </s>;
# OFA.get_decoder_prompts: ' ' + decoder_prompt, add_special_tokens=False.
# The ids of ' is this a vegetarian pizza? object: pizza cheese tomato plate table' are a tokenizer
# golden (mmpretrain's OFATokenizer); ' is this a vegetarian pizza?' is its first 6.
QUESTION, OBJECTS = "is this a vegetarian pizza?", ["pizza", "cheese", "tomato", "plate", "table"]
WITH_OBJECTS = [16, 42, 10, 24926, 9366, 116, 7626, 35, 9366, 7134, 20406, 5299, 2103]
PLAIN = WITH_OBJECTS[:6]


def test_vqa_object_tags_reach_encoder_and_decoder(english_model, tok, monkeypatch) -> None:
    calls = generate_spy(monkeypatch)
    answers = ["yes", "no", "two dogs"]
    pipe = OFAPipeline(english_model, tok, get_task("vqa", image_size=64, answers=answers))
    out = pipe(
        [SCENE, SCENE], question=QUESTION, objects=[OBJECTS, []], num_beams=2, max_new_tokens=20
    )
    (call,) = calls
    P = len(WITH_OBJECTS)
    assert call["input_ids"][0] == [0, *WITH_OBJECTS, 2]
    assert call["input_ids"][1] == [0, *PLAIN, 2] + [1] * (P - len(PLAIN))  # right-padded
    assert call["decoder_prompts"] == [WITH_OBJECTS, []]
    seqs = call["out"]
    assert seqs[0, 1 : 1 + P].tolist() == WITH_OBJECTS  # the decoder really started with it
    # mmpretrain post_process: the prompt positions become <pad>, then decode without specials
    rows = [seqs[0].tolist()[:1] + seqs[0].tolist()[1 + P :], seqs[1].tolist()]
    assert [o["pred_answer"] for o in out] == [tok.decode(r, True).strip() for r in rows]
    assert all(o["pred_answer"] in answers for o in out)


def test_vqa_without_objects_has_no_decoder_prompt(english_model, tok, monkeypatch) -> None:
    calls = generate_spy(monkeypatch)
    OFAPipeline(english_model, tok, get_task("vqa", image_size=64))(
        SCENE, question=QUESTION, max_new_tokens=2, num_beams=1
    )
    assert calls[0]["input_ids"] == [[0, *PLAIN, 2]] and calls[0]["decoder_prompts"] is None


# ----------------------------------------------------------------------------- side tasks
def test_matching_probability_by_hand() -> None:
    task = get_task("itm")
    r = task.report(torch.tensor([math.log(0.3), math.log(0.1)]), ("yes", "no"), TextFields("x"))
    assert r.to_dict() == {
        "text": "x",
        "match": True,
        "probability": pytest.approx(0.75),
    }  # .3 / (.3 + .1)
    r = task.report(torch.tensor([-3.0, -1.0]), ("yes", "no"), TextFields("y")).to_dict()
    assert r["match"] is False and r["probability"] == pytest.approx(1 / (1 + math.e**2))


def test_matching_equals_teacher_forced_yes_no(tok, english_model) -> None:
    """OFA scores " yes" / " no" with the logits masked to the answer trie before log_softmax: after
    ``<s>`` only the two answers are allowed, then only ``</s>`` (log-prob 0), so
    p(yes) / (p(yes) + p(no)) = sigmoid(logit(yes) - logit(no)) of one decoder step."""
    pipe = OFAPipeline(english_model, tok, get_task("itm", image_size=64))
    out = pipe(SCENE, text="a red circle")
    (yes,), (no,) = (tok.encode(f" {a}", add_special_tokens=False) for a in ("yes", "no"))
    pixels, _ = preprocess(SCENE, 64, "bicubic")
    ids = tok([' does the image describe " a red circle "?'])["input_ids"]
    with torch.no_grad():
        logits = english_model.decoder(torch.tensor([[0]]), english_model.encode(ids, pixels[None]))
    p_yes = float(torch.sigmoid(logits[0, 0, yes] - logits[0, 0, no]))
    assert out["probability"] == pytest.approx(p_yes, rel=1e-5)
    assert out["match"] == (p_yes > 0.5)


def test_parse_boxes_by_hand(tok: OFATokenizer) -> None:
    """Box numbers worked by hand: ``bin / 999 * 512 / resize ratio`` (OFA eval_refcoco)."""
    info = ImageInfo(ori_shape=(100, 200), scale_factor=(256 / 200, 256 / 100))  # 200 x 100 image
    b = tok.bin_offset
    seq = [
        0,
        b + 999,
        b + 0,
        b + 499,
        b + 999,
        *tok.encode(" red circle", add_special_tokens=False),
    ]
    seq += [b + 1, b + 2, 2]
    boxes, labels = parse_boxes(seq, tok, info)
    # x: bin * 512 / 999 * 200 / 256 = bin * 400 / 999; y: bin * 512 / 999 * 100 / 256 = bin * 200 / 999
    assert labels == ["red circle"]
    assert boxes == [pytest.approx([400.0, 0.0, 499 * 400 / 999, 200.0], abs=1e-3)]  # float32


def test_image_gen_codes_are_the_sampled_code_tokens(tok, english_model, monkeypatch) -> None:
    calls = generate_spy(monkeypatch)
    side = english_model.cfg.code_image_size // 8
    task = get_task("image_gen", image_size=64, num_codes=2 * side, seed=0)
    out = OFAPipeline(english_model, tok, task)(SCENE, text="a red circle")
    seq = calls[0]["out"][0].tolist()
    assert seq[1 + 2 * side] == 2  # exactly num_codes tokens, then </s>
    codes = [t - 50265 for t in seq[1 : 1 + 2 * side]]  # <code_0> is id 50265 (tokenizer golden)
    assert all(0 <= c < 8192 for c in codes)
    assert out["codes"] == [codes[:side], codes[side:]]  # row-major grid of 2 rows


def test_vqgan_decoder_equals_taming() -> None:
    """The VQGAN decoder against taming-transformers' own ``GumbelVQ.decode_code`` (OFA's vendored
    copy) on a tiny configuration; the golden file says how it was made."""
    gold = json.loads((DATA / "vqgan_taming_tiny.json").read_text())
    vqgan = VQGANDecoder(gold["n_embed"], gold["embed_dim"], **gold["ddconfig"])
    state = vqgan.state_dict()
    for name in state:  # the golden's weights: each tensor from a generator seeded by its name
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        state[name] = torch.randn(state[name].shape, generator=g) * 0.2
    vqgan.load_state_dict(state)
    images = vqgan(torch.tensor(gold["codes"]))
    torch.testing.assert_close(images, torch.tensor(gold["images"]), atol=1e-5, rtol=0)


def test_codes_to_images_maps_minus_one_one_to_bytes() -> None:
    """OFA ``custom_to_pil``: clamp to [-1, 1], ``(x + 1) / 2 * 255``, truncated to uint8."""

    class Fixed(VQGANDecoder):
        def forward(self, codes: torch.Tensor) -> torch.Tensor:
            x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 0.999, 1.0, 3.0])  # (7,) values
            return x.view(1, 1, 1, 7).expand(len(codes), 3, 1, 7)

    (image,) = codes_to_images(torch.zeros(1, 1, 1, dtype=torch.long), Fixed(4, 4, **TINY_DD))
    # 0, 0, 127.5 -> 127, 191.25 -> 191, 254.87 -> 254, 255, 255
    want = [[v] * 3 for v in (0, 0, 127, 191, 254, 255, 255)]
    assert image.mode == "RGB" and np.asarray(image)[0].tolist() == want


def test_grounding_parse_by_hand(tok: OFATokenizer) -> None:
    """mmpretrain post_process reads the 4 tokens after ``<s>``; OFA's bin / 999 * 512 / ratio."""
    task = get_task("refcoco")
    info = ImageInfo(ori_shape=(256, 1024), scale_factor=(0.5, 2.0))  # 1024 x 256 -> 512 x 512
    b = tok.bin_offset
    out = task.parse([0, b + 999, b + 0, b + 333, b + 999, 2], tok, info, TextFields("x"))
    # x: bin * 512 / 999 / 0.5; y: bin * 512 / 999 / 2
    want = [1024.0, 0.0, 333 * 1024 / 999, 256.0]
    assert out.to_dict() == {"pred_bboxes": [pytest.approx(want, abs=1e-3)], "text": "x"}
    no_box = task.parse([0, b + 1, 50, b + 2, b + 3, 2], tok, info, TextFields("y"))
    assert no_box.to_dict() == {"pred_bboxes": [], "text": "y"}  # a word among the bins: no box


def test_glue_report_by_hand() -> None:
    mnli = get_task("mnli")
    fields = mnli.fields_of({"text": "a", "text2": "b"})
    r = mnli.report(torch.tensor([-2.0, -0.5, -1.0]), ("yes", "no", "maybe"), fields)
    assert r.to_dict() == {"pred_answer": "no", "scores": {"yes": -2.0, "no": -0.5, "maybe": -1.0}}


def test_decode_cleans_up_tokenization_spaces(tok: OFATokenizer) -> None:
    """transformers ``clean_up_tokenization`` (BART's default): " 're" -> "'re", " ," -> ","..."""
    ids = tok.encode(" they 're here , it 's fine", add_special_tokens=False)
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == " they 're here , it 's fine"
    assert tok.decode(ids) == " they're here, it's fine"
    assert tok.batch_decode([ids, ids[:3]]) == [" they're here, it's fine", " they're"]
