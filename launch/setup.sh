#!/usr/bin/env bash
# Creates ./.venv and installs exactly launch/requirements.lock (every transitive dependency of
# mars_dist[dev] at an exact version and wheel hash; torch==2.11.0 + torchaudio==2.11.0 as one pair),
# then mars_dist itself (editable), then runs a smoke check of the stack (launch/envcheck.py smoke).
#
# Installer: uv when it can be bootstrapped (launch/installers.lock pins it), else plain pip; both
# install the same locked wheels with --no-deps (the lock is complete, nothing is resolved here).
# DeepSpeed is built after the rest, without build isolation and without its optional ops.
# Idempotent: when the venv already matches the lock and pyproject.toml, it installs nothing.
#
# Knobs: PYTHON (interpreter for the venv, default python3), VENV (default .venv),
#        LOCK (default launch/requirements.lock), MARS_INSTALLER=auto|uv|pip (default auto).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=${LOCK:-launch/requirements.lock}
INSTALLER=${MARS_INSTALLER:-auto}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
stamp="$VENV/.mars_dist-setup"
wanted=$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)

if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && "$VPY" launch/envcheck.py status --lock "$LOCK" >/dev/null; then
  echo "setup: $VENV already matches $LOCK: nothing to install"
else
  start=$SECONDS
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VPY" launch/envcheck.py split --lock "$LOCK" "$tmp/main.txt" "$tmp/late.txt"
  if [ "$INSTALLER" != pip ] && "$VPY" -m pip install -q --disable-pip-version-check --require-hashes \
       -r launch/installers.lock; then
    use_uv=1
  elif [ "$INSTALLER" = uv ]; then
    echo "setup: error: MARS_INSTALLER=uv but uv could not be installed from launch/installers.lock" >&2
    exit 1
  else
    use_uv=0
  fi
  if [ "$use_uv" = 1 ]; then
    install() { "$VENV/bin/uv" pip install --quiet --python "$VPY" --no-deps "$@"; }
  else
    install() { "$VPY" -m pip install -q --disable-pip-version-check --no-deps "$@"; }
  fi
  echo "setup: installing $LOCK into $VENV with $([ "$use_uv" = 1 ] && echo uv || echo pip)"
  install --require-hashes -r "$tmp/main.txt"
  DS_BUILD_OPS=0 install --no-build-isolation --require-hashes -r "$tmp/late.txt"
  install --no-build-isolation -e .
  problems=$("$VPY" launch/envcheck.py status --lock "$LOCK") || {
    echo "setup: error: after installing, $VENV still differs from $LOCK:" >&2
    echo "$problems" >&2
    exit 1
  }
  echo "$wanted" > "$stamp"
  echo "setup: installed in $((SECONDS - start)) s"
fi
"$VPY" launch/envcheck.py smoke
echo "mars_dist installed in $(pwd)/$VENV"
