#!/usr/bin/env bash
# Builds the Linux packages — a .deb and an .rpm with the desktop app, the headless gateway and its
# systemd user unit — and checks them. With --install it also installs the .deb on this machine
# (as root, through apt so its dependencies come too), runs the installed app under the end-to-end
# harness and the installed gateway against a fake agent server, checks the gateway's units
# (running one under systemd --user where a user manager runs), and removes it again.
# AppImage is not built here: Tauri's AppImage bundler downloads its tools while bundling.
# Usage: scripts/package.sh [--install]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
npm run tauri -- build --bundles deb,rpm

deb=$(ls -t target/release/bundle/deb/*.deb | head -1)
rpm=$(ls -t target/release/bundle/rpm/*.rpm | head -1)
echo "package: $deb"
dpkg-deb -I "$deb" | sed -n 's/^ //p' | grep -E '^(Package|Version|Depends|Recommends|Section):'
contents=$(dpkg-deb -c "$deb")
for path in usr/bin/switchboard usr/bin/switchboard-window usr/bin/switchboard-gateway usr/lib/systemd/user/switchboard-gateway.service usr/share/applications/Switchboard.desktop; do
  grep -Eq "[ /]$path\$" <<<"$contents" || { echo "package: $path is missing from $deb" >&2; exit 1; }
done
echo "package: $rpm"

if [ "${1:-}" = "--install" ]; then
  # Installs the .deb as a user would, runs the installed programs for real, and removes it.
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  scratch=$(mktemp -d)
  fake=""
  cleanup() {
    [ -n "$fake" ] && kill "$fake" 2>/dev/null || true
    $sudo dpkg -r switchboard >/dev/null 2>&1 || true
    rm -rf "$scratch"
  }
  trap cleanup EXIT
  # What the package depends on comes from the distribution (apt resolves it; dpkg alone does not).
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "./$deb" \
    || { $sudo dpkg -i "$deb" || true; $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -f -y -qq --no-install-recommends; }
  /usr/bin/switchboard --version
  /usr/bin/switchboard-gateway --version

  # The installed app, driven by the end-to-end suite: its window, its tray, a chat answered.
  echo "package: the installed app under the end-to-end harness"
  SWITCHBOARD_E2E_APP=/usr/bin/switchboard bash scripts/e2e.sh \
    a_chat_message_shows_in_sessions_with_its_reply turning_a_channel_off_in_the_tray

  # The installed gateway: its check against an agent server (the test kit's fake).
  cargo build --locked -q -p switchboard-testkit --bin fake-stakpak
  target/debug/fake-stakpak --port 0 >"$scratch/fake.out" &
  fake=$!
  for _ in $(seq 100); do grep -q '^token=' "$scratch/fake.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^url=//p' "$scratch/fake.out")
  token=$(sed -n 's/^token=//p' "$scratch/fake.out")
  printf '[server]\nurl = "%s"\ntoken = "%s"\n' "$url" "$token" >"$scratch/config.toml"
  check=$(/usr/bin/switchboard-gateway --config "$scratch/config.toml" --data-dir "$scratch/data" check)
  echo "$check"
  grep -q "agent server: .* ok" <<<"$check" || { echo "package: the installed gateway could not reach the agent server" >&2; exit 1; }

  # Its units: the packaged one, and the one `service install` writes for a user.
  HOME="$scratch/home" XDG_CONFIG_HOME="$scratch/home/.config" /usr/bin/switchboard-gateway \
    --config "$scratch/config.toml" --data-dir "$scratch/data" service install --no-start
  written="$scratch/home/.config/systemd/user/switchboard-gateway.service"
  [ -f "$written" ] || { echo "package: service install wrote no unit at $written" >&2; exit 1; }
  systemd-analyze verify /usr/lib/systemd/user/switchboard-gateway.service "$written"
  echo "package: both units verify"
  # Where a systemd user manager runs, the written unit (this test's configuration, not the
  # user's) runs under it for a moment; `link` refuses if the user has a unit of that name.
  if systemctl --user show-environment >/dev/null 2>&1 && systemctl --user link "$written" >/dev/null 2>&1; then
    systemctl --user start switchboard-gateway.service
    sleep 2
    state=$(systemctl --user is-active switchboard-gateway.service || true)
    systemctl --user stop switchboard-gateway.service || true
    systemctl --user disable switchboard-gateway.service >/dev/null 2>&1 || true
    [ "$state" = active ] || { echo "package: the gateway's unit did not stay up under systemd --user ($state)" >&2; exit 1; }
    echo "package: the gateway ran as a systemd user service"
  else
    echo "package: no systemd user manager here (or a unit of that name is the user's); the units were verified"
  fi
  HOME="$scratch/home" XDG_CONFIG_HOME="$scratch/home/.config" /usr/bin/switchboard-gateway service uninstall
  [ ! -e "$written" ] || { echo "package: service uninstall left $written" >&2; exit 1; }

  echo "package: removing"
  $sudo dpkg -r switchboard
  for path in /usr/bin/switchboard /usr/bin/switchboard-window /usr/bin/switchboard-gateway /usr/lib/systemd/user/switchboard-gateway.service; do
    [ ! -e "$path" ] || { echo "package: $path is left after removal" >&2; exit 1; }
  done
  echo "package: installed, run and removed cleanly"
fi
echo "package: ok"
