#!/usr/bin/env bash
# Runs every test troupe has, on a fresh machine too: lint, Rust unit + integration tests against
# the real binary, then the compatibility suites with the official Python and JavaScript clients,
# SDKs and Crawlee (installed here into tests/compat/.venv and tests/compat/js/node_modules),
# then a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (release)"
cargo build --release --workspace --locked

step "Rust unit and integration tests"
cargo test --release --workspace --locked

step "fuzz targets (bounded run)"
bash scripts/fuzz.sh

step "compatibility test dependencies"
bash scripts/setup-compat.sh

export TROUPE_BIN="$ROOT/target/release/troupe"

step "Python compatibility tests (apify-client, apify SDK, crawlee)"
set +e
tests/compat/.venv/bin/python -m pytest -q -p no:cacheprovider tests/compat/python
py_status=$?
set -e
# pytest exits 5 when it collected nothing; treat that as a failure of the suite layout.
[ "$py_status" -eq 0 ] || { echo "python compat tests failed ($py_status)"; exit 1; }

step "JavaScript compatibility tests (apify-client, apify SDK, crawlee)"
(cd tests/compat/js && node --test --test-concurrency=2 ./*.test.mjs)

if [ -x target/release/troupe-bench ]; then
  step "benchmark smoke run"
  target/release/troupe-bench --quick --no-gate --out target/bench-smoke.json
fi

step "all tests passed"
