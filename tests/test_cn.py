"""OFA-CN end to end: a Chinese-vocabulary checkpoint in the official fairseq layout (random
weights, 30,325 tokens) downloaded through the zoo from a local server, then caption, grounding
and OCR run with the cards' prompts, preprocessing and decoding, as the CLI and the service run
them."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_api import _Server
from test_checkpoints import DEC_FS, ENC_FS, rename

from ofa_vl import OFA, OFAConfig, zoo
from ofa_vl.api import get_model
from ofa_vl.images import preprocess
from ofa_vl.tasks.caption import clean_caption
from ofa_vl.tokenizer import bins_to_box, join_cjk

FILES = {
    "caption": "caption_cn_base.pt",
    "refcoco": "refcoco_cn_base.pt",
    "ocr": "ofa_cn_ocr_base.pt",
}
CARDS = {
    "caption": "ofa-cn-base_official-finetuned_caption",
    "refcoco": "ofa-cn-base_official-finetuned_refcoco",
    "ocr": "ofa-cn-base_official-finetuned_ocr",
}


def official_checkpoint() -> bytes:
    """A tiny OFA with the Chinese vocabulary, saved as the official fairseq ``.pt``."""
    torch.manual_seed(0)
    cfg = OFAConfig(embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2,
                    resnet_layers=(1, 1, 1), resnet_width=8, vocab_size=30325)  # fmt: skip
    sd = rename({"model." + k: v for k, v in OFA(cfg).state_dict().items()}, ENC_FS, DEC_FS)
    sd["encoder.version"] = sd["decoder.version"] = torch.tensor([3.0])
    sd["decoder.image_position_idx"] = torch.cat(  # fairseq's 1026-long buffer
        [torch.tensor([0]), torch.arange(256), torch.full((769,), 1024)]
    )
    import io

    buf = io.BytesIO()
    torch.save(
        {"args": None, "cfg": {"task": {"bpe": "bert"}}, "model": sd, "extra_state": {}}, buf
    )
    return buf.getvalue()


@pytest.fixture
def cn_zoo(tmp_path, monkeypatch):
    """The three OFA-CN cards with their weights served from a local HTTP server."""
    srv = _Server(dict.fromkeys(FILES.values(), official_checkpoint()))
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path))
    for task, name in CARDS.items():
        card = dataclasses.replace(zoo.MODELS[name], weights=srv.url + FILES[task])
        monkeypatch.setitem(zoo.MODELS, name, card)
    yield tmp_path
    srv.close()


def picture(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(w * h)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def run_by_hand(pipe, image, prompt, **overrides):
    """What the pipeline must do: the task's preprocessing, the Chinese prompt, the card's decoding."""
    pixels, info = preprocess(image, pipe.task.image_size, pipe.task.interpolation)
    ids = pipe.tokenizer([prompt], return_tensors="pt")["input_ids"]
    config = pipe.decoding(**overrides)
    return pipe.model.generate(ids, pixels[None], config=config)[0].tolist(), info


@pytest.mark.slow
def test_caption_grounding_ocr_through_the_zoo(cn_zoo):
    cap = get_model(CARDS["caption"])
    assert cap.model.cfg.vocab_size == 30325 and len(cap.tokenizer) == 30325
    assert cap.tokenizer.language == "zh" and (cn_zoo / "checkpoints" / FILES["caption"]).is_file()
    # generate_caption_cn.sh: beam 8, max_len_b 128, no-repeat 3; caption_dataset.py: 480 bicubic
    assert cap.generation.to_dict() == {"num_beams": 8, "fairseq": True, "max_new_tokens": 129,
                              "no_repeat_ngram_size": 3}  # fmt: skip
    assert (cap.task.image_size, cap.task.interpolation) == (480, "bicubic")
    image, short = picture(200, 150), {"max_new_tokens": 12}  # a random net never stops: cut it

    tokens, _ = run_by_hand(cap, image, "图片描述了什么内容?", **short)
    want = join_cjk(clean_caption(cap.tokenizer.decode(tokens)))
    assert cap(image, **short) == {"pred_caption": want}

    ground = get_model(CARDS["refcoco"])
    bins_only = {  # a random network answers a box only when made to: bins, no <s> <pad> <unk>
        "constraint_range": (ground.tokenizer.bin_offset, ground.tokenizer.bin_offset + 1000),
        "suppress_tokens": [0, 1, 3],
    }
    prompt = '这段文字" 沙发上的猫 "描述的是哪个区域？'  # pre_caption lower-cases the text
    tokens, info = run_by_hand(ground, image, prompt, **bins_only)
    assert len(tokens) == 6 and tokens[-1] == 2  # <s>, 4 bins (min_len 4, max_len_b 4), </s>
    bins = [t - ground.tokenizer.bin_offset for t in tokens[1:5]]
    box = bins_to_box(bins, *info.scale_factor)
    assert ground(image, text="沙发上的猫", **bins_only) == {
        "pred_bboxes": [box],
        "text": "沙发上的猫",
    }

    ocr = get_model(CARDS["ocr"])
    wide = picture(300, 60)
    assert ocr.task.interpolation == "ocr" and ocr.task.generation.max_new_tokens == 65
    tokens, _ = run_by_hand(ocr, wide, "图片上的文字是什么?", **short)
    assert ocr(wide, **short) == {"pred_text": join_cjk(ocr.tokenizer.decode(tokens).strip())}


@pytest.mark.slow
def test_unnamed_chinese_checkpoint_cli_and_service(tmp_path):
    """A bare ``.pt`` path: the 30,325-token vocabulary selects OFA-CN's tokenizer and prompts."""
    import contextlib
    import io

    from fastapi.testclient import TestClient

    from ofa_vl import cli
    from ofa_vl.serve import create_app, load_pipelines

    path = tmp_path / "ofa_cn_ocr_base.pt"
    path.write_bytes(official_checkpoint())
    line = tmp_path / "line.png"
    picture(120, 40).save(line)
    fast = {"num_beams": 2, "max_new_tokens": 4}
    pipe = get_model(path, task="ocr")
    assert pipe.tokenizer.language == "zh"
    tokens, _ = run_by_hand(pipe, line, "图片上的文字是什么?", **fast)
    expected = join_cjk(pipe.tokenizer.decode(tokens).strip())
    assert pipe(line, **fast) == {"pred_text": expected}

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = [
            "ocr",
            str(line),
            "--model",
            str(path),
            "--json",
            "--beams",
            "2",
            "--max-new-tokens",
            "4",
        ]
        assert cli.main(argv) == 0
    (row,) = json.loads(out.getvalue())
    assert row.pop("score") <= 0  # the model's log-probability of its text
    assert 0 <= row.pop("confidence") <= 1
    assert row == {"image": str(line), "pred_text": expected}

    pipes = load_pipelines(path, image_size=64, generation=fast)
    with TestClient(create_app({"cn": pipes})) as client:
        reply = client.post("/v1/ocr", files={"image": ("line.png", line.read_bytes())})
    assert reply.status_code == 200 and reply.json()["text"] == pipes["ocr"](line)["pred_text"]


