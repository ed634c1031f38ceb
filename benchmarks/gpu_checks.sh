#!/usr/bin/env bash
# The GPU checks of issue 14 (part 7) in one run, for a machine with one CUDA GPU and PyTorch
# (no Ray, MLflow or Hydra needed: trm_core and its tests need only torch, numpy, pytest):
#
#     OUT=/tmp/gpu bash benchmarks/gpu_checks.sh          # from the repository root
#
# 1. CUDA correctness: tests/test_cuda.py (bf16 steps track fp32 CPU steps, compiled step,
#    checkpoint CUDA -> CPU) and the data-parallel tests on gloo.
# 2. Throughput and MFU (benchmarks/train_step.py): trm_mlp, trm_att, hrm on Sudoku at batch
#    768, bf16, compile off and on; ARC shape for trm_att (the paper's ARC model).
# 3. NCCL data parallel on the GPUs there are (benchmarks/data_parallel.py).
# Every command has its own time limit, so one hang costs its slot, not the run; results go to
# $OUT/summary.txt. Budget: about 8 minutes on an H100/H200.
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
run() {  # run LIMIT_S COMMAND...: its output into summary.txt, its exit status noted
    local limit=$1; shift
    log "$*"
    timeout "$limit" "$@" 2>&1 | tail -n 40 | tee -a "$OUT/summary.txt"
    log "exit ${PIPESTATUS[0]}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    | tee "$OUT/summary.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/summary.txt"

run 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_distributed.py

for preset in trm_mlp trm_att hrm; do
    for compile in off on; do
        run 150 $PY benchmarks/train_step.py --device cuda --preset "$preset" --task sudoku \
            --batch 768 --dtype bfloat16 --compile "$compile" --steps 10 --warmup 3
    done
done
run 150 $PY benchmarks/train_step.py --device cuda --preset trm_att --task arc --batch 768 \
    --dtype bfloat16 --compile off --steps 5 --warmup 2

gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
run 120 $PY benchmarks/data_parallel.py --device cuda --dtype bfloat16 --batch 768 \
    --workers $(seq 1 "$gpus")
