#!/usr/bin/env bash
# Issue 12's pilot for one configuration of the `pilot` grid, resumable: a run kept under
# $RESULTS/<configuration>/ is not trained again.
#   1. the learning-rate sweep at 1x, seed 0: the factors in $LR_FACTORS (default 0.5 1 2) times
#      the authors' rate scaled to the batch;
#   2. the schedule ladder at the sweep's best rate: for each seed, each schedule multiple (the
#      sweep's run at that rate is seed 0 of the ladder's 1x, copied, not trained again).
#     bash book/results/pilot/run.sh fl_sl1 "0 1 2" "1 2 4"    # configuration, seeds, schedules
# PRESET (default protocol) and RESULTS (default book/results/pilot) choose the preset and where
# the runs are kept: the first protocol's pilot is
#     PRESET=protocol_scratch RESULTS=book/results/pilot_scratch bash book/results/pilot/run.sh ...
# Run one configuration per CPU core (each run uses one thread).
set -euo pipefail
cd "$(dirname "$0")/../../.."
slug=$1
seeds=${2:-0 1 2}
schedules=${3:-1 2 0.5}
preset=${PRESET:-protocol}
py=${PYTHON:-.venv/bin/python}
res=${RESULTS:-book/results/pilot}/$slug
exp="$py -m imbalance.lab.experiments run --grid pilot --preset $preset --out runs/pilot-$preset run.progress=false"
# shellcheck disable=SC2086
$exp --results "$res/lr_sweep" --seeds 0 --only "$slug" --lr-factors ${LR_FACTORS:-1 2 0.5}
best=$($py - "$res/lr_sweep/summary.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
best = max(rows, key=lambda name: rows[name]["AP"]["mean"])
print(rows[best].get("lr_factor", 1.0))
PY
)
echo "[$slug] best learning-rate factor: $best" >&2
for seed in $seeds; do
  # shellcheck disable=SC2086
  $exp --results "$res/ladder" --seeds "$seed" --reuse "$res/lr_sweep" --only "$slug" \
    --lr-factors "$best" --schedules $schedules
done
