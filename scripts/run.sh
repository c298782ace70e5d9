#!/usr/bin/env bash
# Installs what is missing, builds Switchboard and starts the desktop app (tray and window).
# `--headless` starts the headless gateway instead (for a server, or a machine without a display).
#
# Without a configuration file it starts the demo: the test kit's stand-in agent server (it
# streams its replies and asks before it "runs" a command) and a throwaway configuration, and the
# window opens on the desktop chat, saying it is a demo.
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
  echo "run: no configuration at $config; starting the demo: a stand-in agent server and a throwaway configuration"
  demo="$(mktemp -d)"
  ./target/release/fake-stakpak --port 0 --demo > "$demo/fake.out" &
  fake=$!
  trap 'kill $fake 2>/dev/null || true; rm -rf "$demo"' EXIT
  for _ in $(seq 50); do grep -q '^token=' "$demo/fake.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^url=//p' "$demo/fake.out")
  token=$(sed -n 's/^token=//p' "$demo/fake.out")
  # Throwaway: the demo's settings, data and keyring entries stay in this directory, never in
  # the real configuration (no keyring: its tokens go to a file beside the configuration).
  printf '# The demo: the stand-in agent server from the test kit. Thrown away when it ends.\n[server]\nurl = "%s"\ntoken = "%s"\n\n[gateway]\napproval_mode = "ask"\n\n[api]\nlisten = "127.0.0.1:0"\n' "$url" "$token" > "$demo/config.toml"
  config="$demo/config.toml"
  args=(--data-dir "$demo/data")
  [ "$headless" = 1 ] || args+=(--demo)
  export SWITCHBOARD_KEYRING=off
fi

if [ "$headless" = 1 ]; then
  ./target/release/switchboard-gateway --config "$config" "${args[@]}"
else
  # Not exec: the trap above stops the fake server when the app quits.
  ./target/release/switchboard --config "$config" "${args[@]}"
fi
