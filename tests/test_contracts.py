"""The typed joints between the parts: decoding options (``GenerationConfig``), one preprocessing
for every entry point, and the CLI's split between user errors and bugs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ofa_vl.api import get_model
from ofa_vl.checkpoints import save_pretrained
from ofa_vl.cli import main
from ofa_vl.config import OFAConfig
from ofa_vl.errors import OFAValueError
from ofa_vl.generation import GenerationConfig
from ofa_vl.model import OFA
from ofa_vl.tokenizer import OFATokenizer

TINY = dict(
    embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2, resnet_layers=(1, 1, 1),
    resnet_width=8, max_positions=128, image_bucket_size=8,
)  # fmt: skip
MISSPELT = "nums_beams"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny OFA with the English BPE, 64 px, as a model folder."""
    folder = tmp_path_factory.mktemp("tiny")
    tok = OFATokenizer.english()
    torch.manual_seed(0)
    save_pretrained(OFA(OFAConfig(vocab_size=len(tok), **TINY)), folder / "model.safetensors")  # type: ignore[arg-type]
    tok.save_pretrained(folder)
    (folder / "pipeline.json").write_text(json.dumps({"image_size": 64}))
    return folder


def png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, "PNG")
    return buf.getvalue()


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ----------------------------------------------------------------------------- GenerationConfig
def test_generation_config_overlays_and_rejects_unknown_keys() -> None:
    base = GenerationConfig(num_beams=5, no_repeat_ngram_size=3)
    out = base.overlay({"num_beams": 2}, None, {"suppress_tokens": [1, 3]})
    assert (out.num_beams, out.no_repeat_ngram_size, out.suppress_tokens) == (2, 3, (1, 3))
    assert base.num_beams == 5  # frozen: overlays make new configs
    with pytest.raises(AttributeError):
        base.num_beams = 1  # type: ignore[misc]
    with pytest.raises(OFAValueError) as err:
        base.replace(**{MISSPELT: 2})
    assert f"unknown decoding option {MISSPELT}" in str(err.value)
    assert "num_beams" in str(err.value) and "\n" not in str(err.value)


def test_fairseq_length_rule() -> None:
    cfg = GenerationConfig(fairseq=True, max_len_a=0.5, max_len_b=2, max_new_tokens=99)
    assert cfg.new_tokens(7) == int(0.5 * 7 + 2) + 1  # then </s>
    assert GenerationConfig(max_new_tokens=9).new_tokens(7) == 9


def test_a_misspelt_decoding_option_is_one_line_in_api_cli_and_http(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png())
    pipe = get_model(tiny, device="cpu")
    with pytest.raises(OFAValueError) as err:  # the Python API
        pipe(str(image), **{MISSPELT: 2})
    api = one_line(str(err.value))
    status = main(["caption", str(image), "--model", str(tiny), "--decoding", f"{MISSPELT}=2"])
    cli = one_line(capsys.readouterr().err)
    assert status == 2 and cli.startswith("ofa: error: ")
    from fastapi.testclient import TestClient

    from ofa_vl.serve import ServeConfig, create_app, load_pipelines

    app = create_app({"tiny": load_pipelines(tiny, device="cpu")}, ServeConfig())
    with TestClient(app) as client:
        body = {"image": base64.b64encode(png()).decode(), "prompt": "what?", MISSPELT: 2}
        reply = client.post("/v1/generate", json=body)
    assert reply.status_code == 422
    http = one_line(reply.json()["error"]["message"])
    for line in (api, cli, http):  # names the bad key and the valid ones
        assert MISSPELT in line and "num_beams" in line and "max_new_tokens" in line, line


