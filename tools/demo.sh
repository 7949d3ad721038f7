#!/usr/bin/env bash
# The main job, from a fresh clone: install the stack, generate a synthetic
# COCO-format dataset, train Faster R-CNN with ODConv everywhere in its
# ResNet-18 on it with tools/train.py, and evaluate the checkpoint with
# tools/test.py, which prints COCO box AP.
#   bash tools/demo.sh            (WORK_DIR=work_dirs/demo by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/install.sh
PY=${DYNCONV_MM_VENV:-$ROOT/.venv}/bin/python
CONFIG=configs/odconv/faster-rcnn_r18-slim-odconv_fpn_synthetic-coco.py
WORK_DIR=${WORK_DIR:-work_dirs/demo}
start=$(date +%s)

"$PY" tools/generate_synthetic_coco.py data/synthetic_coco \
  --num-train 128 --num-val 32 --seed 0
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
"$PY" tools/test.py "$CONFIG" "$(cat "$WORK_DIR/last_checkpoint")" \
  --work-dir "$WORK_DIR"
echo "demo finished in $(( $(date +%s) - start )) s (after install);" \
  "logs and checkpoints in $WORK_DIR"
