#!/bin/bash
# Multi-node training under SLURM (needs CUDA): one `accelerate launch` per node, accelerate/torchrun's own
# static rendezvous on node 0. Submit from the repository root:
#   sbatch launch/accelerate/slurm_multinode.sh                      # ImageNet spikingresformer_l, DA-SSDP on
#   CONFIG=configs/main/spikingresformer_ti.yaml sbatch launch/accelerate/slurm_multinode.sh dassdp.enabled=false
# Extra arguments are passed to dassdp-train (dotted overrides, --data-path ...). Requeued jobs continue
# exactly where they stopped: --resume auto picks up <output_dir>/checkpoints/last.pt.
#SBATCH --job-name=dassdp-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/main/spikingresformer_l.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_PORT=${MAIN_PORT:-29500}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
ACCELERATE=${ACCELERATE:-.venv/bin/accelerate}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

# SLURM_NODEID must be read inside each task, hence the single quotes around the per-node command.
srun --kill-on-bad-exit=1 bash -c '
  exec "$0" launch --multi_gpu --num_machines "$1" --num_processes "$2" --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$3" --main_process_port "$4" --rdzv_backend static --same_network \
    -m launch.train --config "$5" --resume auto "${@:6}"
' "$ACCELERATE" "$SLURM_NNODES" "$NUM_PROCESSES" "$MAIN_IP" "$MAIN_PORT" "$CONFIG" "$@"
