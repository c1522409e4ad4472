#!/usr/bin/env bash
# The main job without an AWS account: a local moto server stands in for IAM, seeded with sample
# users; `iam-inventory sync` prints their OCSF 5003 records (only those under /engineering/),
# then a change in IAM and a second sync show the diff log.
# Needs: cargo, python3 (installs moto into ./.venv on first run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
echo "demo: building iam-inventory…" >&2
cargo build --quiet
bin="$root/target/debug/iam-inventory"

port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
  .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null && break
  sleep 0.2
done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export IAM_INVENTORY__AWS__ENDPOINT_URL="http://127.0.0.1:$port"
export IAM_INVENTORY__STORE__PATH="$work/demo.db"
export IAM_INVENTORY_CONFIG="$root/config/demo.toml"

.venv/bin/python tests/support/seed_demo.py "http://127.0.0.1:$port"
echo >&2
echo "== 1. first sync: every user under /engineering/ is new (OCSF 5003 NDJSON on stdout) ==" >&2
"$bin" sync | tee "$work/first.ndjson"
echo "== strict OCSF 1.6.0 schema check (tests/ocsf/user_inventory_info_5003_strict.schema.json) ==" >&2
.venv/bin/python - "$work/first.ndjson" <<'PY' >&2
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open("tests/ocsf/user_inventory_info_5003_strict.schema.json"))
validator = Draft202012Validator(schema)
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
failed = sum(1 for r in records if any(True for _ in validator.iter_errors(r)))
print(f"{len(records) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
echo >&2
echo "== 2. IAM changes: alice gets a new access key, bob loses MFA, contractor dave appears, carol is removed ==" >&2
.venv/bin/python tests/support/seed_demo.py "http://127.0.0.1:$port" change
echo "== second sync: only the changed users are printed ==" >&2
"$bin" sync
echo >&2
echo "== 3. the diff log (iam-inventory changes --since 1h) ==" >&2
"$bin" changes --since 1h
echo >&2
echo "== 4. the same changes as OCSF 3001 Account Change events (changes --format ocsf), first three ==" >&2
"$bin" changes --since 1h --format ocsf | head -n 3
