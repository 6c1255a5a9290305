#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each (not part of scripts/test.sh: it needs
# nightly Rust and minutes of CPU). Installs cargo-fuzz from crates.io and a nightly toolchain
# with rustup when missing. New corpus entries go to fuzz/corpus/ (ignored by git), crashes to
# fuzz/artifacts/; the checked-in seeds are fuzz/seeds/ (see fuzz/README.md).
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decode_request frame_reader)
fi

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  # Inputs are at most 64 KiB, so an allocation over 64 MiB means a declared length was
  # trusted; -malloc_limit_mb reports it as a crash.
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65600 -malloc_limit_mb=64 -rss_limit_mb=1024 \
    -print_final_stats=1
done
