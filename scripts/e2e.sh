#!/usr/bin/env bash
# Runs only the desktop end-to-end suite, as scripts/test.sh does; arguments go to the test
# binary (a test name to run one). Set SWITCHBOARD_SCREENSHOT=1 to refresh docs/screenshot.png and docs/chat.png.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/build-ui.sh
SWITCHBOARD_E2E=1 xvfb-run -a -s "-screen 0 1280x800x24" \
  dbus-run-session -- cargo test --locked -p switchboard --test e2e -- --test-threads=1 "$@"
if [ "${SWITCHBOARD_SCREENSHOT:-}" = 1 ]; then
  for pair in sessions.png:screenshot.png demo.png:chat.png; do
    if [ -f "artifacts/screenshots/${pair%%:*}" ]; then
      cp "artifacts/screenshots/${pair%%:*}" "docs/${pair##*:}"
      echo "e2e: docs/${pair##*:} updated"
    fi
  done
fi
