#!/usr/bin/env bash
# Runs N local JAX processes on one machine (CPU), as a multi-host job would.
#
#   bash launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS \
#       --config=configs/fmnist_maskgit.py:runlocal --workdir=/tmp/mp
#
# Each process sees DEVICES_PER_PROCESS CPU devices; together they form one
# ('data',) mesh. Process 0 writes logs; all join checkpoint saves.
# SIGTERM/SIGINT to this script reach every process (a preemption: they save
# after the current iteration and exit 0, and a rerun resumes). If a process
# fails, the others are stopped, since they would wait for it forever.
set -uo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS [adagen_jax.main flags]" >&2
  exit 2
fi
n=$1; d=$2; shift 2
port=$(python3 -c 'import portpicker; print(portpicker.pick_unused_port())') \
  || exit 1
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=$d \
  ADAGEN_COORDINATOR=localhost:$port ADAGEN_NUM_PROCESSES=$n \
  ADAGEN_PROCESS_ID=$i python3 -m adagen_jax.main "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
while ((${#pids[@]})); do
  finished=
  wait -n -p finished "${pids[@]}"
  rc=$?
  # A trapped signal interrupts `wait` before any process has finished.
  [[ -z ${finished:-} ]] && continue
  rest=()
  for p in "${pids[@]}"; do [[ $p != "$finished" ]] && rest+=("$p"); done
  pids=("${rest[@]}")
  if ((rc != 0 && status == 0)); then
    status=$rc
    ((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null
  fi
done
exit $status