def test_zoo_has_the_twelve_official_chinese_checkpoints(capsys):
    from ofa_vl import cli
    from ofa_vl.model_folder import tokenizer_source
    from ofa_vl.tokenizer import CHINESE_VOCAB

    names = zoo.list_models("ofa-cn*")
    files = {zoo.MODELS[n].weights.removeprefix(zoo.OFA_OSS) for n in names}
    assert files == {  # OFA:checkpoints_cn.md
        f"{kind}_{size}.pt"
        for size in ("base", "large")
        for kind in (
            "ofa_cn",
            "caption_cn",
            "refcoco_cn",
            "refcocoplus_cn",
            "refcocog_cn",
            "ofa_cn_ocr",
        )
    }
    cards = [zoo.MODELS[n] for n in names]
    assert all(c.tokenizer == "chinese" and c.task_options["language"] == "zh" for c in cards)
    assert {tokenizer_source(c, c.name) for c in cards} == {CHINESE_VOCAB}
    assert sorted(c.task for c in cards).count("ocr") == 2 and zoo.list_models(
        "*ocr*", task="ocr"
    ) == [
        "ofa-cn-base_official-finetuned_ocr",
        "ofa-cn-large_official-finetuned_ocr",
    ]
    assert cli.main(["models", "ofa-*caption", "--json"]) == 0
    listing = {row["name"]: row["language"] for row in json.loads(capsys.readouterr().out)}
    assert listing["ofa-cn-base_official-finetuned_caption"] == "zh"
    assert listing["ofa-base_official-finetuned_caption"] == "en"
