#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 15; CI uses the
# default, run longer by hand: FUZZ_SECONDS=600 bash scripts/fuzz.sh). Installs cargo-fuzz if
# missing. Uses the stable toolchain (RUSTC_BOOTSTRAP for the sanitizer-coverage flags) and no
# sanitizer, in dev mode (debug assertions on, fast to build).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-15}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
TARGETS=$(cargo fuzz list)
cargo fuzz build --dev -s none
for target in $TARGETS; do
  echo "fuzzing $target for ${SECONDS_EACH}s"
  mkdir -p "corpus/$target"
  cargo fuzz run --dev -s none "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=0 2>&1 \
    | grep -E "^(Done|==|SUMMARY|thread|artifact)" || true
  # A crash leaves an artifact; fail the run with it.
  if compgen -G "artifacts/$target/crash-*" >/dev/null || compgen -G "artifacts/$target/oom-*" >/dev/null; then
    echo "fuzz target $target found a failure:"; ls "artifacts/$target"; exit 1
  fi
done
echo "fuzz: all targets ran clean"
