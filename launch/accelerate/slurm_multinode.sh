#!/bin/bash
# Multi-node training under SLURM (needs CUDA): one `accelerate launch` per node, accelerate/torchrun's own
# static rendezvous on node 0. Submit from the repository root:
#   sbatch launch/accelerate/slurm_multinode.sh                      # ImageNet spikingresformer_l, DA-SSDP on
#   CONFIG=configs/main/spikingresformer_ti.yaml sbatch launch/accelerate/slurm_multinode.sh dassdp.enabled=false
# Extra arguments are passed to dassdp-train (dotted overrides, --data-path ...).
#
# Preemption and time limits: SLURM sends USR1 to this script 300 s before the time limit (--signal); the
# trap forwards it through srun to every node's launcher, torchrun hands it on to the training processes
# (PET_SIGNALS_TO_HANDLE), and those finish the current optimizer step, save `last` at one agreed step and
# exit with status 75 ("preempted, resumable"; launch/errors.py). torchrun reports any failed worker as 1,
# so rank 0 also writes its status to $DASSDP_EXIT_FILE; on 75 this script runs `scontrol requeue` and the
# requeued job continues exactly where it stopped: --resume auto picks up <output_dir>/checkpoints/last.pt.
# A SIGTERM from SLURM (preemption, scancel) reaches the training processes directly and ends the same way.
#SBATCH --job-name=dassdp-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/main/spikingresformer_l.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_PORT=${MAIN_PORT:-29500}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
ACCELERATE=${ACCELERATE:-.venv/bin/accelerate}
PREEMPTED=75  # launch.errors.EXIT_PREEMPTED
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
export PET_SHUTDOWN_TIMEOUT=${PET_SHUTDOWN_TIMEOUT:-270}  # s torchrun waits for the save before SIGKILL
export DASSDP_EXIT_FILE=${DASSDP_EXIT_FILE:-$PWD/.dassdp-exit-$SLURM_JOB_ID}
rm -f "$DASSDP_EXIT_FILE"

# SLURM_NODEID must be read inside each task, hence the single quotes around the per-node command.
srun --kill-on-bad-exit=1 bash -c '
  exec "$0" launch --multi_gpu --num_machines "$1" --num_processes "$2" --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$3" --main_process_port "$4" --rdzv_backend static --same_network \
    -m launch.train --config "$5" --resume auto "${@:6}"
' "$ACCELERATE" "$SLURM_NNODES" "$NUM_PROCESSES" "$MAIN_IP" "$MAIN_PORT" "$CONFIG" "$@" &
SRUN=$!
# A trapped signal interrupts `wait`; forward it and wait again until srun has really ended.
trap 'echo "slurm_multinode: USR1: asking the training processes to save and stop" >&2; kill -USR1 "$SRUN"' USR1
status=0
while true; do
  wait "$SRUN" && status=0 || status=$?
  kill -0 "$SRUN" 2>/dev/null || break
done
trap - USR1
if [[ -s "$DASSDP_EXIT_FILE" ]]; then
  status=$(<"$DASSDP_EXIT_FILE")
fi
if [[ "$status" == "$PREEMPTED" ]]; then
  echo "slurm_multinode: training stopped resumably (status $PREEMPTED): requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
rm -f "$DASSDP_EXIT_FILE"
exit "$status"
