#!/usr/bin/env bash
# The README's main job on the embedded default, end to end on one machine (CPU is enough):
# synthetic NSynth-format set -> WebDataset shards -> shard inspection -> short tokenizer run ->
# reconstructions -> exported tokenizer -> short next-scale AR run -> generated wavs -> evaluation
# classifier -> quick metrics -> the paper's Table 1 metrics (NDB/k, PIS, IIS, PKID, IKID, MSE, MAE, FAD).
# Every training run exports its model itself when it finishes (stages.export: RUN_DIR/export/).
# Installs what it needs first (launch/setup.sh). Everything lands under $RUN (default runs/quickstart).
#
# Re-running: by default a re-run CONTINUES. Data steps are idempotent (the synthetic set is a pure
# function of the seed; complete shards are reused), both trainings start with --resume auto (newest
# committed checkpoint; a finished run trains nothing more and exports again, an interrupted one
# picks up where it stopped, a larger TOK_STEPS/AR_STEPS/CLF_STEPS trains on to it), and sampling,
# the report and the evaluation overwrite their outputs. If the tokenizer's weights changed since the AR was trained, the AR run is
# started over (its tokens would mean something else). FRESH=1 deletes $RUN first and starts over.
#
# Knobs (environment variables; defaults are the README's run; see the README for its measured time):
#   RUN=runs/quickstart  TRAIN_NOTES=512  VALID_NOTES=32
#   TOK_CONFIG=configs/tokenizer/small.yaml  TOK_STEPS=800  TOK_EVAL_EVERY=200 (media + checkpoint cadence)
#   AR_CONFIG=configs/next_scale/small.yaml  AR_STEPS=500   AR_EVAL_EVERY=250 (the next-scale AR)
#   AR_OVERRIDES=""  extra key=value overrides of the AR run (e.g. "next_scale.depth=6 next_scale.width=384")
#   CLF_CONFIG=configs/classifier/small.yaml CLF_STEPS=300 CLF_EVAL_EVERY=100 (validation accuracy cadence)
#   EVAL_PROCS=1     processes of the evaluation (torchrun when > 1; the numbers do not change)
#   PITCHES="48 60 72"  FAMILIES="keyboard string"  GL_ITERS=32 (sampling and report)
#   REPORT_PER_PITCH=4  WANDB_MODE=offline (offline | disabled | online)
#   FRESH=1              delete $RUN and start over
#   MARS_SKIP_SETUP=1    do not run launch/setup.sh (only for tests/test_quickstart.py, which runs
#                        inside an already installed .venv); PYTHON_BIN overrides .venv/bin/python there
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${MARS_SKIP_SETUP:-0}" = 1 ] || bash launch/setup.sh
export WANDB_MODE=${WANDB_MODE:-offline}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/mars_dist/torch_extensions}
PY=${PYTHON_BIN:-.venv/bin/python}
RUN=${RUN:-runs/quickstart}
TRAIN_NOTES=${TRAIN_NOTES:-512}
VALID_NOTES=${VALID_NOTES:-32}
TOK_CONFIG=${TOK_CONFIG:-configs/tokenizer/small.yaml}
TOK_STEPS=${TOK_STEPS:-800}
TOK_EVAL_EVERY=${TOK_EVAL_EVERY:-200}
AR_CONFIG=${AR_CONFIG:-configs/next_scale/small.yaml}
AR_STEPS=${AR_STEPS:-500}
AR_EVAL_EVERY=${AR_EVAL_EVERY:-250}
AR_OVERRIDES=${AR_OVERRIDES:-}
PITCHES=${PITCHES:-48 60 72}
FAMILIES=${FAMILIES:-keyboard string}
GL_ITERS=${GL_ITERS:-32}
REPORT_PER_PITCH=${REPORT_PER_PITCH:-4}
CLF_CONFIG=${CLF_CONFIG:-configs/classifier/small.yaml}
CLF_STEPS=${CLF_STEPS:-300}
CLF_EVAL_EVERY=${CLF_EVAL_EVERY:-100}
EVAL_PROCS=${EVAL_PROCS:-1}

if [ "${FRESH:-0}" = 1 ]; then echo "FRESH=1: removing $RUN"; rm -rf "$RUN"; fi
mkdir -p "$RUN"
TIMES="$RUN/step_times.txt"
: > "$TIMES"
step_start=$SECONDS
timed() {  # timed LABEL: records the seconds since the previous call
  echo "$1 $((SECONDS - step_start)) s" | tee -a "$TIMES"
  step_start=$SECONDS
}

echo "== 1/9 synthetic NSynth-format set ($TRAIN_NOTES train, $VALID_NOTES valid notes)"
$PY -m data_tools.synthetic --out "$RUN/nsynth" --split "train:$TRAIN_NOTES" --split "valid:$VALID_NOTES" --seed 0
timed "1 synthetic set:"

echo "== 2/9 shards (validation shards also keep the original audio, for the report's mel errors)"
$PY -m data_tools.shard --nsynth-root "$RUN/nsynth" --split train --out "$RUN/shards/train" --shard-size 64
$PY -m data_tools.shard --nsynth-root "$RUN/nsynth" --split valid --out "$RUN/shards/valid" --shard-size 64 --with-audio
timed "2 shards:"

echo "== 3/9 inspect shards"
for split in train valid; do $PY -m data_tools.inspect_shards "$RUN/shards/$split"; done
timed "3 inspect:"

