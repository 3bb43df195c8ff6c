#!/usr/bin/env bash
# For maintainers: regenerates launch/requirements.lock from pyproject.toml (every transitive
# dependency of mars_dist[dev], exact versions + wheel hashes, for every platform and Python >= 3.10)
# and launch/installers.lock (the pip and uv that set-up bootstraps), installs the new lock into a
# throw-away venv with launch/setup.sh (smoke check included), and only then replaces the old files.
# Pins that must stay exact (torch==2.11.0 + torchaudio==2.11.0) live in pyproject.toml.
#
# Knobs: PYTHON (default python3), PIP_PIN / UV_PIN (installer versions, default the current ones),
#        KEEP_VENV=1 keeps the throw-away venv and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
current() { sed -n "s/^$1==\([^ ]*\).*/\1/p" launch/installers.lock; }
PIP_PIN=${PIP_PIN:-$(current pip)}
UV_PIN=${UV_PIN:-$(current uv)}
tmp=$(mktemp -d)
[ "${KEEP_VENV:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/tool"
"$tmp/tool/bin/pip" install -q "uv==$UV_PIN"
compile() {  # compile INPUT OUTPUT [uv options]
  "$tmp/tool/bin/uv" pip compile "$1" -o "$2" --universal --python-version 3.10 --generate-hashes \
    --custom-compile-command "bash launch/relock.sh" --quiet "${@:3}"
}
printf 'pip==%s\nuv==%s\n' "$PIP_PIN" "$UV_PIN" > "$tmp/installers.in"
compile "$tmp/installers.in" "$tmp/installers.lock"
compile pyproject.toml "$tmp/requirements.lock" --extra dev
echo "relock: installing the new lock into a throw-away venv ($tmp/venv)"
VENV="$tmp/venv" LOCK="$tmp/requirements.lock" bash launch/setup.sh
if diff <(grep -E '^[A-Za-z0-9]' launch/requirements.lock) <(grep -E '^[A-Za-z0-9]' "$tmp/requirements.lock"); then
  echo "relock: no version changed"
fi
cp "$tmp/installers.lock" launch/installers.lock
cp "$tmp/requirements.lock" launch/requirements.lock
echo "relock: launch/requirements.lock and launch/installers.lock updated; commit them with pyproject.toml"
if [ "${KEEP_VENV:-0}" = 1 ]; then echo "relock: throw-away venv kept at $tmp/venv"; fi
