#!/usr/bin/env bash
# Any run config under Slurm (tokenizer.sh and ar.sh are this with a default config):
#   CONFIG=configs/next_scale/small.yaml sbatch --nodes 2 slurm/train.sh [key=value ...]
# Settings, CPU mode, preemption and requeue, logs: slurm/_common.sh and docs/launch.md.
#SBATCH --job-name=mars_train
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
common=${MARS_DIST_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/_common.sh
[ -f "$common" ] || { echo "error: $common not found: run sbatch from the repository root, or set MARS_DIST_ROOT" >&2; exit 2; }
# shellcheck source=SCRIPTDIR/_common.sh
. "$common"
mars_setup
[ -n "${CONFIG:-}" ] || mars_die "set CONFIG to a run config, e.g. CONFIG=configs/next_scale/small.yaml sbatch slurm/train.sh"
mars_train "$CONFIG" "$@"