DATA=("data.train_shards=$RUN/shards/train" "data.valid_shards=$RUN/shards/valid" "logging.wandb_mode=$WANDB_MODE")

echo "== 4/9 tokenizer: $TOK_CONFIG, $TOK_STEPS steps (reconstructions every $TOK_EVAL_EVERY steps -> $RUN/tokenizer/media/; its EMA weights exported -> $RUN/tokenizer/export/)"
$PY mars_dist/train.py --config "$TOK_CONFIG" --resume auto "run_dir=$RUN/tokenizer" "${DATA[@]}" \
  "train.max_steps=$TOK_STEPS" "stages.media.every=$TOK_EVAL_EVERY" "checkpoint.every_steps=$TOK_EVAL_EVERY"
timed "4 tokenizer training + export:"

echo "== 5/9 next-scale AR: $AR_CONFIG, $AR_STEPS steps (exported -> $RUN/next_scale/export/)"
# The AR learned the tokens of one tokenizer: if the exported weights differ from those it was
# trained on (the tokenizer trained on), continuing it would be wrong, so it starts over.
TOK_SHA=$(sha256sum "$RUN/tokenizer/export/model.safetensors" | cut -d' ' -f1)
if [ -d "$RUN/next_scale" ] && [ "$(cat "$RUN/next_scale.tokenizer-sha256" 2>/dev/null)" != "$TOK_SHA" ]; then
  echo "the tokenizer changed since the AR was trained: removing $RUN/next_scale"
  rm -rf "$RUN/next_scale"
fi
echo "$TOK_SHA" > "$RUN/next_scale.tokenizer-sha256"
# shellcheck disable=SC2086  # AR_OVERRIDES is a space-separated list of key=value words
$PY mars_dist/train.py --config "$AR_CONFIG" --resume auto "run_dir=$RUN/next_scale" "${DATA[@]}" \
  "next_scale.tokenizer_path=$RUN/tokenizer/export" "train.max_steps=$AR_STEPS" "stages.media.every=$AR_EVAL_EVERY" \
  "checkpoint.every_steps=$AR_EVAL_EVERY" $AR_OVERRIDES
timed "5 AR training + export:"

echo "== 6/9 generate: pitches $PITCHES x families $FAMILIES"
rm -rf "$RUN/samples"
# shellcheck disable=SC2086  # PITCHES and FAMILIES are space-separated lists
$PY -m mars_dist.sample --tokenizer "$RUN/tokenizer/export" --model "$RUN/next_scale/export" --out "$RUN/samples" \
  --pitch $PITCHES --family $FAMILIES --cfg 3.0 --top-p 0.95 --seed 0 --gl-iters "$GL_ITERS"
timed "6 generation:"

echo "== 7/9 evaluation classifier: $CLF_CONFIG, $CLF_STEPS steps (validation accuracy every $CLF_EVAL_EVERY; exported -> $RUN/classifier/export/)"
$PY mars_dist/train.py --config "$CLF_CONFIG" --resume auto "run_dir=$RUN/classifier" "${DATA[@]}" \
  "train.max_steps=$CLF_STEPS" "stages.validate.every=$CLF_EVAL_EVERY" "checkpoint.every_steps=$CLF_EVAL_EVERY"
timed "7 classifier training + export:"

echo "== 8/9 quick report"
# shellcheck disable=SC2086
$PY -m mars_dist.eval.report --tokenizer "$RUN/tokenizer/export" --model "$RUN/next_scale/export" --shards "$RUN/shards/valid" \
  --out "$RUN/report" --pitches $PITCHES --per-pitch "$REPORT_PER_PITCH" --gl-iters "$GL_ITERS"
timed "8 report:"

echo "== 9/9 evaluation: Table 1 on the validation notes (floor: as many training notes)"
if [ "$EVAL_PROCS" -gt 1 ]; then EVAL=("$PY" -m torch.distributed.run --standalone --nproc-per-node "$EVAL_PROCS"); else EVAL=("$PY"); fi
"${EVAL[@]}" -m mars_dist.evaluate --tokenizer "$RUN/tokenizer/export" --model "$RUN/next_scale/export" \
  --classifier "$RUN/classifier/export" --reference "$RUN/shards/valid" --floor "$RUN/shards/train" \
  --out "$RUN/eval" --gl-iters "$GL_ITERS" --cfg 3.0 --top-p 0.95 --seed 0 --no-progress
timed "9 evaluation:"

cat <<EOF

== outputs (under $RUN)
  synthetic NSynth-format set   $RUN/nsynth/nsynth-{train,valid}/
  shards + manifests            $RUN/shards/{train,valid}/
  tokenizer run                 $RUN/tokenizer/ (config.yaml, checkpoints/, wandb/)
  tokenizer reconstructions     $RUN/tokenizer/media/step-*/ (spectrogram PNGs, Griffin-Lim wavs)
  exported tokenizer            $RUN/tokenizer/export/
  next-scale AR run             $RUN/next_scale/ (config.yaml, checkpoints/, media/ with generated notes)
  exported AR                   $RUN/next_scale/export/
  generated notes               $RUN/samples/ (wav + png per note)
  evaluation classifier         $RUN/classifier/ (its validation accuracy per head in the log), export/
  quick report                  $RUN/report/metrics.json
  Table 1 metrics               $RUN/eval/ (table.md, metrics.json, features.npz, spectrograms_*.png)
  time per step                 $TIMES
EOF
