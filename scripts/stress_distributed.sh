#!/usr/bin/env bash
# Run a 2-process training N times while other processes keep every core busy, and count the runs that
# fail: a finished process that aborts at exit ("terminate called without an active exception") above
# all, and the runs where a process group outlived destroy_process_group (gloo's threads still running
# at exit: the precondition of that abort; see src/sgpo/process_group.py and docs/scaling.md).
#
# usage: scripts/stress_distributed.sh [N=30] [script|train]
#   script  tests/scripts/one_step_update.py (one SGD step, DDP on gloo), as tests/test_distributed.py runs it
#   train   `accelerate launch -m sgpo train --config recipes/tiny_cpu.yaml --use_cpu true` on the tiny model
# env: BURNERS (busy processes beside the runs; default: the number of cores), PYTHON (default .venv/bin/python),
#      KEEP=1 keeps the work folder. Core files of aborted processes are kept there and, when gdb is installed,
#      each one's native backtrace (every thread) is written beside it. Exits 1 if any run failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-30}
mode=${2:-script}
python=${PYTHON:-$root/.venv/bin/python}
launcher=$(dirname "$python")/accelerate
burners=${BURNERS:-$(nproc)}
work=$(mktemp -d "${TMPDIR:-/tmp}/sgpo-stress.XXXXXX")
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  if [ "${KEEP:-0}" = 1 ] || [ "${failed:-0}" -gt 0 ]; then echo "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
for _ in $(seq 1 "$burners"); do "$python" -c "while True: pass" & pids+=($!); done

if [ "$mode" = train ]; then
  "$python" -m sgpo.testing "$work/tiny" > /dev/null 2>&1 || exit 2
elif [ "$mode" != script ]; then
  echo "usage: $0 [N] [script|train]" >&2; exit 2
fi

failed=0; aborted=0; outlived=0; start=$(date +%s)
for i in $(seq 1 "$runs"); do
  dir="$work/run$i"; mkdir -p "$dir"
  port=$((29600 + i % 300))
  common=(launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port "$port")
  if [ "$mode" = script ]; then
    cmd=("$launcher" "${common[@]}" "$root/tests/scripts/one_step_update.py" "$dir/delta.pt" 2 dapo plain)
  else
    cmd=("$launcher" "${common[@]}" -m sgpo train --config "$root/recipes/tiny_cpu.yaml" --use_cpu true --report_to none
         --model_name_or_path "$work/tiny/model" --dataset_name "$work/tiny/train.jsonl" --output_dir "$dir/out")
  fi
  (cd "$dir" && ulimit -c unlimited && "${cmd[@]}") > "$dir/log" 2>&1
  rc=$?
  note=""
  if [ "$mode" = script ] && [ "$(grep -c 'gloo threads after the group ended: \[\]' "$dir/log")" -lt 2 ]; then
    outlived=$((outlived + 1)); note=" (a process group outlived destroy_process_group)"
  elif [ "$mode" = train ] && grep -q "still referenced" "$dir/log"; then
    outlived=$((outlived + 1)); note=" (a process group outlived destroy_process_group)"
  fi
  if [ $rc -ne 0 ]; then
    failed=$((failed + 1))
    grep -q "terminate called" "$dir/log" && aborted=$((aborted + 1))
    echo "run $i: exit $rc$note: $(grep -m1 -E 'terminate called|exitcode|Error' "$dir/log")"
    for core in "$dir"/core*; do
      [ -f "$core" ] && command -v gdb > /dev/null && gdb -batch -ex "thread apply all bt" "$python" "$core" > "$core.backtrace.txt" 2>&1
    done
  elif [ -n "$note" ]; then
    echo "run $i: exit 0$note"
  fi
done
echo "$mode: $runs runs with $burners busy processes beside them in $(( $(date +%s) - start )) s: $failed failed ($aborted aborted at exit), $outlived with a process group that outlived destroy_process_group"
[ $failed -eq 0 ]