def test_pipeline_json_decoding_defaults_are_checked_when_loading(
    tiny: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = {"image_size": 64, "generation": {"num_beams": 3, "length_penalty": 0.5}}
    (folder / "pipeline.json").write_text(json.dumps(cfg))
    config = get_model(folder, device="cpu").decoding(num_beams=1)
    assert (config.num_beams, config.length_penalty) == (1, 0.5)  # task < pipeline.json < caller
    (folder / "pipeline.json").write_text(json.dumps({"generation": {MISSPELT: 3}}))
    with pytest.raises(OFAValueError, match=MISSPELT):
        get_model(folder, device="cpu")


# ----------------------------------------------------------------------------- CLI errors
def test_cli_user_error_is_one_line_and_a_bug_keeps_its_traceback(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png())
    args = ["caption", str(image), "--model", str(tiny), "--max-new-tokens", "2", "--beams", "1"]
    assert main([*args, "--device", "nowhere"]) == 2  # a user error: one line, exit 2
    assert one_line(capsys.readouterr().err).startswith("ofa: error: ")

    def shape_bug(*a: object, **k: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")

    monkeypatch.setattr("ofa_vl.model.OFA.encode", shape_bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # a bug: propagates
        main(args)


# ----------------------------------------------------------------------------- one preprocessing
def test_an_imagenet_task_gets_the_same_tensors_from_all_four_entry_points(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Classification with timm's mean/std through ``inference_model``, ``ofa test``'s loader,
    ``ofa serve``'s upload path and a training dataset: one tensor, ImageNet-normalised."""
    import numpy as np

    from ofa_vl.api import OFAPipeline, inference_model
    from ofa_vl.data.training import Example, TrainingDataset
    from ofa_vl.evaluate import _Images
    from ofa_vl.images import IMAGENET_MEAN, IMAGENET_STD, load_resized
    from ofa_vl.serve.service import prepare
    from ofa_vl.tasks.results import CaptionResult

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    pipe = get_model(tiny, device="cpu", task="classify", labels=["cat", "dog"],
                     normalization="imagenet")  # fmt: skip
    assert pipe.task.preprocessing.mean == IMAGENET_MEAN and pipe.task.image_size == 64
    seen: list[torch.Tensor] = []

    def capture(self: OFAPipeline, images: torch.Tensor, *args: object, **kw: object) -> list:
        seen.append(images[0])
        return [CaptionResult("")]

    monkeypatch.setattr(OFAPipeline, "predict_batch", capture)
    inference_model(pipe, str(path))
    api = seen[0]
    test = _Images([path], pipe.task.preprocessing)[0][1]  # type: ignore[index]
    serve = prepare(path.read_bytes(), pipe, 10**8, {})[0].pixels
    example = Example("classify", path, pipe.task.prompt(pipe.task.normalize({})), " cat")
    train = TrainingDataset([example], pipe.tokenizer, 0, preprocessing=pipe.task.preprocessing)
    for other in (test, serve, train[0]["image"]):
        assert torch.equal(api, other)
    raw, _ = load_resized(path, 64, "bicubic")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    assert torch.allclose(api, (raw.float() - mean) / std, atol=1e-5)  # not OFA's 0.5 / 0.5


def test_training_batches_use_the_init_models_mean_and_std(tiny: Path, tmp_path: Path) -> None:
    """A run from a model folder whose pipeline.json has ImageNet's mean / std trains on pixels
    normalised with them (as its inference reads them), and its own pipeline.json keeps them."""
    import shutil

    from ofa_vl.distributed import Dist
    from ofa_vl.images import IMAGENET_MEAN, IMAGENET_STD, OFA_MEAN
    from ofa_vl.shapes.world import write_shapes_dataset
    from ofa_vl.train import TrainConfig
    from ofa_vl.train.loop import setup

    init, data, out = tmp_path / "init", tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny, init)
    spec = {"image_size": 64, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    (init / "pipeline.json").write_text(json.dumps(spec))
    write_shapes_dataset(data, 2, 0, seed=0, size=64)
    cfg = TrainConfig(data=data, init=str(init), out=out, task="caption", steps=1, batch_size=2,
                      workers=0, no_progress=True)  # fmt: skip
    trainer = setup(cfg, Dist(), torch.device("cpu"))
    pipe = get_model(init, device="cpu", task="caption")
    assert pipe.task.preprocessing.mean == IMAGENET_MEAN != OFA_MEAN
    expected = [pipe.preprocess(p)[0] for p in sorted((data / "train2014").iterdir())]
    batch = next(trainer.batches)["images"]  # (B, 3, 64, 64)
    assert len(batch) == 2
    for image in batch:  # each is one of the images as inference reads it
        assert any(torch.equal(image, e) for e in expected)
    saved = json.loads((out / "pipeline.json").read_text())  # what the trained model reads
    assert saved == {**spec, "interpolation": "bilinear"}


# ----------------------------------------------------------------------------- typed results
def test_results_are_typed_and_carry_the_models_score(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png("blue"))
    pipe = get_model(tiny, device="cpu")
    (result,) = pipe.run([str(path)], num_beams=1, max_new_tokens=3)
    assert result.to_dict() == pipe(str(path), num_beams=1, max_new_tokens=3)  # no score in it
    pixels, _ = pipe.preprocess(str(path))
    ids = pipe.tokenizer([pipe.task.prompt(pipe.task.normalize({}))], return_tensors="pt")[
        "input_ids"
    ]
    config = pipe.decoding(num_beams=1, max_new_tokens=3)
    out = pipe.model.generate(ids, pixels[None], config=config, return_scores=True)
    assert result.score == pytest.approx(float(out.scores[0]))  # greedy: summed log-probs
    assert result.score is not None and result.score < 0
    itm = pipe.with_task("itm")
    (match,) = itm.run([str(path)], text="a blue image")
    assert set(match.candidates) == {"yes", "no"}
    assert match.score == max(match.candidates.values())


def test_tries_and_candidates_are_built_for_each_tokenizer_bound() -> None:
    """One task object bound to two vocabularies: each binding has its own tables (no cache
    filled by whichever tokenizer came first)."""
    from ofa_vl.data.training import build_word_tokenizer
    from ofa_vl.tasks import get_task

    english, words = OFATokenizer.english(), build_word_tokenizer(["yes no maybe"], num_bins=4)
    itm = get_task("itm")
    a, b = itm.bind(english).candidates, itm.bind(words).candidates
    assert a is not None and b is not None
    assert a.targets.tolist() == [
        [english.encode(" yes", False)[0], 2],
        [english.encode(" no", False)[0], 2],
    ]
    assert b.targets.tolist() == [
        [words.encode(" yes", False)[0], 2],
        [words.encode(" no", False)[0], 2],
    ]
    vqa = get_task("vqa", answers=["yes", "no"])
    assert vqa.bind(english).trie is not vqa.bind(english).trie  # built per binding
    assert get_task("vqa").bind(english).trie is None


def test_training_itm_prompt_is_the_inference_prompt(tmp_path: Path) -> None:
    """The matching example's text goes through the task's own cleaning (pre_caption)."""
    from ofa_vl.data.training import itm_examples
    from ofa_vl.tasks import TextFields, get_task
    from ofa_vl.text import pre_caption

    row = {
        "task": "itm",
        "split": "train",
        "image": "a.png",
        "text": "A Red-Circle",
        "answer": "yes",
    }
    (tmp_path / "extras.jsonl").write_text(json.dumps(row) + "\n")
    (example,) = itm_examples(tmp_path)
    task = get_task("itm")
    assert example.prompt == task.prompt(TextFields(pre_caption("A Red-Circle")))
    assert example.prompt == ' does the image describe " a red circle "?'


# --------------------------------------------------------------------------- a sample's life
def test_results_read_back_from_their_dicts() -> None:
    """``Result.from_dict`` inverts ``to_dict`` (and the ``as_dict`` of predictions.jsonl)."""
    from ofa_vl.tasks import results as r

    made = [
        r.CaptionResult("a dog", confidence=0.5),
        r.RegionCaptionResult([1.0, 2.0, 3.0, 4.0], "a cat"),
        r.GroundingResult("the dog", [[1.0, 2.0, 3.0, 4.0]], score=-1.5),
        r.BoxesResult([[0.0, 0.0, 1.0, 1.0]], ["dog"]),
        r.VQAResult("what?", "red"),
        r.TextResult("hello"),
        r.AskResult("say", "hi", [[0.0, 0.0, 1.0, 1.0]], ["x"]),
        r.ClassifyResult("dog", -0.1, [{"label": "dog", "score": -0.1}]),
        r.MatchResult("two dogs", True, 0.9),
        r.EntailmentResult("a dog", "yes", "entailment", {"entailment": -0.1}),
        r.GlueResult("yes", {"yes": -0.1, "no": -2.0}),
    ]
    for result in made:
        assert type(result).from_dict(result.as_dict()) == result
        assert type(result).from_dict(result.to_dict()).to_dict() == result.to_dict()


def test_a_folder_task_owns_its_columns_examples_and_metric() -> None:
    """Every task a folder line can name reads its columns, trains on them and is scored, each
    by its own class (a new task touches its module only)."""
    from ofa_vl.data.folder import FOLDER_TASKS
    from ofa_vl.metrics.tasks import METRICS
    from ofa_vl.tasks import TASKS, get_task
    from ofa_vl.tasks.samples import Sample

    row = {"caption": "A dog.", "text": "the dog", "box": [1, 2, 30, 40], "question": "what?",
           "answers": ["red", "red", "blue"], "label": "yes", "prompt": "say", "target": "hi"}  # fmt: skip
    assert sorted(FOLDER_TASKS) == ["ask", "caption", "classify", "itm", "refcoco",
                                    "region_caption", "vqa"]  # fmt: skip
    for name in FOLDER_TASKS:
        task = get_task(name)
        assert task.metric in METRICS and task.result_type is not None, name
        fields, truth = task.from_columns(row, (64, 48))
        (example,) = task.examples(Sample(0, Path("x.png"), fields, truth, name))
        assert example.task == name and example.image == Path("x.png")
        assert example.box is not None or example.target.strip(), name
    assert get_task("vqa").examples(Sample(0, Path("x.png"), {"question": "q"}, None)) == []
    assert not any(c.folder_columns for c in TASKS.values() if c.name not in FOLDER_TASKS)


def test_task_image_defaults_come_from_their_preprocess_config() -> None:
    from ofa_vl.images import Interpolation
    from ofa_vl.tasks import get_task

    assert get_task("refcoco").preprocessing.image_size == 512
    assert get_task("vqa").interpolation is Interpolation.BICUBIC
    assert get_task("caption").preprocessing.interpolation is Interpolation.BILINEAR
    given = get_task("vqa", image_size=64, interpolation="bilinear")
    assert (given.image_size, given.interpolation) == (64, Interpolation.BILINEAR)
    assert get_task("ocr", document=True).interpolation is Interpolation.OCR_DOCUMENT


def test_eval_config_fields_carry_their_flag_help_and_primary_metrics_are_the_published() -> None:
    import dataclasses

    from ofa_vl.evaluate import EvalConfig
    from ofa_vl.train.validation import primary_metric

    assert all(f.metadata.get("help") for f in dataclasses.fields(EvalConfig))
    # evaluate()'s 17 parameters, the typed task options (image size, answers, backend) for 1
    assert len(dataclasses.fields(EvalConfig)) == 20
    assert EvalConfig().generation == {} and EvalConfig().generation is not EvalConfig().generation
    assert [primary_metric(t) for t in ("caption", "region_caption", "refcoco", "vqa", "itm")] == [
        "CIDEr", "CIDEr", "Accuracy", "Accuracy", "Accuracy"
    ]  # fmt: skip
