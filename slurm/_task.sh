#!/usr/bin/env bash
# One process per Slurm task, started by srun from slurm/_common.sh: Slurm's task ids become the
# env:// variables torch.distributed reads (MASTER_ADDR/MASTER_PORT come from the batch shell), then
# the command replaces this shell, so the signals Slurm sends reach the training process itself.
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
if [ -n "${SLURM_NTASKS_PER_NODE:-}" ]; then export LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE; fi
exec "$@"
