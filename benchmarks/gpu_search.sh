#!/usr/bin/env bash
# The GPU measurements issue 11 still owes, as device calls of under 10 min each on an H100:
#   bash benchmarks/gpu_search.sh                 # PART=samplers (default)
#   PART=pruning bash benchmarks/gpu_search.sh
#   PART=noise SEARCH_JSON=FILE bash benchmarks/gpu_search.sh   # FILE: the first part's search.json (commit it
#       or carry it: a fresh device call has no runs/); a cut run goes on where it stopped (--resume into $OUT)
# PART=samplers: `archlab search --gpus all` (one worker per GPU on one study, a 4-trial smoke
#   run, <= 90 s), then search_trained.py at BUDGET (default `--epochs 16 --horizon 2.5 --factor 2.5`:
#   the first 16 epochs of the 40-epoch schedule, bests re-trained for 40): reinforce, tpe,
#   evolution, random, 5 seeds x 30 trials. Why this budget (benchmarks/README.md,
#   reward_noise.py on the H100 run's 28 bests at 1,024 images, on the CPU): the first E epochs of
#   one seed's 40-epoch run rank them against another seed's 40-epoch mIoU at Kendall tau 0.22 (E=4),
#   0.22 (8), 0.42 (12), 0.63 (16), 0.71 (40, the ceiling); the default 4 epochs at horizon 1, -0.01;
#   horizon 10, 0.11; 8 epochs at horizon 5, 0.30. A budget that cannot rank the top cannot show a
#   sampler above random. At 16 epochs a seed (4 studies) should take ~5 min of an H100 with 16
#   processes (estimated from ~8 s a 4-epoch trial), so a 10-min call keeps about 2 seeds: run the rest with
#   SEARCH_ARGS="--first-seed 2 --seeds 3" into another OUT (search_trained.py --table reads one file).
# PART=pruning: random with and without successive halving at --epochs 8 --horizon 5 (rungs at
#   epochs 2 and 6 of 8; at the default 4 epochs a first rung at epoch 2 saves about a third,
#   two trials in three stopping after half their epochs, short of the 50 %), 5 seeds x 30 trials, bests re-trained for 40 epochs as above.
# Both are seed-major, so a run cut by T_BENCH keeps whole seeds; the JSON is rewritten after
# every study. Bests are re-trained with LONG_SEEDS (default 1, to fit the call) training seeds;
# PART=noise re-trains the samplers' bests with 3 seeds each (reward_noise.py: brief and long,
# the seed-to-seed spread against the architectures'), which the comparison needs: on the CPU
# one seed's rewards varied more than the study bests did.
# PROXY=1 also runs proxy_fidelity.py beside it (its horizon-10 figures can be read off the
# long runs' curves in results/proxy_fidelity_h100.json already, so it is off by default).
# Optuna is carried as wheels in .whl/ (the device image, Python 3.12, has torch, tqdm, pyyaml,
# scipy but not optuna, alembic, colorlog, sqlalchemy, mako, greenlet); here, once:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl optuna==5.0.0 alembic colorlog sqlalchemy==2.1.9 mako greenlet
# and the device call names .whl in `carry`.
# A CPU smoke run of the script itself (seconds per trial, not the figures):
#   DEVICE=cpu WORKERS=1 SEARCH_ARGS="--seeds 1 --trials 2 --samplers random --pruned= --factor 1" \
#       bash benchmarks/gpu_search.sh
set -u
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PY:-python3}
if ! $PY -c "import optuna" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:.
fi
nvidia-smi -L; $PY -c "import torch, optuna; print(torch.__version__, optuna.__version__)"
if [ "${PART:-samplers}" = pruning ]; then
    timeout ${T_BENCH:-480} $PY benchmarks/search_trained.py --device ${DEVICE:-cuda} --workers ${WORKERS:-16} \
        --samplers random --pruned random --pruned-by halving --epochs 8 --horizon 5 --factor 5 \
        --long-seeds ${LONG_SEEDS:-1} ${SEARCH_ARGS:-} \
        --out "$OUT/pruning.json" > "$OUT/pruning.log" 2>&1
    tail -6 "$OUT/pruning.log"
    exit 0
fi
if [ "${PART:-samplers}" = noise ]; then
    timeout ${T_BENCH:-480} $PY benchmarks/reward_noise.py "${SEARCH_JSON:?give the search.json of the samplers part}" \
        --seeds 3 --device ${DEVICE:-cuda} --workers ${WORKERS:-16} --out "$OUT/noise.json" --plot "$OUT/noise.png" \
        --resume ${NOISE_ARGS:-} \
        > "$OUT/noise.log" 2>&1
    tail -14 "$OUT/noise.log"
    exit 0
fi
timeout 90 $PY -m archlab search --space seg --gpus all --n-trials 4 --study gpus-smoke \
    --storage "sqlite:///$OUT/gpus.db" --quiet > "$OUT/gpus.log" 2>&1
echo "--gpus all: exit $?"; tail -5 "$OUT/gpus.log"
$PY -m archlab trials --study gpus-smoke --storage "sqlite:///$OUT/gpus.db" 2>&1 | tail -6
if [ "${PROXY:-0}" = 1 ]; then
    timeout ${T_BENCH:-480} $PY benchmarks/proxy_fidelity.py --device ${DEVICE:-cuda} --workers 6 --horizon ${HORIZON:-10} \
        --out "$OUT/proxy.json" > "$OUT/proxy.log" 2>&1 &
fi
timeout ${T_BENCH:-480} $PY benchmarks/search_trained.py --device ${DEVICE:-cuda} --workers ${WORKERS:-16} \
    ${BUDGET:---epochs 16 --horizon 2.5 --factor 2.5} --pruned= --long-seeds ${LONG_SEEDS:-1} ${SEARCH_ARGS:-} --out "$OUT/search.json" \
    > "$OUT/search.log" 2>&1
wait
[ "${PROXY:-0}" = 1 ] && tail -30 "$OUT/proxy.log"
tail -12 "$OUT/search.log"
