"""The held-out quality table of every precision: the bundled model's metrics and how many of its
answers change against fp32 (issue #30's quality gate).

    python benchmarks/precision_quality.py                       # fp32 bf16 int8 int8-legacy
    python benchmarks/precision_quality.py --precision int8 --scenes 40

40 held-out scenes of seed 4321 (as ``tests/test_bundled_model.py``), scored by ``ofa test``'s
``evaluate``: refcoco Acc, VQA Acc, CIDEr (x100, needs Java), and the boxes, answers and captions
that differ from fp32's. Its captions hold near-ties between two templates the model learned
equally (fp32 scores 5e-5 to 2e-3 apart), so any error of a reduced precision shows up as
changed captions long before it moves a metric. The row ``fp32 unpacked`` is fp32 without
oneDNN's prepacked Linears (``OFA_VL_PREPACK=0``, ``ofa_vl.model.linear``): the ids packing may
change in fp32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from ofa_vl.api import get_model
from ofa_vl.evaluate import EvalConfig, evaluate
from ofa_vl.model import linear as linear_module
from ofa_vl.model.precision import PRECISIONS
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.zoo import DEFAULT_MODEL

HELD_OUT_SEED = 4321
# dataset -> (task, split, metric, the prediction field compared)
RUNS = {
    "refcoco": ("refcoco", "val", "Accuracy", "pred_bboxes"),
    "vqav2": ("vqa", "val2014", "Accuracy", "pred_answer"),
    "coco-caption": ("caption", "val", "CIDEr", "pred_caption"),
}


def unpacked(precision: str, data: Path, out: Path, limit: int) -> dict[str, tuple[float, list]]:
    """:func:`score` with oneDNN's prepacked Linears turned off."""
    prepack, linear_module.PREPACK = linear_module.PREPACK, False
    try:
        return score(precision, data, out / "unpacked", limit)
    finally:
        linear_module.PREPACK = prepack


def score(precision: str, data: Path, out: Path, limit: int) -> dict[str, tuple[float, list]]:
    """dataset -> (its metric, the predictions in sample order) for one precision."""
    results = {}
    for dataset, (task, split, metric, key) in RUNS.items():
        pipe = get_model(DEFAULT_MODEL, task=task, precision=precision)
        config = EvalConfig(
            dataset, data, split, out=out / precision / dataset, workers=0, progress=False,
            limit=limit,
        )  # fmt: skip
        report = evaluate(pipe, config)
        rows = [json.loads(line) for line in Path(report.predictions).read_text().splitlines()]
        results[dataset] = (report.metrics[metric], [r.get(key) for r in rows])
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ofa-quality-") as tmp:
        root = Path(tmp)
        write_shapes_dataset(root / "data", 0, args.scenes, seed=HELD_OUT_SEED, size=256)
        fp32 = score("fp32", root / "data", root, args.scenes)
        print(
            "| precision | refcoco Acc | VQA Acc | CIDEr (x100) | changed: boxes / answers / captions |"
        )
        print("|---|---|---|---|---|")
        rows = ["fp32 unpacked", *args.precision]
        for precision in rows:
            if precision == "fp32 unpacked":
                got = unpacked("fp32", root / "data", root, args.scenes)
            else:
                got = (
                    fp32
                    if precision == "fp32"
                    else score(precision, root / "data", root, args.scenes)
                )
            changed = [
                sum(a != b for a, b in zip(fp32[d][1], got[d][1], strict=True)) for d in RUNS
            ]
            metrics = " | ".join(f"{got[d][0]:.2f}" for d in RUNS)
            n = [len(got[d][1]) for d in RUNS]
            print(
                f"| {precision} | {metrics} | "
                + " / ".join(f"{c} of {k}" for c, k in zip(changed, n))
                + " |"
            )


if __name__ == "__main__":
    main()
