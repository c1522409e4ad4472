#!/usr/bin/env bash
# The test command: installs what the tests need (moto into ./.venv), then format check, lints,
# unit and integration tests (real moto, real HTTP receivers, real SQLite), and the deploy/ checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/bootstrap.sh
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --locked
echo "== deploy/ checks" >&2
bash scripts/check-deploy.sh
