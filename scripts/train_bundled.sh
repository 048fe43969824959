#!/usr/bin/env bash
# The exact commands that produced src/ofa_vl/assets/ofa-tiny_shapes, on a shared 2-core CPU with
# one torch thread. Stage 1 trains from scratch, stage 2 continues from it with a new schedule.
# A crashed stage continues with the same command plus --resume.
set -euo pipefail
DATA=${DATA:-/tmp/ofa_shapes/data}
OUT1=${OUT1:-/tmp/ofa_shapes/run}
OUT2=${OUT2:-/tmp/ofa_shapes/run2}
COMMON=(--task multitask --data "$DATA" --dropout 0.0 --label-smoothing 0.1
  --workers 1 --threads 1 --no-progress)
export OMP_NUM_THREADS=1

[ -f "$DATA/extras.jsonl" ] || python -c "from ofa_vl.data.shapes import write_shapes_dataset; write_shapes_dataset('$DATA', 5000, 200, seed=0, size=256)"

python -m ofa_vl.train "${COMMON[@]}" --out "$OUT1" --init shapes --image-size 128 \
  --interpolation bilinear --steps 560 --batch-size 32 --lr 1e-3 --warmup-ratio 0.06 \
  --seed 0 --save-every 50 --log-every 10

python -m ofa_vl.train "${COMMON[@]}" --out "$OUT2" --init "$OUT1" --steps 1300 --batch-size 16 \
  --lr 1e-3 --warmup-ratio 0.03 --seed 1 --save-every 100 --log-every 20

# the bundled folder: stage 2's weights stored as float16 (upcast to float32 on load) + its files
ASSETS=src/ofa_vl/assets/ofa-tiny_shapes
mkdir -p "$ASSETS"
python -c "from ofa_vl import checkpoints as c; c.save_pretrained(c.load_model('$OUT2').half(), '$ASSETS/model.safetensors')"
cp "$OUT2"/{tokenizer.json,ofa_tokenizer.json,pipeline.json} "$ASSETS/"
