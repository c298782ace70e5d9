#!/usr/bin/env bash
# Installs what is missing, then runs every check and test: formatting, lints, unit and
# integration tests, the UI's tests, and the desktop app end to end (its real window over
# WebDriver, its tray over D-Bus, its notifications on a real daemon) in a virtual X server with
# its own session bus; then audits the dependency tree and builds, installs, runs and removes the
# packages. This is what CI runs (through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
# A one-off build gains nothing from incremental compilation, whose caches are gigabytes on disk.
export CARGO_INCREMENTAL=0
# CI once ran out of disk in the middle of a build: say what is free at each step.
disk() { echo "   (disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free; target/ $(du -sh target/ 2>/dev/null | cut -f1))"; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
disk
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
disk
echo "== cargo test"
# The end-to-end suite skips here (no desktop); it runs for real below.
cargo test --workspace --locked
disk
echo "== UI tests (vitest)"
npm test --silent
disk
echo "== end to end: the desktop app under Xvfb, D-Bus, dunst and a tray host"
SWITCHBOARD_E2E=1 xvfb-run -a -s "-screen 0 1280x800x24" \
  dbus-run-session -- cargo test --locked -p switchboard --test e2e -- --test-threads=1
disk
echo "== audit: licenses, duplicate crates, sources, advisories (cargo-deny); npm audit"
bash scripts/audit.sh
disk
echo "== packages: build the .deb and .rpm, install the .deb, run what it installed, remove it"
bash scripts/package.sh --install
disk
echo "== all passed; screenshots in artifacts/screenshots/"
