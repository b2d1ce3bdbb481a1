#!/usr/bin/env bash
# Build every fuzz target and run each for a bounded time from its seeds (CI's fuzz step).
#
#   fuzz/run.sh                          all targets, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=600 fuzz/run.sh note    one target for longer
#
# Environment:
#   FUZZ_SECONDS    seconds of fuzzing per target (libFuzzer -max_total_time), default 20
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang, default 10
#   FUZZ_SANITIZER  cargo-fuzz --sanitizer, default none: the only one that builds on stable Rust
#                   (the others pass -Zsanitizer, a nightly flag; `RUSTC_BOOTSTRAP=1
#                   FUZZ_SANITIZER=address` builds on stable too, for local runs, not CI). Our
#                   crates forbid unsafe code, so ASan would only watch the dependencies
#   FUZZ_PARALLEL   how many targets fuzz at once (one core each), default 1
#   CARGO_BUILD_JOBS  as for any cargo build (cargo-fuzz has no --jobs of its own)
#
# Stable Rust: cargo-fuzz's instrumentation flags (-Cpasses=sancov-module, -Cllvm-args=...) are
# stable; only the sanitizers are not, hence --sanitizer none.
#
# New inputs libFuzzer finds go to fuzz/corpus/<target>/ (not committed); a crash, hang or
# out-of-memory input goes to fuzz/artifacts/<target>/ and is printed with the command that
# reproduces it. Exit status: 0 when every target ran clean, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-10}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
FUZZ_PARALLEL="${FUZZ_PARALLEL:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked || {
    echo "fuzz: could not install cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    exit 1
  }
  # cargo finds subcommands in $CARGO_HOME/bin and on PATH; an install root elsewhere is added.
  if [ -n "${CARGO_INSTALL_ROOT:-}" ]; then export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"; fi
  cargo fuzz --version >/dev/null || exit 1
fi

all_targets=$(cargo fuzz list) || exit 1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  # shellcheck disable=SC2206
  targets=($all_targets)
fi
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$all_targets"; then
    echo "fuzz: no target '$t' (targets: $(echo $all_targets))" >&2
    exit 1
  fi
done

echo "fuzz: building ${#targets[@]} target(s) (sanitizer $FUZZ_SANITIZER)"
if ! cargo fuzz build --sanitizer "$FUZZ_SANITIZER"; then
  echo "fuzz: build failed" >&2
  exit 1
fi

# Run the built binaries directly (what `cargo fuzz run` does after building), FUZZ_PARALLEL at
# a time.
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
logs="fuzz/target/logs"
mkdir -p "$logs"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

start_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  : >"$logs/$t.start"
  rm -f "$logs/$t.rc"
  echo "fuzz: $t for ${FUZZ_SECONDS}s"
  # Seeds are read, never written: new inputs go to the first folder, fuzz/corpus/<target>.
  (
    "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$FUZZ_SECONDS" \
      -timeout="$FUZZ_TIMEOUT" -print_final_stats=1 "fuzz/corpus/$t" "fuzz/seeds/$t" \
      >"$logs/$t.log" 2>&1
    echo $? >"$logs/$t.rc"
  ) &
}

passed=0
failed=0
failures=()
report_one() {
  local t=$1 log="$logs/$1.log" rc found runs cov why f
  rc=$(cat "$logs/$t.rc" 2>/dev/null || echo "?")
  found=$(find "fuzz/artifacts/$t" -type f -newer "$logs/$t.start" 2>/dev/null | sort)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  if [ "$rc" = 0 ] && [ -z "$found" ]; then
    passed=$((passed + 1))
    echo "fuzz: $t ok: ${runs:-?} runs, ${cov:-cov: ?}"
    return
  fi
  failed=$((failed + 1))
  echo "fuzz: $t FAILED (exit $rc); from its log ($log):"
  why=$(grep -E -A8 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|deadly signal' "$log" | head -n 30)
  if [ -z "$why" ]; then why=$(tail -n 30 "$log"); fi
  sed 's/^/    /' <<<"$why"
  if [ -z "$found" ]; then
    failures+=("$t (exit $rc, no input saved; see $log)")
  fi
  for f in $found; do
    echo "fuzz: $t: reproducing input: $f ($(wc -c <"$f") bytes)"
    echo "fuzz:   reproduce: cargo fuzz run --sanitizer $FUZZ_SANITIZER $t $f"
    if [ "$(wc -c <"$f")" -le 4096 ]; then
      echo "fuzz:   input as base64: $(base64 -w0 "$f")"
    fi
    failures+=("$t: $f")
  done
}

batch=()
for t in "${targets[@]}"; do
  start_one "$t"
  batch+=("$t")
  if [ ${#batch[@]} -ge "$FUZZ_PARALLEL" ]; then
    wait
    for b in "${batch[@]}"; do report_one "$b"; done
    batch=()
  fi
done
wait
for b in ${batch[@]+"${batch[@]}"}; do report_one "$b"; done

echo "fuzz: ${FUZZ_SECONDS}s per target, $FUZZ_PARALLEL at a time, sanitizer $FUZZ_SANITIZER"
for f in ${failures[@]+"${failures[@]}"}; do
  echo "fuzz: failed: $f"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
