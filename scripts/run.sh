#!/usr/bin/env bash
# Installs what is missing, builds Switchboard and starts it. Without an agent server or a
# configuration it starts the fake agent server from the test kit so there is something to talk to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p switchboard-gateway -p switchboard-testkit
config="${SWITCHBOARD_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/switchboard/config.toml}"
if [ ! -f "$config" ]; then
  echo "run: no configuration at $config; starting the fake agent server and a demo configuration"
  demo="$(mktemp -d)"
  ./target/release/fake-stakpak --port 0 > "$demo/fake.out" &
  trap 'kill $! 2>/dev/null || true' EXIT
  for _ in $(seq 50); do grep -q '^token=' "$demo/fake.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^url=//p' "$demo/fake.out")
  token=$(sed -n 's/^token=//p' "$demo/fake.out")
  printf '[server]\nurl = "%s"\ntoken = "%s"\n' "$url" "$token" > "$demo/config.toml"
  config="$demo/config.toml"
  export SWITCHBOARD_DATA_DIR="$demo/data"
fi
exec ./target/release/switchboard-gateway --config "$config"
