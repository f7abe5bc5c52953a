#!/usr/bin/env bash
# Run several benchmarks/compare.py jobs at once, one process each, on a machine with cores (and
# a GPU) to spare; each job's log goes to $LOGS/<n>.log. Runs are stored as compare.py stores
# them, so summarise afterwards by running compare.py again over all the configs: it finds
# every run done and only prints and writes the table.
#
#   LIMIT=500 LOGS=/tmp/logs scripts/parallel_compare.sh \
#     "benchmarks/split_mnist/dgr.yaml --scenarios class --out benchmarks/results/x" \
#     "benchmarks/split_mnist/dgr.yaml --scenarios task --out benchmarks/results/x"
#
# Each argument is one job's compare.py arguments; COMMON is added to every job. LIMIT (seconds)
# stops a job that runs longer; a run it cuts off keeps the results of its completed tasks.
set -u
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
n=0
for job in "$@"; do
  n=$((n + 1))
  # shellcheck disable=SC2086  # a job is a list of words
  OMP_NUM_THREADS=1 timeout "${LIMIT:-0}" ${PYTHON:-python} benchmarks/compare.py $job ${COMMON:-} \
    > "$LOGS/$n.log" 2>&1 &
done
wait
grep -l "Error\|Traceback" "$LOGS"/*.log && echo "some jobs failed: see the logs above" || true
