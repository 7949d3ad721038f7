#!/usr/bin/env bash
# The main jobs, from a fresh clone: install the stack, generate a synthetic
# COCO-format dataset, train on it with tools/train.py and evaluate the
# checkpoint with tools/test.py.
#   bash tools/demo.sh        detection: Faster R-CNN with ODConv everywhere
#                             in its ResNet-18; prints COCO box AP
#                             (WORK_DIR=work_dirs/demo by default)
#   bash tools/demo.sh pose   keypoints: DY-MobileNetV2 x0.5, Dynamic
#                             Convolution in backbone and head; prints COCO
#                             keypoint AP, of the untrained model first
#                             (WORK_DIR=work_dirs/demo_pose by default)
set -euo pipefail
MODE=${1:-detection}
if [ "$MODE" != detection ] && [ "$MODE" != pose ]; then
  echo "usage: bash tools/demo.sh [detection|pose]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/install.sh
PY=${DYNCONV_MM_VENV:-$ROOT/.venv}/bin/python
start=$(date +%s)

if [ "$MODE" = detection ]; then
  CONFIG=configs/odconv/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco.py
  WORK_DIR=${WORK_DIR:-work_dirs/demo}
  "$PY" tools/generate_synthetic_coco.py data/synthetic_coco \
    --num-train 128 --num-val 32 --seed 0
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
  "$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
    --work-dir "$WORK_DIR"
else
  CONFIG=configs/pose/demo/td-hm_mobilenetv2-x0.5_dy-both
  CONFIG=${CONFIG}_synthetic-coco-128x96.py
  WORK_DIR=${WORK_DIR:-work_dirs/demo_pose}
  "$PY" tools/generate_synthetic_coco.py data/synthetic_coco_keypoints \
    --preset keypoints --num-train 256 --num-val 64 --seed 0
  # The same model untrained (same seed, same initialisation scheme), to
  # compare against: its keypoint AP is what guessing gives.
  "$PY" - "$CONFIG" "$WORK_DIR/untrained" <<'PYTHON'
import sys

from dynconv_mm.engine import build_runner, load_run_config

cfg = load_run_config(sys.argv[1], sys.argv[2])
cfg.default_hooks.checkpoint.save_best = None  # nothing trained to keep
runner = build_runner(cfg)
runner.model.init_weights()
ap = runner.val()['coco/AP']
print(f'keypoint AP of the untrained model: {ap:.4f}')
with open(sys.argv[2] + '/coco_AP.txt', 'w') as f:
    f.write(f'{ap:.4f}\n')
PYTHON
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
  "$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
    --work-dir "$WORK_DIR" 2>&1 | tee "$WORK_DIR/test.log"
  trained=$(grep -o 'coco/AP: [0-9.]*' "$WORK_DIR/test.log" | tail -1 |
    cut -d' ' -f2)
  printf 'keypoint AP (COCO OKS, 64 held-out synthetic images, ground-truth'
  printf ' boxes): untrained %s, trained %.4f\n' \
    "$(cat "$WORK_DIR/untrained/coco_AP.txt")" "$trained"
fi
echo "demo finished in $(( $(date +%s) - start )) s (after install);" \
  "logs and checkpoints in $WORK_DIR"
