#!/usr/bin/env bash
# Installs the Python tools the tests and the demo need (moto's IAM/STS server, boto3, jsonschema)
# into ./.venv. Idempotent: does nothing when requirements.txt has not changed since the last install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/tests/support/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/moto_server" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "bootstrap: $python not found; install Python 3.9+ (e.g. apt-get install python3 python3-venv)" >&2; exit 1; }
echo "bootstrap: installing moto and boto3 into $venv" >&2
if ! "$python" -m venv "$venv" 2>/dev/null; then
  # Debian/Ubuntu ship venv separately.
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    "$python" -m venv "$venv"
  else
    echo "bootstrap: '$python -m venv' failed; install python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
