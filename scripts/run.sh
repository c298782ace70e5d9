#!/usr/bin/env bash
# Installs what is missing, builds Switchboard and starts the desktop app (tray and window).
# `--headless` starts the headless gateway instead (for a server, or a machine without a display).
#
# Without a configuration file it starts the fake agent server from the test kit and a demo
# configuration so there is something to talk to.
set -euo pipefail
cd "$(dirname "$0")/.."
headless=0
[ "${1:-}" = "--headless" ] && headless=1
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$headless" = 0 ] && [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "run: no display (DISPLAY/WAYLAND_DISPLAY unset); starting the headless gateway instead"
  headless=1
fi

if [ "$headless" = 1 ]; then
  cargo build --release --locked -p switchboard-gateway -p switchboard-testkit
else
  cargo build --release --locked -p switchboard -p switchboard-testkit
fi

config="${SWITCHBOARD_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/switchboard/config.toml}"
args=()
if [ ! -f "$config" ]; then
  echo "run: no configuration at $config; starting the fake agent server and a demo configuration"
  demo="$(mktemp -d)"
  ./target/release/fake-stakpak --port 0 > "$demo/fake.out" &
  fake=$!
  trap 'kill $fake 2>/dev/null || true' EXIT
  for _ in $(seq 50); do grep -q '^token=' "$demo/fake.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^url=//p' "$demo/fake.out")
  token=$(sed -n 's/^token=//p' "$demo/fake.out")
  printf '# A demo configuration: the fake agent server from the test kit.\n[server]\nurl = "%s"\ntoken = "%s"\n' "$url" "$token" > "$demo/config.toml"
  config="$demo/config.toml"
  args=(--data-dir "$demo/data")
fi

if [ "$headless" = 1 ]; then
  ./target/release/switchboard-gateway --config "$config" "${args[@]}"
else
  # Not exec: the trap above stops the fake server when the app quits.
  ./target/release/switchboard --config "$config" "${args[@]}"
fi
