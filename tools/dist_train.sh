#!/usr/bin/env bash
# Distributed training with torch.distributed (one process per GPU; on a
# machine without GPUs, processes on the CPU with the gloo backend).
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -euo pipefail
CONFIG=$1
NPROCS=$2
shift 2
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROCS" \
  "$TOOLS/train.py" "$CONFIG" --launcher pytorch "$@"
