"""ONNX export and the onnxruntime backend (issue 29): the exported graphs compute PyTorch's
numbers to float round-off, and the same decoding engine driving them gives the same ids.

Each module fixture exports once (the dynamo exporter takes tens of seconds per graph).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from conftest import MMP_CKPT
from test_bundled_model import HELD_OUT_SCENES, HELD_OUT_SEED, held_out_batch
from test_serve import scene_png
from tolerance import assert_close_to

from ofa_vl import OFA, OFAConfig
from ofa_vl.api import OFAPipeline, get_model
from ofa_vl.checkpoints import load_model
from ofa_vl.cli import main
from ofa_vl.evaluate import PREDICTIONS, EvalConfig, evaluate
from ofa_vl.generation import GenerationConfig, generate
from ofa_vl.onnx.export import export_onnx, quantize_graphs
from ofa_vl.onnx.graphs import DECODER_FILE, ENCODER_FILE, FORMAT
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.tasks import get_task
from ofa_vl.tokenizer import CHINESE_VOCAB, CHINESE_VOCAB_SIZE, OFATokenizer
from ofa_vl.zoo import DEFAULT_MODEL, PACKAGE_ASSETS

pytestmark = [pytest.mark.slow]  # every test stands on an export

SPLITS = {"refcoco": "val", "vqav2": "val2014", "coco-caption": "val"}


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(DEFAULT_MODEL, tmp_path_factory.mktemp("onnx") / "tiny")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("held_out")
    write_shapes_dataset(root, 0, HELD_OUT_SCENES, seed=HELD_OUT_SEED, size=256)
    return root


def _answers(held_out: Path) -> list[str]:
    """Every answer of the held-out VQA annotations: the answer trie."""
    anns = json.loads((held_out / "annotations/v2_mscoco_val2014_annotations.json").read_text())
    return sorted({a["answer"] for q in anns["annotations"] for a in q["answers"]})


def _predictions(pipe: OFAPipeline, dataset: str, data: Path, out: Path) -> list[dict[str, Any]]:
    """``ofa test``'s records of every held-out sample."""
    evaluate(pipe, EvalConfig(dataset, data, SPLITS[dataset], out=out, workers=0, progress=False))
    return [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]


