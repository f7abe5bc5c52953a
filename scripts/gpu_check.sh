#!/usr/bin/env bash
# Every GPU figure issue 18 asks for, in one command that an H100 runs in under 10 minutes:
#
#   bash scripts/gpu_check.sh                      # on a GPU machine: writes benchmarks/results/*_cuda.json
#   bash scripts/gpu_check.sh --device cpu --budget tiny --out /tmp/check --logs /tmp/check/logs  # CI
#
# Options: --device cuda|cpu (cuda), --budget full|tiny (full), --out DIR for the JSON files
# (benchmarks/results), --logs DIR for each step's log and run folders (runs/gpu_check).
#
# Steps, each with its own status (ok, failed, skipped and why) in gpu_check_<device>.json, so
# that one optional figure that fails never stops the others:
#   maml_speed            second-order MAML, Omniglot 5-way 1-shot, Conv4, meta-batch 32:
#                         float64 agreement of every path, iterations/s of ours (loop, vmap,
#                         compiled) against a plain autograd loop, higher, learn2learn, TorchOpt
#                         (the peers that are installed), peak GPU memory; PyTorch's TF32 defaults
#   maml_speed_compiled   the same for the torch.compile'd vmap path beside our loop
#   maml_speed_tf32_off   the same with TF32 off: float32 errors of every path (docs/precision.md)
#   maml_speed_20way      20-way 1-shot, meta-batch 16, 5 inner steps
#   maml_ops(_compiled)   operators and kernel launches per meta-iteration, per path
#   plasticity_speed      EWC and SI whole Split MNIST runs against their FLOP floor
#   memory_growth         memory of second-order MAML (vmap, then loop) over 1000 meta-iterations,
#                         Conv4, meta-batch 32: growth and peak per episode; each path stops at
#                         its first reading after 50 s (1000 iterations take the issue's 20 it/s)
#   nccl_2proc            `metalearn run --nproc 2` (torchrun's launcher) of MAML on 2 GPUs over
#                         NCCL, 20 steps (skipped with a note with fewer than 2 GPUs)
#
# The machine may have another Python and torch than ours and no package index: the script uses
# the first `python3` on PATH (or $PYTHON), installs metalearn with `pip install --no-deps -e .`
# only when it does not import (or, where pip cannot, puts the checkout on PYTHONPATH), and a
# peer that is not installed is reported as skipped by the benchmark itself. metalearn's own
# dependencies (setup.cfg) must be in that Python; the script says so when they are not. Data: $METALEARN_DATA (Omniglot and MNIST); a step whose data is missing fails
# alone, with the benchmark's message in its log.
set -uo pipefail

DEVICE=cuda
BUDGET=full
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/benchmarks/results"
LOGS="$REPO/runs/gpu_check"
PY="${PYTHON:-python3}"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --logs) LOGS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$BUDGET" in full|tiny) ;; *) echo "gpu_check: --budget is full or tiny, not '$BUDGET'" >&2; exit 2 ;; esac
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device is cuda or cpu, not '$DEVICE'" >&2; exit 2 ;; esac

