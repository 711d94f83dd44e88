#!/usr/bin/env bash
# Every GPU measurement of issue 11 in one call (the device tool's $OUT collects the logs and JSON):
#   bash benchmarks/gpu_search.sh        # on a machine with one GPU and 16 cores
# Optuna is carried as wheels in .whl/ (the device image has torch but not optuna).
set -u
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PY:-python3}
if ! $PY -c "import optuna" 2>/dev/null; then $PY -m pip install -q --no-deps .whl/*.whl; fi
nvidia-smi -L; $PY -c "import torch, optuna; print(torch.__version__, optuna.__version__)"
timeout 60 $PY benchmarks/trial_cost.py --device cuda --n 3 2>&1 | tee "$OUT/trial_cost.log"
# the two benchmarks share the GPU: 6 + 10 worker processes
# HORIZON=10 measures the budget that trains the first tenth of the 10x run (--horizon)
timeout ${T_BENCH:-400} $PY benchmarks/proxy_fidelity.py --device cuda --workers 6 --horizon ${HORIZON:-1} \
    --out "$OUT/proxy.json" > "$OUT/proxy.log" 2>&1 &
timeout ${T_BENCH:-400} $PY benchmarks/search_trained.py --device cuda --workers 10 --horizon ${HORIZON:-1} \
    --out "$OUT/search.json" > "$OUT/search.log" 2>&1 &
wait
tail -30 "$OUT/proxy.log"; tail -12 "$OUT/search.log"
