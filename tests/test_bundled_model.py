"""The bundled ``ofa-tiny_shapes`` model: it really learned, measured the way users measure.

Metrics come from ``ofa_vl.evaluate.evaluate`` (what ``ofa test`` runs) on a freshly generated
held-out shapes set of a seed the model never saw; the thresholds sit a little under what the
model measured (``MODEL_CARD.md``). The same set checks that reduced precision (int8, bf16) stays
within a stated drop, and that cached and uncached decoding agree.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tolerance import assert_close_to

from ofa_vl import generation
from ofa_vl.api import OFAPipeline, get_model
from ofa_vl.checkpoints import load_model
from ofa_vl.evaluate import EvalConfig, evaluate
from ofa_vl.generation import generate
from ofa_vl.images import preprocess_batch
from ofa_vl.model.precision import apply_precision
from ofa_vl.shapes.world import shapes_vocabulary, write_shapes_dataset
from ofa_vl.tokenizer import OFATokenizer
from ofa_vl.zoo import DEFAULT_MODEL, PACKAGE_ASSETS

# tier: the whole module runs processes or trains (pyproject markers)
pytestmark = [pytest.mark.slow]

BUNDLED = PACKAGE_ASSETS / DEFAULT_MODEL
HELD_OUT_SEED = 4321  # trained on seed 0; the model card reports seed 1234
HELD_OUT_SCENES = 40
# measured on this set (see MODEL_CARD.md for 200 scenes of seed 1234); thresholds a little under
MIN = {"refcoco": 0.95, "vqav2": 0.92, "coco-caption": 5.4}  # measured 0.990, 0.958, 5.76
MIN_EXTRA = {"region_caption": 0.9, "itm": 0.75}  # measured 1.0 exact (chance 1/30), 0.85 (0.5)
EXTRA_LIMIT = 60
SPLITS = {"refcoco": "val", "vqav2": "val2014", "coco-caption": "val"}
METRIC = {"refcoco": "Accuracy", "vqav2": "Accuracy", "coco-caption": "CIDEr"}
# issue 16: each held-out metric within 0.5 point of fp32, a point being 1 on the 0-100 scale
# metrics are reported on: 0.005 for an accuracy in [0, 1] (one answer of 40 is 2.5 points, so
# this means "the same answers"), and 0.5 of CIDEr reported x100 (0.005 of CIDEr, run()'s unit).
# A caption opening changed between two templates the model learned equally ("one shape" for
# "there is", fp32 scores 5e-5 to 2e-3 apart) moves CIDEr 0.4-0.9 point, so this allows no more
# than about one such flip. Measured 2026-12-07 (40 scenes, AVX512-BF16 CPU): CIDEr fp32, bf16
# and int8 575.89, the same 40 captions (bf16 flipped a near-tie 2.7e-4 apart in fp32 until its
# attention biases stayed fp32); int8-legacy changes 4 openings, so it is held to the accuracies
# only (benchmarks/README.md).
MAX_DROP = {"Accuracy": 0.005, "CIDEr": 0.005}
PRECISION_LIMIT = 40  # bf16 is slow on CPUs without native bf16 (AVX2 here): keep it small


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("held_out")
    write_shapes_dataset(root, 0, HELD_OUT_SCENES, seed=HELD_OUT_SEED, size=256)
    return root


def run(dataset: str, data: Path, out: Path, precision: str = "fp32", **kw: Any) -> float:
    """One ``ofa test`` run of the bundled model; the metric as a fraction (CIDEr as is / 100)."""
    pipe = get_model(
        DEFAULT_MODEL, task="refcoco" if dataset == "refcoco" else None, precision=precision
    )
    if dataset != "refcoco":
        pipe = pipe.with_task("vqa" if dataset == "vqav2" else "caption")
    result = evaluate(
        pipe, EvalConfig(dataset, data, SPLITS[dataset], out=out, workers=0, progress=False, **kw)
    )
    return result.metrics[METRIC[dataset]] / 100


def test_bundled_files_and_size() -> None:
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "ofa_tokenizer.json",
        "pipeline.json",
        "MODEL_CARD.md",
    ):
        assert (BUNDLED / name).is_file(), name
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 25 * 2**20
    assert json.loads((BUNDLED / "pipeline.json").read_text())["interpolation"] == "bilinear"
    model = load_model(BUNDLED)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored fp16, upcast
    assert model.cfg.vocab_size == len(OFATokenizer.from_pretrained(BUNDLED))


def test_bundled_tokenizer() -> None:
    tok = OFATokenizer.from_pretrained(BUNDLED)
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id] == [0, 1, 2]
    assert tok.num_codes == 0 and tok.bin_offset == len(tok) - tok.num_bins
    unknown = 3  # every word the shapes world can say is in the vocabulary
    assert [w for w in shapes_vocabulary() if unknown in tok.encode(" " + w)] == []
    assert tok.decode(tok.encode(" a red circle")) == "a red circle"


@pytest.mark.parametrize("dataset", ["refcoco", "vqav2", "coco-caption"])
def test_bundled_model_metrics(held_out: Path, tmp_path: Path, dataset: str) -> None:
    score = run(dataset, held_out, tmp_path, limit=120)
    assert score >= MIN[dataset], (dataset, score)


@pytest.fixture(scope="module")
def fp32_score(held_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], float]:
    """A dataset's fp32 metric, measured once on first use."""

    @functools.cache
    def score(dataset: str) -> float:
        return run(dataset, held_out, tmp_path_factory.mktemp("fp32"), limit=PRECISION_LIMIT)

    return score


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "dataset"),
    [(p, d) for p in ("bf16", "int8") for d in SPLITS] + [("int8-legacy", "refcoco")],
)
def test_reduced_precision_metric_drop(
    held_out: Path, tmp_path: Path, fp32_score: Callable[[str], float], precision: str, dataset: str
) -> None:
    """Each held-out metric within 0.5 point of fp32's (MAX_DROP)."""
    low = run(dataset, held_out, tmp_path, precision=precision, limit=PRECISION_LIMIT)
    fp32 = fp32_score(dataset)
    assert low >= fp32 - MAX_DROP[METRIC[dataset]], (fp32, low)


