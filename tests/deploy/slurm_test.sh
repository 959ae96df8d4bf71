#!/bin/bash
# slurm_test.sh FABRICD DIGITS: Slurm, on a machine without it.
#  1. deploy/slurm/fabricd.sbatch, with stand-ins for srun and scontrol (fake-slurm/) over two
#     "nodes" at 127.0.0.1 and 127.0.0.2: the coordinator and both agents start, the digits
#     example trains across the two nodes (DDP, one rank each) to 90%, and the script exits 0;
#     a failing program makes it exit 1.
#  2. libfabric straight under srun: two digits processes with the variables
#     `srun --nodes 1 --ntasks 2` gives its tasks train as one world of 2 and end with the
#     same accuracy, to the last digit, as the same run launched by Fabric::launch.
set -euo pipefail
fabricd=$(realpath "$1") digits=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
sbatch=$here/../../deploy/slurm/fabricd.sbatch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "slurm_test: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

allocation() {  # allocation NAME PROGRAM...: the sbatch script in a fake 2-node allocation
  local name=$1; shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && PATH="$here/fake-slurm:$PATH" FAKE_SLURM_NODES="127.0.0.1 127.0.0.2" SLURM_JOB_ID=$RANDOM \
     SLURM_JOB_NODELIST=fake FABRICD="$fabricd" FABRICD_WORKDIR="$work/$name/fabricd" FABRICD_SLOTS=1 \
     FABRICD_PORT=$(free_port) timeout 300 "$sbatch" "$@")
}

# 1. Across two nodes.
allocation train "$digits" --accelerator cpu --epochs 10 --require-accuracy 0.9 >"$work/train.out" 2>&1 ||
  { cat "$work/train.out" "$work/train/fabricd/"*.log >&2; fail "the digits job under fabricd.sbatch failed"; }
log=$work/train/fabricd/job.log
grep -q "^\[rank 0\] Training on .* world size 2 " "$log" || { cat "$log" >&2; fail "rank 0 did not train in a world of 2"; }
grep -q "^\[rank 0\] final test accuracy" "$log" || { cat "$log" >&2; fail "no final accuracy"; }
grep -q "127.0.0.2: starting ranks 1..1" "$work/train/fabricd/agents.log" || fail "rank 1 did not run on the second node"
if allocation failing /bin/sh -c 'exit 5' >"$work/failing.out" 2>&1; then fail "a failing job's allocation exited 0"; fi
grep -q "FAILED" "$work/failing.out" || { cat "$work/failing.out" >&2; fail "the failure was not reported"; }

# 2. libfabric under srun: the variables of `srun --nodes 1 --ntasks 2`, one process per task.
slurm_env=(SLURM_NTASKS=2 SLURM_NTASKS_PER_NODE=2 SLURM_NNODES=1 SLURM_JOB_NUM_NODES=1 SLURM_JOB_ID=4242
           SLURM_JOB_NAME=train SLURM_JOB_NODELIST=localhost SLURM_NODELIST=localhost SLURM_NODEID=0 SLURM_STEP_ID=0)
args=(--accelerator cpu --devices 2 --epochs 3)
env "${slurm_env[@]}" SLURM_PROCID=1 SLURM_LOCALID=1 "$digits" "${args[@]}" --log-dir "$work/srun1" >"$work/task1.out" 2>&1 &
task1=$!
env "${slurm_env[@]}" SLURM_PROCID=0 SLURM_LOCALID=0 "$digits" "${args[@]}" --log-dir "$work/srun0" >"$work/task0.out" 2>&1 ||
  { cat "$work/task0.out" >&2; fail "task 0 under srun's variables failed"; }
wait "$task1" || { cat "$work/task1.out" >&2; fail "task 1 under srun's variables failed"; }
grep -q "world size 2 " "$work/task0.out" || { cat "$work/task0.out" >&2; fail "the srun tasks did not form a world of 2"; }
env -u SLURM_NTASKS "$digits" "${args[@]}" --log-dir "$work/launch" >"$work/launch.out" 2>&1 ||
  { cat "$work/launch.out" >&2; fail "the launch() run failed"; }
under_srun=$(grep "final test accuracy" "$work/task0.out" | sed 's/ | metrics.*//')
under_launch=$(grep "final test accuracy" "$work/launch.out" | sed 's/ | metrics.*//')
[ -n "$under_srun" ] && [ "$under_srun" = "$under_launch" ] ||
  fail "under srun: '$under_srun'; under launch(): '$under_launch'"
echo "slurm_test: two nodes under fabricd.sbatch, and srun's tasks ($under_srun) match launch()"
