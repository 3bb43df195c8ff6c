# shellcheck shell=bash
# The one launcher behind slurm/{train,tokenizer,ar,eval}.sh, which source it (not an sbatch script).
#
# One task per GPU (per CPU rank in CPU mode) started by srun itself, no torchrun in between, so the
# signal Slurm sends before the time limit (#SBATCH --signal=USR1@90, no "B:") reaches every
# training process; slurm/_task.sh turns Slurm's task ids into torch.distributed's env:// variables.
# Then the batch shell decides from srun's status (the highest task status):
#   0                              finished (the run exported its model itself: stages.export), unlock
#                                  the run folder
#   75, or RUN_DIR/PREEMPTED       preempted: scontrol requeue, at most MAX_REQUEUES times per job;
#                                  the next start resumes from the newest committed checkpoint
#   anything else                  failed: no requeue, so a crash never loops; the log ends with the error
# The batch shell traps TERM and USR1: it gets TERM at a preemption or the time limit (and USR1 from
# `scancel --full`), and must outlive the step to make that decision instead of dying first.
#
# Settings (environment of `sbatch`, which exports it to the job; or sbatch options):
#   CONFIG        run config (tokenizer.sh and ar.sh have defaults; train.sh needs it)
#   RUN_DIR       run folder (default: the config's run_dir); eval.sh: logs and lock (default runs/eval/JOBID)
#   BACKEND       engine.backend: debug | accelerate | deepspeed (default: the config's)
#   MAX_REQUEUES  self-requeues allowed per job (default 20); SLURM_RESTART_COUNT counts them
#   EXPORT_MODEL  model the run exports to RUN_DIR/export when it finishes (stages.export.model; default:
#                 the task's own, e.g. tokenizer_ema, the generator); "none" exports nothing
#   MODULE        eval.sh: the python module to run (default mars_dist.evaluate)
#   PY            python (default: the repository's .venv/bin/python)
#   MASTER_PORT   rendezvous port (default: derived from the job id)
#   nodes, tasks and GPUs per node, CPUs per task, time, partition: sbatch options. CPU mode (gloo):
#   --gpus-per-node=0; a job without GPUs trains with engine.device=cpu.
# Per start, in RUN_DIR/logs/: slurm-JOBID.log (everything the job printed, every start appended),
# slurm-JOBID.config.yaml (the resolved config), slurm-JOBID.command (the exact srun command).

# mars_echo LINE: LINE, verbatim, to the job's output and to its log in the run folder (once there is one).
mars_echo() {
  printf '%s\n' "$1"
  if [ -n "${MARS_LOG:-}" ]; then printf '%s\n' "$1" >>"$MARS_LOG"; fi
}

mars_log() {
  mars_echo "[mars slurm $(date +%H:%M:%S)] $*"
}

mars_die() {
  echo "error: $*" >&2
  exit 2
}

# The repository root (the sbatch copy of a script runs from Slurm's spool directory), the
# interpreter, the rendezvous and the signal traps. Called by the entry scripts before anything else.
mars_setup() {
  set -uo pipefail  # not -e: the decision below needs the statuses of failing commands
  [ -n "${SLURM_JOB_ID:-}" ] || mars_die "this is an sbatch script (SLURM_JOB_ID is not set): sbatch $0 ..."
  MARS_ROOT=$(cd "${MARS_DIST_ROOT:-${SLURM_SUBMIT_DIR:-.}}" && pwd) || mars_die "cannot enter ${MARS_DIST_ROOT:-$SLURM_SUBMIT_DIR}"
  cd "$MARS_ROOT" || exit 2
  PY=${PY:-$MARS_ROOT/.venv/bin/python}
  [ -x "$PY" ] || command -v "$PY" >/dev/null || mars_die "python $PY not found (set PY, or run launch/setup.sh)"
  MAX_REQUEUES=${MAX_REQUEUES:-20}
  [[ $MAX_REQUEUES =~ ^[0-9]+$ ]] || mars_die "MAX_REQUEUES=$MAX_REQUEUES: expected a whole number"
  local nodes
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  [ "${#nodes[@]}" -gt 0 ] || mars_die "scontrol show hostnames $SLURM_JOB_NODELIST named no node"
  export MASTER_ADDR=${nodes[0]}
  export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  export WANDB_MODE=${WANDB_MODE:-offline} PYTHONUNBUFFERED=1
  trap 'mars_log "batch shell got SIGTERM: waiting for the training step to commit and exit"' TERM
  trap 'mars_log "batch shell got SIGUSR1: waiting for the training step to commit and exit"' USR1
}