def held_out_batch(
    pipe: OFAPipeline, held_out: Path, n: int, fields: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` held-out images, preprocessed, and the task's prompt ids for each."""
    images, _ = preprocess_batch(sorted((held_out / "val2014").iterdir())[:n], pipe.task.image_size)
    prompt = pipe.task.prompt(pipe.task.fields_of(fields))
    return pipe.tokenizer([prompt] * n, return_tensors="pt")["input_ids"], images


def test_bf16_keeps_the_stream_and_logits_fp32(held_out: Path) -> None:
    """``precision.cast_weights``: sublayers bf16, the residual stream and the logits fp32; the
    caption log-probs are closer to fp32's than with the whole model cast to bf16."""
    pipe = get_model(DEFAULT_MODEL, task="caption")
    ids, images = held_out_batch(pipe, held_out, 8, {})
    cast = apply_precision(copy.deepcopy(pipe.model), "bf16")
    whole = copy.deepcopy(pipe.model).to(torch.bfloat16)
    seen: list[torch.dtype] = []
    layer = cast.decoder.layers[0]
    layer.ffn_mid_ln.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.no_grad():
        captions = pipe.model.generate(ids, images)  # teacher-forced below: fp32's own captions
        ref = pipe.model(ids, images, captions).logits.log_softmax(-1)
        mixed = cast(ids, images.bfloat16(), captions).logits
        low = whole(ids, images.bfloat16(), captions).logits.float().log_softmax(-1)
    assert mixed.dtype == torch.float32 and seen == [torch.bfloat16, torch.float32]  # FFN, layer
    error, whole_error = (mixed.log_softmax(-1) - ref).abs().mean(), (low - ref).abs().mean()
    assert 0 < 2 * error < whole_error, (error, whole_error)


def test_bf16_steps_refine_the_candidates_the_search_keeps(
    held_out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bf16 step's logits come from the bf16 table, with the ``refined(num_beams)`` best
    allowed tokens recomputed from the fp32 copy (issue #30): the same beams and scores (within
    half of bf16's own distance to fp32, measured 0.29: only the tail's log-sum-exp is bf16; 0.14
    with the same tail, 8e-5, while bf16 rounded the attention biases) as exact logits for every
    token, and fp32's ids."""
    pipe = get_model(DEFAULT_MODEL)
    bf16 = apply_precision(copy.deepcopy(pipe.model), "bf16")
    decoder = bf16.decoder
    for task, fields in (("caption", {}), ("refcoco", {"text": "the red shape"})):
        task_pipe = pipe.with_task(task)
        ids, images = held_out_batch(task_pipe, held_out, 8, fields)
        config = task_pipe.decoding()
        fp32 = generate(pipe.model, ids, images, config=config)
        refined = generate(bf16, ids, images.bfloat16(), config=config)
        with monkeypatch.context() as m:  # every token exact: the logits before issue #30
            m.setattr(generation, "refined", lambda beams: decoder.cfg.vocab_size)
            exact = generate(bf16, ids, images.bfloat16(), config=config)
        assert torch.equal(refined.sequences, exact.sequences), task
        assert torch.equal(refined.sequences, fp32.sequences), task
        tail = (refined.scores - exact.scores).abs().max()  # the tail's bf16 log-sum-exp
        assert tail < 0.5 * (exact.scores - fp32.scores).abs().max(), (task, tail)
    with torch.inference_mode():  # refine = the fp32 table's logits at the tokens asked for
        enc = bf16.encode(ids, images.bfloat16())
        state = decoder.init_state(enc, 2, 4)
        approx = decoder.step(torch.zeros(16, 1, dtype=torch.long), state)[:, -1]
        tokens = approx.topk(5).indices
        exact_logits = decoder.project(state.hidden)
        assert_close_to(decoder.refine(state, tokens), exact_logits.gather(1, tokens))
        assert 0 < (approx - exact_logits).abs().max() < 0.05 * exact_logits.abs().max()


def test_cached_and_uncached_decoding_agree(held_out: Path) -> None:
    pipe = get_model(DEFAULT_MODEL)
    for task, fields in (("caption", {}), ("refcoco", {"text": "the red shape"})):
        task_pipe = pipe.with_task(task)
        ids, images = held_out_batch(task_pipe, held_out, 4, fields)
        config = task_pipe.task.generation
        cached = pipe.model.generate(ids, images, config=config)
        naive = pipe.model.generate(ids, images, config=config.replace(use_cache=False))
        assert torch.equal(cached, naive), task


def test_demo_command(tmp_path: Path) -> None:
    """The README's first command: offline, bundled model, a picture with the boxes."""
    out = tmp_path / "demo.png"
    done = subprocess.run(
        [sys.executable, "-m", "ofa_vl", "demo", "--scenes", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("caption:") == 2 and out.is_file()


def _extras(held_out: Path, task: str) -> list[dict[str, Any]]:
    lines = (held_out / "extras.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["task"] == task][:EXTRA_LIMIT]


def test_bundled_region_captions(held_out: Path) -> None:
    """Grounded captioning (issue 8): the box -> "a large yellow triangle"; exact-match rate."""
    rows = _extras(held_out, "region_caption")
    pipe = get_model(DEFAULT_MODEL, task="region_caption")
    out = pipe(
        [str(held_out / r["image"]) for r in rows], region=[r["box"] for r in rows], batch_size=32
    )
    exact = sum(o["pred_caption"] == r["text"] for o, r in zip(out, rows)) / len(rows)
    assert exact >= MIN_EXTRA["region_caption"], exact


def test_bundled_image_text_matching(held_out: Path) -> None:
    """ITM (``does the image describe "..."?``): accuracy on the world's matched / mismatched pairs."""
    rows = _extras(held_out, "itm")
    assert {r["answer"] for r in rows} == {"yes", "no"}
    pipe = get_model(DEFAULT_MODEL, task="itm")
    out = pipe([str(held_out / r["image"]) for r in rows], text=[r["text"] for r in rows])
    accuracy = sum(o["match"] == (r["answer"] == "yes") for o, r in zip(out, rows)) / len(rows)
    assert accuracy >= MIN_EXTRA["itm"], accuracy
