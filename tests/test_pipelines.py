"""Each named model's input pipeline (text normalisation, box decoding) and how
``inference_model`` routes its keywords: builder keywords to ``get_model``, fields and decoding
options to the call, anything else one clear error. Offline: no test here touches the network."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import MMP_CKPT
from PIL import Image

from ofa_vl import get_model, inference_model
from ofa_vl.errors import OFAError
from ofa_vl.text import TextNorm, clean_text, normalize_text, pre_caption, pre_question
from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer

FAST = {"max_new_tokens": 3, "num_beams": 2}
ZERO_SHOT = "ofa-base_3rdparty-zeroshot_vqa"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any download attempt fails the test; the cache is empty."""
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.english()


def prompt_ids(pipe, tok: OFATokenizer, **fields: object) -> list[int]:
    task = pipe.task
    return tok.encode(task.prompt(task.normalize(fields)))


# ----------------------------------------------------------------------------- text normalisation
def test_normalisations_by_hand():
    # mmpretrain CleanCaption: strip, drop string.punctuation, fold whitespace, lowercase
    assert clean_text("  What COLOR is   the cat?? ") == "what color is the cat"
    assert clean_text("is it a Cat?!", lowercase=False) == "is it a Cat"
    # OFA pre_question: lowercase, leading ",.!?*#:;~" dropped, '-' '/' -> ' ', '?' appended
    assert pre_question("?What color-is the car/bus") == "what color is the car bus?"
    assert pre_question("Is it?") == "is it?"
    # OFA pre_caption: as pre_question without the '?', <person> -> person, at most 80 words
    assert pre_caption("  A <person> on a  red-bike.") == "a person on a red bike."
    assert pre_caption(" ".join(["w"] * 100)) == " ".join(["w"] * 80)
    assert normalize_text("A-b?", "none") == "A-b?"
    with pytest.raises(
        OFAError, match="unknown text normalisation 'lower'; use one of none, clean"
    ):
        normalize_text("x", "lower")


def test_zero_shot_vqa_cleans_the_question_as_mmpretrain(tok):
    pipe = get_model(ZERO_SHOT, pretrained=MMP_CKPT, device="cpu")
    assert pipe.task.text_norm == {"question": TextNorm.CLEAN}
    # ids of mmpretrain 1.2.0's zero-shot VQA inferencer for "What animal is on the left?"
    # (coco_vqa.py test pipeline: CleanCaption(keys=['question']))
    assert prompt_ids(pipe, tok, question="What animal is on the left?") == [
        0, 99, 3477, 16, 15, 5, 314, 2
    ]  # fmt: skip


@pytest.mark.slow
def test_finetuned_models_take_text_verbatim_and_official_ones_normalise(tok):
    vqa = get_model("ofa-base_3rdparty-finetuned_vqa", pretrained=MMP_CKPT, answers=["yes"])
    # no CleanCaption in ofa-base_finetuned_vqa.py: " What animal is on the left?" as given
    assert prompt_ids(vqa, tok, question="What animal is on the left?") == [
        0, 653, 3477, 16, 15, 5, 314, 116, 2
    ]  # fmt: skip
    ground = get_model("ofa-base_3rdparty-finetuned_refcoco", pretrained=MMP_CKPT)
    assert ground.task.divisor == "mmpretrain" and ground.task.text_norm == {}
    official = get_model("ofa-base_official-finetuned_refcoco", pretrained=MMP_CKPT)
    # OFA:utils/transforms.py resize: Pillow bicubic; eval_refcoco: bin / 999
    assert (official.task.divisor, official.task.interpolation) == ("official", "bicubic")
    assert official.task.prompt(official.task.normalize({"text": "The DOG-left"})) == (
        ' which region does the text " the dog left " describe?'
    )
    off_vqa = get_model("ofa-base_official-finetuned_vqa", pretrained=MMP_CKPT, answers=["yes"])
    assert off_vqa.task.normalize({"question": "What color-is it"}).question == (
        "what color is it?"
    )


@pytest.mark.slow
def test_each_step_can_be_overridden(tmp_path, tok):
    pipe = get_model(ZERO_SHOT, pretrained=MMP_CKPT, text_norm={"question": "none"})
    assert prompt_ids(pipe, tok, question="What animal is on the left?")[1] == 653  # " What"
    # a model folder's pipeline.json overlays the card's task options
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(MMP_CKPT, folder / MMP_CKPT.name)
    spec = {
        "image_size": 96,
        "interpolation": "bilinear",
        "text_norm": {"question": "pre_question"},
    }
    (folder / "pipeline.json").write_text(json.dumps(spec))
    local = get_model(folder / MMP_CKPT.name, task="vqa")
    assert (local.task.image_size, local.task.interpolation) == (96, "bilinear")
    assert local.task.normalize({"question": "Is It"}).question == "is it?"
    with pytest.raises(OFAError, match="task 'vqa' has no text field text to normalise"):
        get_model(ZERO_SHOT, pretrained=MMP_CKPT, text_norm={"text": "clean"})


# ----------------------------------------------------------------------------- inference_model
@pytest.mark.slow
def test_inference_model_sends_builder_keywords_to_get_model(image):
    # pretrained / tokenizer / device / task options build; fields and decoding options run
    out = inference_model(
        ZERO_SHOT, image, pretrained=MMP_CKPT, tokenizer=ENGLISH_BPE, device="cpu",
        image_size=64, question="What is it?", **FAST,
    )  # fmt: skip
    pipe = get_model(ZERO_SHOT, pretrained=str(MMP_CKPT), image_size=64)
    assert pipe.task.image_size == 64
    assert out == pipe(image, question="What is it?", **FAST)
    assert out["question"] == "what is it"  # echoed as the model read it, as mmpretrain does
    caption = inference_model(
        "ofa-base_3rdparty-finetuned_caption", image, pretrained=MMP_CKPT, image_size=64, **FAST
    )
    assert set(caption) == {"pred_caption"}


def test_unknown_keywords_are_one_clear_line(image):
    with pytest.raises(OFAError) as err:
        inference_model(ZERO_SHOT, image, pretrained=MMP_CKPT, image_size=64, questoin="x?")
    message = str(err.value)
    assert "\n" not in message and "unknown keyword questoin" in message
    assert "its fields: question, objects" in message and "num_beams" in message
    pipe = get_model(ZERO_SHOT, pretrained=MMP_CKPT, image_size=64)
    with pytest.raises(OFAError, match="unknown keyword num_beam for task 'vqa'"):
        pipe(image, question="x?", num_beam=2)
    with pytest.raises(OFAError, match=r"pretrained build a model: pass them to get_model\(\)"):
        inference_model(pipe, image, question="x?", pretrained=MMP_CKPT)
    with pytest.raises(OFAError, match="unknown decoding option num_beam"):
        pipe.predict_batch(*pipe_inputs(pipe, image), num_beam=2)


def pipe_inputs(pipe, image: Path):
    from ofa_vl.images import preprocess_batch

    images, infos = preprocess_batch([image], pipe.task.image_size, pipe.task.interpolation)
    return images, infos, [{"question": "x?"}]