case "$PY" in */*) [ -d "$(dirname "$PY")" ] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # before any cd
mkdir -p "$OUT" "$LOGS"
OUT="$(cd "$OUT" && pwd)"
LOGS="$(cd "$LOGS" && pwd)"
cd "$REPO"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
START=$SECONDS
log() { printf '[gpu_check %4ds] %s\n' "$((SECONDS - START))" "$*"; }

# what this Python has: torch (required), metalearn (installed if missing), the GPUs
if ! GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null)"; then
  echo "gpu_check: '$PY' cannot import torch; set PYTHON to a Python with torch installed" >&2
  exit 1
fi
# imported from outside the checkout, as the benchmarks (run from benchmarks/) import it
imports() { (cd / && "$PY" -c "import $1" 2>/dev/null); }
if ! imports metalearn; then
  log "metalearn does not import: pip install --no-deps --no-build-isolation -e ."
  if ! "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . > "$LOGS/pip_install.log" 2>&1; then
    log "pip could not install it ($LOGS/pip_install.log): using PYTHONPATH=$REPO instead"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
if ! missing="$(cd / && "$PY" -c 'import metalearn.cli, metalearn.learners' 2>&1)"; then
  echo "gpu_check: metalearn does not import with '$PY': $(echo "$missing" | tail -n 1)." >&2
  echo "gpu_check: its dependencies (setup.cfg's install_requires) must be installed in that Python" >&2
  exit 1
fi
if [ "$DEVICE" = cuda ] && [ "$GPUS" -lt 1 ]; then
  echo "gpu_check: torch.cuda.device_count() is 0 for '$PY'; use --device cpu for a dry run" >&2
  exit 1
fi

# The settings of each budget. full is sized for an H100: each step has a time limit, and the
# limits add up to 10 minutes (8 without the memory growth check), so a slow or hung step costs
# its own figure only. torch.compile has steps of its own: a cold compile that runs long loses the
# compiled rows, not the others. tiny is for CI: the same steps but torch.compile's, on one or two
# episodes, one thread per process.
if [ "$BUDGET" = full ]; then
  SPEED=(--iterations 10 --warmup 2 --implementations ours-loop ours-vmap autograd higher learn2learn torchopt)
  COMPILED=(--iterations 10 --warmup 2 --implementations ours-loop ours-compiled)
  TF32_OFF=(--tf32 off --iterations 5 --warmup 1 --implementations ours-loop ours-vmap autograd higher)
  WAY20=(--iterations 5 --warmup 1 --meta-batch 16 --implementations ours-loop ours-vmap autograd higher learn2learn torchopt)
  OPS=(--implementations ours-loop ours-vmap autograd higher learn2learn torchopt)
  OPS_COMPILED=(--implementations ours-compiled)
  PLASTICITY=(--repeats 1 --skip-fisher)
  GROWTH=(--iterations 1000 --warmup 20 --every 50 --max-seconds 50 --paths maml-vmap maml-loop)
  LIMIT=(95 100 35 55 35 50 70 40 120)
else
  export OMP_NUM_THREADS=1  # a shared 2-core CI runner: no oversubscribed OpenMP spinning
  TINY=(--threads 1 --iterations 1 --warmup 0 --meta-batch 2 --matmul-size 256)
  SPEED=("${TINY[@]}" --implementations ours-loop ours-vmap autograd ours-processes)  # processes: CPU only
  COMPILED=()  # minutes of compiling on a CPU: not in CI
  TF32_OFF=("${TINY[@]}" --tf32 off --implementations ours-loop)
  WAY20=(--threads 1 --iterations 0 --meta-batch 1 --matmul-size 256 --implementations ours-loop)
  OPS=(--meta-batch 2 --implementations ours-loop ours-vmap)
  OPS_COMPILED=()
  PLASTICITY=(--repeats 1 --skip-fisher --steps-per-task 2 --learners si --matmul-repeats 20)
  GROWTH=(--threads 1 --iterations 6 --warmup 2 --every 2 --hidden 4 --meta-batch 2 --paths maml-vmap maml-loop)
  LIMIT=(60 60 60 60 60 60 60 60 60)
fi

STEPS_JSON="$LOGS/steps.jsonl"
: > "$STEPS_JSON"
# step NAME LIMIT_S OUTPUT_FILE COMMAND...: runs COMMAND under a time limit, logs it and records
# its status; never exits the script.
step() {
  local name="$1" limit="$2" output="$3"; shift 3
  local begin=$SECONDS status note=""
  log "$name: $*"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ] && { [ -z "$output" ] || [ -s "$output" ]; }; then status=ok
  elif [ $rc -eq 124 ]; then status=failed; note="ran past its ${limit}s limit"
  elif [ $rc -eq 0 ]; then status=failed; note="wrote no $output"
  else status=failed; note="exit status $rc: $(tail -n 1 "$LOGS/$name.log" | cut -c1-300)"
  fi
  log "$name: $status${note:+ ($note)} in $((SECONDS - begin))s"
  record "$name" "$status" "$note" "$output" "$((SECONDS - begin))" "$*"
}
# record NAME STATUS NOTE OUTPUT SECONDS COMMAND: one line of the summary
record() {
  "$PY" - "$@" >> "$STEPS_JSON" <<'EOF'
import json, sys
name, status, note, output, seconds, command = sys.argv[1:7]
print(json.dumps({"step": name, "status": status, "note": note or None, "output": output or None,
                  "seconds": int(seconds), "command": command}))
EOF
}
skip() { log "$1: skipped ($2)"; record "$1" skipped "$2" "" 0 ""; }

D="$DEVICE"
speed() { local name="$1" limit="$2" file="$OUT/$3"; shift 3
          step "$name" "$limit" "$file" "$PY" benchmarks/maml_speed.py --device "$D" "$@" --out "$file"; }
ops() { local name="$1" limit="$2" file="$OUT/$3"; shift 3
        step "$name" "$limit" "$file" "$PY" benchmarks/maml_ops.py --device "$D" "$@" --out "$file"; }
speed maml_speed "${LIMIT[0]}" "maml_speed_$D.json" "${SPEED[@]}"
if [ ${#COMPILED[@]} -gt 0 ]; then
  speed maml_speed_compiled "${LIMIT[1]}" "maml_speed_${D}_compiled.json" "${COMPILED[@]}"
else
  skip maml_speed_compiled "torch.compile takes minutes on a CPU; --budget full runs it"
fi
speed maml_speed_tf32_off "${LIMIT[2]}" "maml_speed_${D}_tf32_off.json" "${TF32_OFF[@]}"
speed maml_speed_20way "${LIMIT[3]}" "maml_speed_${D}_20way_5steps.json" --n-way 20 --inner-steps 5 "${WAY20[@]}"
ops maml_ops "${LIMIT[4]}" "maml_ops_$D.json" "${OPS[@]}"
if [ ${#OPS_COMPILED[@]} -gt 0 ]; then
  ops maml_ops_compiled "${LIMIT[5]}" "maml_ops_${D}_compiled.json" "${OPS_COMPILED[@]}"
else
  skip maml_ops_compiled "torch.compile takes minutes on a CPU; --budget full runs it"
fi
if imports avalanche && [ "$D" = cpu ]; then
  AVALANCHE=()
else
  AVALANCHE=(--without-avalanche)
  log "plasticity_speed: ours against the floor only (Avalanche is not installed, or its peer script runs on the CPU only)"
fi
step plasticity_speed "${LIMIT[6]}" "$OUT/plasticity_speed_$D.json" \
  "$PY" benchmarks/plasticity_speed.py --device "$D" "${PLASTICITY[@]}" ${AVALANCHE[@]+"${AVALANCHE[@]}"} \
  --runs "$LOGS/runs" --out "$OUT/plasticity_speed_$D.json"
step memory_growth "${LIMIT[8]}" "$OUT/memory_growth_$D.json" \
  "$PY" benchmarks/memory_growth.py --device "$D" "${GROWTH[@]}" --out "$OUT/memory_growth_$D.json"

if [ "$D" != cuda ] || [ "$GPUS" -lt 2 ]; then
  skip nccl_2proc "needs 2 GPUs, found $GPUS on --device $D"
else
  # metalearn run --nproc 2 starts the run as torchrun --standalone --nproc-per-node 2 would:
  # process r on cuda:r, NCCL between them; 16 evaluation episodes per batch give each a share
  NCCL_RUN="$LOGS/nccl_2proc_run"
  rm -rf "$NCCL_RUN"  # a run folder is claimed once: a second check starts a new run
  step nccl_2proc "${LIMIT[7]}" "$NCCL_RUN/results.json" \
    "$PY" -m metalearn run benchmarks/omniglot/maml.yaml --nproc 2 --device cuda --wandb disabled \
    --run-dir "$NCCL_RUN" protocol.steps_per_task=20 protocol.eval_episodes=32 \
    protocol.eval_meta_batch_size=16
fi

"$PY" - "$STEPS_JSON" "$OUT/gpu_check_$D.json" "$D" "$BUDGET" "$GPUS" "$((SECONDS - START))" <<'EOF'
import json, platform, sys, torch
steps_path, out, device, budget, gpus, seconds = sys.argv[1:7]
steps = [json.loads(line) for line in open(steps_path)]
summary = {"command": f"bash scripts/gpu_check.sh --device {device} --budget {budget}",
           "device": device, "gpus": int(gpus), "budget": budget, "seconds": int(seconds),
           "python": platform.python_version(), "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
           "steps": steps}
open(out, "w").write(json.dumps(summary, indent=2) + "\n")
width = max(len(s["step"]) for s in steps)
for s in steps:
    print(f"{s['step']:<{width}}  {s['status']:<8} {s['seconds']:>4}s  {s['note'] or s['output'] or ''}")
print(f"written to {out} ({seconds} s)")
EOF
