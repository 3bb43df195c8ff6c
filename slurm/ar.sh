#!/usr/bin/env bash
# Stage 2 (the next-scale AR, family next_scale) under Slurm; when it finishes, the run exports it to RUN_DIR/export:
#   sbatch --nodes 4 slurm/ar.sh next_scale.tokenizer_path=EXPORT_DIR [key=value ...]     (CONFIG default: configs/next_scale/d16.yaml)
# Settings, CPU mode, preemption and requeue, logs: slurm/_common.sh and docs/launch.md.
#SBATCH --job-name=mars_ar
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
mars_train configs/next_scale/d16.yaml "$@"
