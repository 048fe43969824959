#!/usr/bin/env bash
# The exact commands that produced src/ofa_vl/assets/ofa-tiny_shapes (2-core CPU, 2 torch threads).
# A crashed run continues with the same command plus --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/ofa_shapes/data}
OUT=${OUT:-/tmp/ofa_shapes/run5}
[ -f "$DATA/extras.jsonl" ] || ofa data shapes --out "$DATA" --train 5000 --val 200 --seed 0

# from scratch (preset "shapes": entangled positions), the ResNet first pretrained on per-patch
# labels (--backbone-steps), then the multitask mixture with grounding oversampled
python -m ofa_vl train --task multitask --data "$DATA" --out "$OUT" --init shapes --image-size 128 \
  --interpolation bilinear --num-bins 256 --repeat refcoco=2 --backbone-steps 600 --steps 4800 \
  --batch-size 32 --lr 1e-3 --warmup-ratio 0.02 --dropout 0.0 --label-smoothing 0.1 --workers 0 \
  --threads 2 --seed 0 --save-every 200 --log-every 20 --no-progress "$@"

# the bundled folder: the weights stored as float16 (upcast to float32 on load) + their files
ASSETS=src/ofa_vl/assets/ofa-tiny_shapes
mkdir -p "$ASSETS"
python -c "from ofa_vl import checkpoints as c; c.save_pretrained(c.load_model('$OUT').half(), '$ASSETS/model.safetensors')"
cp "$OUT"/{tokenizer.json,ofa_tokenizer.json,pipeline.json} "$ASSETS/"