def assert_same_results(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> None:
    """Results equal: ids, boxes, captions and answers exactly, ``score`` and ``confidence``
    (floats of the two runtimes' kernels) to round-off."""
    floats = ("score", "confidence")
    assert [{k: v for k, v in r.items() if k not in floats} for r in ours] == [
        {k: v for k, v in r.items() if k not in floats} for r in ref
    ]
    for key in floats:
        values = [[r[key] for r in rows if r.get(key) is not None] for rows in (ours, ref)]
        assert len(values[0]) == len(values[1])
        if values[1]:
            assert_close_to(torch.tensor(values[0]), torch.tensor(values[1]), what=key)


def test_the_folder_is_a_complete_model(bundled_onnx: Path) -> None:
    names = sorted(p.name for p in bundled_onnx.iterdir())
    assert names == sorted([ENCODER_FILE, DECODER_FILE, "MODEL_CARD.md", "pipeline.json",
                            "tokenizer.json", "ofa_tokenizer.json"])  # fmt: skip
    bundled = PACKAGE_ASSETS / DEFAULT_MODEL
    assert (bundled_onnx / "pipeline.json").read_text() == (bundled / "pipeline.json").read_text()
    text = " a small red circle and a large blue square"
    tok, ours = OFATokenizer.from_pretrained(bundled), OFATokenizer.from_pretrained(bundled_onnx)
    assert tok.encode(text) == ours.encode(text) and len(tok) == len(ours)
    cfg = load_model(bundled).cfg
    for graph in (ENCODER_FILE, DECODER_FILE):
        proto = onnx.load(str(bundled_onnx / graph))
        onnx.checker.check_model(proto, full_check=True)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["format"] == FORMAT and OFAConfig.from_dict(json.loads(meta["config"])) == cfg
    assert "## ONNX export" in (bundled_onnx / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("dataset", SPLITS)
def test_onnxruntime_gives_pytorchs_predictions(
    bundled_onnx: Path, held_out: Path, tmp_path: Path, dataset: str
) -> None:
    """The 40 held-out scenes through ``ofa test``'s path: every caption (beam 5), box and
    answer (beam 5 in the answer trie) equal."""
    task = {"refcoco": "refcoco", "vqav2": "vqa", "coco-caption": "caption"}[dataset]
    records = []
    for name, backend in ((DEFAULT_MODEL, "torch"), (bundled_onnx, "onnxruntime")):
        pipe = get_model(name, task=task, backend=backend)
        if task == "vqa":
            pipe = pipe.with_task("vqa", answers=_answers(held_out))
            assert pipe.bind().trie is not None
        assert pipe.decoding().num_beams == 5
        records.append(_predictions(pipe, dataset, held_out, tmp_path / backend))
    ref, ours = records
    assert len(ref) >= HELD_OUT_SCENES
    assert_same_results(ours, ref)


def test_greedy_ids_and_kv_cached_logits(bundled_onnx: Path, held_out: Path) -> None:
    """Greedy captions of the held-out scenes: the same ids; and step by step, with beams
    reordered and a group leaving, the logits to round-off."""
    torch_pipe = get_model(DEFAULT_MODEL)
    onnx_pipe = get_model(bundled_onnx, backend="onnxruntime")
    ids, images = held_out_batch(torch_pipe, held_out, HELD_OUT_SCENES, {})
    config = GenerationConfig(num_beams=1)
    ref = generate(torch_pipe.model, ids, images, config=config)
    ours = generate(onnx_pipe.model, ids, images, config=config)
    assert torch.equal(ours.sequences, ref.sequences)
    assert_close_to(ours.scores, ref.scores, what="greedy log-probs")
    B, G, T = 3, 2, ref.sequences.shape[1]
    states = []
    for model in (torch_pipe.model, onnx_pipe.model):
        enc = model.encode(ids[:B], images[:B])
        states.append((model, model.decoder.init_state(enc, G, T)))
    tokens = ref.sequences[:B].repeat_interleave(G, 0)  # (B * G, T)
    for t in range(T - 1):
        with torch.no_grad():
            logits = [m.decoder.step(tokens[:, t : t + 1], s) for m, s in states]
        assert_close_to(logits[1], logits[0], what=f"step {t} logits")
        # the beams of each image swap; after step 2 image 1 leaves (its sentence is done)
        keep = (
            torch.tensor([0, 1, 4, 5])
            if t == 2
            else torch.arange(len(tokens)).view(-1, 2).flip(1).reshape(-1)
        )
        for _, s in states:
            s.reorder(keep)
        tokens = tokens[keep]


def test_teacher_forced_scoring_and_the_cli(
    bundled_onnx: Path, held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decoder's teacher-forced call (candidate scoring) equals PyTorch's before the pads;
    ``ofa caption`` and ``ofa test`` with ``--backend onnxruntime`` give PyTorch's results."""
    torch_pipe = get_model(DEFAULT_MODEL)
    onnx_pipe = get_model(bundled_onnx, backend="onnxruntime")
    ids, images = held_out_batch(torch_pipe, held_out, 4, {})
    seqs = torch_pipe.model.generate(ids, images)
    assert isinstance(seqs, torch.Tensor)
    with torch.no_grad():
        ref = torch_pipe.model(ids, images, seqs).logits
    ours = onnx_pipe.model.decoder(seqs, onnx_pipe.model.encode(ids, images))
    before_pad = seqs.ne(1)
    assert before_pad.sum() < before_pad.numel()  # some rows are padded
    assert_close_to(ours[before_pad], ref[before_pad], what="teacher-forced logits")
    files = [str(p) for p in sorted((held_out / "val2014").iterdir())[:3]]
    outputs = []
    for model, backend in ((DEFAULT_MODEL, "torch"), (str(bundled_onnx), "onnxruntime")):
        assert main(["caption", *files, "--model", model, "--backend", backend, "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert_same_results(outputs[1], outputs[0])
    runs = []
    for model, backend in ((DEFAULT_MODEL, "torch"), (str(bundled_onnx), "onnxruntime")):
        out = tmp_path / backend
        argv = ["test", model, "--backend", backend, "--dataset", "refcoco", "--split", "val",
                "--data-root", str(held_out), "--limit", "6", "--workers", "0", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
        runs.append([json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()])
    assert len(runs[0]) == 6
    assert_same_results(runs[1], runs[0])


def test_ofa_serve_on_onnxruntime(bundled_onnx: Path) -> None:
    """``ofa serve --backend onnxruntime``: the service answers PyTorch's caption and box."""
    from fastapi.testclient import TestClient

    from ofa_vl.serve import ServeConfig, create_app, load_pipelines

    png = scene_png(3)
    answers = []
    for model, backend in ((DEFAULT_MODEL, "torch"), (bundled_onnx, "onnxruntime")):
        pipes = load_pipelines(model, backend=backend)
        with TestClient(create_app({"m": pipes}, ServeConfig())) as client:
            files = {"image": ("scene.png", png, "image/png")}
            replies = [client.post("/v1/caption", files=files),
                       client.post("/v1/grounding", files=files, data={"text": "the red shape"})]  # fmt: skip
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        answers.append([r.json() for r in replies])
    assert_same_results(answers[1], answers[0])


def test_int8_quantizes_the_matmuls_and_keeps_the_answers(
    bundled_onnx: Path, held_out: Path, tmp_path: Path
) -> None:
    """``--quantize int8``: the weight MatMuls become integer ones; the held-out grounding and
    trie-constrained VQA accuracies within 0.5 point of fp32's (benchmarks/README.md)."""
    int8 = tmp_path / "int8"
    shutil.copytree(bundled_onnx, int8)
    quantize_graphs(int8)
    ops = {n.op_type for n in onnx.load(str(int8 / DECODER_FILE)).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert (int8 / DECODER_FILE).stat().st_size < 0.5 * (bundled_onnx / DECODER_FILE).stat().st_size
    for dataset, task in (("refcoco", "refcoco"), ("vqav2", "vqa")):
        scores = []
        for folder in (bundled_onnx, int8):
            pipe = get_model(folder, task=task, backend="onnxruntime")
            assert pipe.precision == ("int8" if folder == int8 else "fp32")
            if task == "vqa":
                pipe = pipe.with_task("vqa", answers=_answers(held_out))
            result = evaluate(
                pipe,
                EvalConfig(
                    dataset,
                    held_out,
                    SPLITS[dataset],
                    out=tmp_path / f"{folder.name}{dataset}",
                    workers=0,
                    progress=False,
                ),
            )
            scores.append(result.metrics["Accuracy"])
        assert scores[1] >= scores[0] - 0.5, (dataset, scores)  # test_bundled_model's MAX_DROP


@pytest.fixture(scope="session")  # session: the golden params would rebuild a module one
def fixture_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(get_model(MMP_CKPT, image_size=64), tmp_path_factory.mktemp("fx") / "fx")


def test_fixture_checkpoint_logits_and_reference_ids(
    fixture_onnx: Path, fixture_model, golden
) -> None:
    """The golden fixture (ResNet-50 stages, 59,457 tokens): encoder states and teacher-forced
    logits to float round-off of PyTorch's; greedy and beam-5 ids those of the reference."""
    onnx_model = get_model(fixture_onnx, backend="onnxruntime").model
    i = golden["inputs"]
    enc = onnx_model.encode(i["input_ids"], i["images"], i["images_mask"])
    with torch.no_grad():
        ref = fixture_model.encode(i["input_ids"], i["images"], i["images_mask"])
        logits = fixture_model(i["input_ids"], i["images"], i["decoder_input_ids_nopad"], i["images_mask"]).logits  # fmt: skip
    assert_close_to(enc.last_hidden_state, ref.last_hidden_state, what="encoder states")
    assert torch.equal(enc.padding_mask, ref.padding_mask)
    ours = onnx_model.decoder(i["decoder_input_ids_nopad"], enc)
    assert_close_to(ours, logits, what="teacher-forced logits")
    for mode in ("greedy", "beam5"):
        g = golden["generate"][mode]
        kwargs = {k: v for k, v in g["kwargs"].items() if k != "use_cache"}
        out = generate(onnx_model, i["input_ids"], i["images"], config=GenerationConfig(**kwargs))
        assert torch.equal(out.sequences, g["sequences"]), mode


def _random_cn_pipeline() -> OFAPipeline:
    """A small random OFA with OFA-CN's 30,325-token vocabulary and its tokenizer."""
    torch.manual_seed(0)
    cfg = OFAConfig(embed_dim=32, encoder_layers=1, decoder_layers=1, num_heads=2,
                    resnet_layers=(1, 1, 1), resnet_width=8, vocab_size=CHINESE_VOCAB_SIZE)  # fmt: skip
    model = OFA(cfg).eval()
    model.init_weights()
    tok = OFATokenizer.from_pretrained(CHINESE_VOCAB)
    return OFAPipeline(model, tok, get_task("caption", image_size=64), name="ofa-cn-random")


def test_cn_vocabulary_export_is_byte_stable(tmp_path: Path) -> None:
    """OFA-CN's vocabulary exports, runs to round-off of PyTorch, and two exports are the same
    bytes, file for file."""
    pipe = _random_cn_pipeline()
    first, second = export_onnx(pipe, tmp_path / "a"), export_onnx(pipe, tmp_path / "b")
    for path in sorted(first.iterdir()):
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name
    onnx_model = get_model(first, backend="onnxruntime").model
    assert onnx_model.cfg.vocab_size == CHINESE_VOCAB_SIZE
    ids = pipe.tokenizer(["图片描述了什么?"], return_tensors="pt")["input_ids"]
    images = torch.randn(1, 3, 64, 64)
    dec = torch.tensor([[0, 5, 6, 7]])
    with torch.no_grad():
        ref = pipe.model(ids, images, dec).logits
    ours = onnx_model.decoder(dec, onnx_model.encode(ids, images))
    assert ours.shape[-1] == CHINESE_VOCAB_SIZE
    assert_close_to(ours, ref, what="CN logits")
