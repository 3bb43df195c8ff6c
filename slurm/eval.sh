#!/usr/bin/env bash
# Distributed evaluation under Slurm: one task per GPU runs `python -m $MODULE ARGS...`
# (MODULE default mars_dist.evaluate; any module works, e.g. MODULE=mars_dist.eval.report):
#   RUN_DIR=runs/eval/ar-d16 sbatch --nodes 2 slurm/eval.sh --tokenizer EXPORT --model EXPORT ...
# RUN_DIR (default runs/eval/JOBID) holds the logs and the lock; status 75 requeues like training.
# Settings and CPU mode: slurm/_common.sh and docs/launch.md.
#SBATCH --job-name=mars_eval
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
mars_module "${MODULE:-mars_dist.evaluate}" "$@"
