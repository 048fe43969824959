"""The reference's speed: mmpretrain 1.2.0's OFA-base caption, timed as ``bench_generate.py`` times
ofa-vl (random weights, 480 px, beam 5, exactly ``--new-tokens`` new tokens), to put its rows
against the reference in one sitting.

Runs in the reference virtualenv only (``../shared/reference``; never needed by the tests):

    $REFENV/bin/python benchmarks/bench_reference.py --threads 2

The network comes from mmpretrain's own ``ofa-base_finetuned_caption.py`` config and runs through
``OFAEncoderDecoder.generate`` (HF transformers 4.28 beam search), the call its ``predict`` makes.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

# PyPI's torchvision 0.28 is a CUDA build whose compiled ops do not load against the CPU torch;
# OFA never uses them (scripts/goldens/README.md): skip its op registrations.
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import mmpretrain  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402

BPE = Path(__file__).resolve().parents[1] / "src" / "ofa_vl" / "assets" / "ofa-bpe"
CONFIG = (
    Path(mmpretrain.__file__).parent / ".mim" / "configs" / "ofa" / "ofa-base_finetuned_caption.py"
)
PROMPT = [0, 99, 473, 5, 2274, 6190, 116, 2]  # " what does the image describe?", as bench_generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--image-size", type=int, default=480)
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=20)
    p.add_argument("--reps", type=int, default=1, help="timed runs after a warm-up (best kept)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.tokenizer = {"type": "OFATokenizer", "name_or_path": str(BPE)}
    model = MODELS.build(cfg.model).eval()
    gen = {
        "num_beams": args.beams,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "no_repeat_ngram_size": 0,  # bench_generate's rows have none either
    }
    print(f"mmpretrain {mmpretrain.__version__}, torch {torch.__version__}, {args.threads} threads")
    print(f"{'B':>2s} {'s/img':>8s} {'new tokens':>10s}")
    for batch in args.batch_sizes:
        torch.manual_seed(1)
        images = torch.randn(batch, 3, args.image_size, args.image_size).clamp(-1, 1)
        ids = torch.tensor([PROMPT] * batch)
        best = float("inf")
        with torch.inference_mode():
            for rep in range(args.reps + 1):  # the first is a warm-up
                t = time.perf_counter()
                out = model.model.generate(input_ids=ids, images=images, **gen)
                if rep:
                    best = min(best, time.perf_counter() - t)
        print(f"{batch:2d} {best / batch:8.3f} {out.shape[1] - 1:10d}", flush=True)


if __name__ == "__main__":
    main()