# mars_train DEFAULT_CONFIG [key=value ...]: a mars_dist.train job.
mars_train() {
  local config=${CONFIG:-$1}
  shift
  local overrides=()
  case "${EXPORT_MODEL:-}" in
    "") ;;
    none) overrides+=("stages.export.on_finish=false") ;;
    *) overrides+=("stages.export.model=$EXPORT_MODEL") ;;
  esac
  if [ -n "${RUN_DIR:-}" ]; then overrides+=("run_dir=$RUN_DIR"); fi
  if [ -n "${BACKEND:-}" ]; then overrides+=("engine.backend=$BACKEND"); fi
  if [ "${SLURM_GPUS_ON_NODE:-0}" = 0 ] && [ -z "${SLURM_JOB_GPUS:-}" ]; then overrides+=("engine.device=cpu"); fi
  overrides+=("$@")
  MARS_RUN_DIR=$("$PY" -m launch.run_folder prepare --job "$SLURM_JOB_ID" --config "$config" -- "${overrides[@]}") || exit 2
  mars_step "$PY" -m mars_dist.train --config "$config" --resume auto "${overrides[@]}"
  mars_log "done"
}

# mars_module MODULE [ARGS...]: any python module under srun (eval.sh); RUN_DIR holds its logs and lock.
mars_module() {
  local module=$1
  shift
  MARS_RUN_DIR=$("$PY" -m launch.run_folder prepare --job "$SLURM_JOB_ID" --run-dir "${RUN_DIR:-runs/eval/$SLURM_JOB_ID}") || exit 2
  mars_step "$PY" -m "$module" "$@"
  mars_log "done"
}

mars_tee() {
  # Ignores the signals the job gets, so that the pipe srun writes into outlives srun.
  trap '' TERM USR1
  tee -a "$MARS_LOG"
}

# mars_step COMMAND...: runs COMMAND in every task and returns only if all of them finished (status 0);
# otherwise requeues the job or fails it, and exits.
mars_step() {
  MARS_LOG=$MARS_RUN_DIR/logs/slurm-$SLURM_JOB_ID.log
  local restarts=${SLURM_RESTART_COUNT:-0} status offset
  local cmd=(srun --kill-on-bad-exit=0 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} bash "$MARS_ROOT/slurm/_task.sh" "$@")
  printf 'cd %q && MASTER_ADDR=%q MASTER_PORT=%q %s\n' "$MARS_ROOT" "$MASTER_ADDR" "$MASTER_PORT" "$(printf '%q ' "${cmd[@]}")" \
    >"$MARS_RUN_DIR/logs/slurm-$SLURM_JOB_ID.command"
  mars_log "job $SLURM_JOB_ID start $((restarts + 1)) on $SLURM_JOB_NODELIST: $SLURM_NTASKS tasks, run folder $MARS_RUN_DIR"
  offset=$(($(stat -c %s "$MARS_LOG") + 1))
  "${cmd[@]}" 2>&1 | mars_tee
  status=${PIPESTATUS[0]}
  if [ "$status" -eq 0 ]; then
    "$PY" -m launch.run_folder release --job "$SLURM_JOB_ID" "$MARS_RUN_DIR"
    return 0
  fi
  if [ "$status" -eq 75 ] || [ -f "$MARS_RUN_DIR/PREEMPTED" ]; then
    if [ "$restarts" -lt "$MAX_REQUEUES" ]; then
      mars_log "preempted (status $status): requeueing job $SLURM_JOB_ID ($((restarts + 1)) of at most $MAX_REQUEUES requeues); it resumes from the newest committed checkpoint"
      scontrol requeue "$SLURM_JOB_ID" && exit 0
      mars_log "scontrol requeue failed: resubmit the same command to resume"
    else
      mars_log "preempted (status $status), but job $SLURM_JOB_ID was requeued $restarts times (MAX_REQUEUES=$MAX_REQUEUES): not requeued; resubmit the same command to resume"
    fi
    "$PY" -m launch.run_folder release --job "$SLURM_JOB_ID" "$MARS_RUN_DIR"
    exit 75
  fi
  "$PY" -m launch.run_folder release --job "$SLURM_JOB_ID" "$MARS_RUN_DIR"
  # The error that failed the step is the last line of this start (torch prefixes a rank's lines with
  # "[rankN]: ") that a program printed as its error: a command line's "prog: error: ..." (how
  # mars_dist reports a user's mistake, exit 2), a bare "error: ...", or an exception's
  # "SomeError: ..." / "SomeException: ..." (the end of a traceback). The last one, because the step
  # ended there. Slurm's own lines ("srun: error: node: task 0: Exited with exit code 2",
  # "slurmstepd: error: ...") only restate the status and are never chosen. The log ends with that
  # line, verbatim, below the summary.
  local error
  error=$(tail -c +"$offset" "$MARS_LOG" \
    | grep -E '^(\[rank[0-9]+\]: )?(([A-Za-z0-9_][A-Za-z0-9_./ -]*: )?error: |[A-Za-z_][A-Za-z0-9_.]*(Error|Exception): )' \
    | grep -vE '^(srun|sbatch|salloc|sattach|sbcast|scancel|scontrol|squeue|sinfo|sacct|sstat|slurm[A-Za-z0-9_.-]*): ' \
    | tail -n 1)
  if [ -n "$error" ]; then
    mars_log "failed with status $status, not requeued; the error:"
    mars_echo "$error"
  else
    mars_log "failed with status $status, not requeued: see the log above"
  fi
  exit "$status"
}
