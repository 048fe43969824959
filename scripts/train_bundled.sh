#!/usr/bin/env bash
# The exact commands that produced src/ofa_vl/assets/ofa-tiny_shapes (MODEL_CARD.md): one NVIDIA
# H100, shared with two other runs of a sweep; 6,000 steps x 128. The shipped weights are the
# EMA of the step-5,500 checkpoint (the lent GPU time ended at step 5,900). That run named
# --device cuda --threads 1 and WORKERS=5; without a GPU the command trains on the CPU
# (about 3.1 s a step on 2 cores: hours).
# A crashed or stopped run continues with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/ofa_shapes/data20k}
OUT=${OUT:-/tmp/ofa_shapes/bundled}
WORKERS=${WORKERS:-5}
# 20,000 training scenes of seed 0 (256 px)
[ -f "$DATA/extras.jsonl" ] ||
  ofa data shapes --out "$DATA" --train 20000 --val 200 --seed 0 --workers "$((WORKERS * 2))"

# from scratch (preset "shapes": entangled positions): the multitask mixture, grounding twice
TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 python -m ofa_vl train --task multitask --data "$DATA" \
  --out "$OUT" --init shapes --image-size 128 --interpolation bilinear --num-bins 256 \
  --repeat refcoco=2 --steps 6000 --batch-size 128 --lr 1e-3 --warmup-ratio 0.02 --dropout 0.0 \
  --label-smoothing 0.1 --ema 0.999 --seed 0 --save-every 500 --log-every 100 --cache-images \
  --workers "$WORKERS" --no-progress "$@"

# the bundled folder: the (EMA) weights stored as float16 (upcast to float32 on load) + their files
ASSETS=src/ofa_vl/assets/ofa-tiny_shapes
mkdir -p "$ASSETS"
python -c "from ofa_vl import checkpoints as c; c.save_pretrained(c.load_model('$OUT').half(), '$ASSETS/model.safetensors')"
cp "$OUT"/{tokenizer.json,ofa_tokenizer.json,pipeline.json} "$ASSETS/"
