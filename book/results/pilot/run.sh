#!/usr/bin/env bash
# Issue 12's pilot, one lane per CPU core (one thread each), resumable: a run kept under
# book/results/pilot/<configuration>/ is not trained again. For each configuration given:
#   1. the learning-rate sweep at 1x (0.5x, 1x, 2x the authors' rate scaled to the batch), seed 0;
#   2. the schedule ladder (1x, 2x, 0.5x) at the sweep's best rate, seeds 0 1 2 (the sweep's run
#      at that rate is seed 0 of the ladder's 1x, copied, not trained again).
#     bash book/results/pilot/run.sh fl_sl1 ghm_c_sl1_level      # lane 1
#     bash book/results/pilot/run.sh faster_r_cnn_beta_1         # lane 2
set -euo pipefail
cd "$(dirname "$0")/../../.."
py=${PYTHON:-.venv/bin/python}
exp="$py -m imbalance.lab.experiments run --grid pilot --preset protocol --out runs/pilot run.progress=false"
for slug in "$@"; do
  res=book/results/pilot/$slug
  $exp --results "$res/lr_sweep" --seeds 0 --only "$slug" \
    --lr-factors 1 2 0.5
  best=$($py - "$res/lr_sweep/summary.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
best = max(rows, key=lambda name: rows[name]["AP"]["mean"])
print(best.split("[lr ")[1].rstrip("x]") if "[lr " in best else "1")
PY
)
  echo "[$slug] best learning-rate factor: $best" >&2
  for seed in 0 1 2; do
    $exp --results "$res/ladder" --seeds "$seed" \
      --reuse "$res/lr_sweep" --only "$slug" --lr-factors "$best" --schedules 1 2 0.5
    $py -m imbalance.lab.experiments summarize --out "$res/ladder" --seeds 0 1 2 >/dev/null
  done
done
