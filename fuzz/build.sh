#!/usr/bin/env bash
# Builds the fuzz targets with cargo-fuzz (installing it from crates.io when
# missing) and, with --run SECONDS, runs each target that long as a smoke test.
#
#   fuzz/build.sh              # build every target
#   fuzz/build.sh --run 10     # build, then fuzz each target for 10 s
#
# RUSTC_BOOTSTRAP=1 lets the stable compiler accept the -Z flags cargo-fuzz
# passes for the sanitizer; it is set for these commands only.
set -euo pipefail
cd "$(dirname "$0")/.."

run_secs=0
if [[ ${1:-} == --run ]]; then
  run_secs=${2:?--run needs a number of seconds}
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build

if ((run_secs > 0)); then
  for target in $(cargo fuzz list); do
    echo "fuzzing $target for ${run_secs}s" >&2
    corpus=$(mktemp -d)
    log=$(mktemp)
    if ! cargo fuzz run "$target" "$corpus" -- -max_total_time="$run_secs" -dict=fuzz/smtp.dict \
      -print_final_stats=1 >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "fuzz target $target failed" >&2
      exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
    rm -rf "$corpus" "$log"
  done
fi
