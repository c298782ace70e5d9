#!/usr/bin/env bash
# Builds the Linux packages — a .deb and an .rpm with the desktop app, the headless gateway and its
# systemd user unit — and checks them. With --install it also installs the .deb on this machine
# (dpkg -i, as root), checks the installed programs and unit, and removes it again.
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
for path in usr/bin/switchboard usr/bin/switchboard-gateway usr/lib/systemd/user/switchboard-gateway.service usr/share/applications/Switchboard.desktop; do
  grep -Eq "[ /]$path\$" <<<"$contents" || { echo "package: $path is missing from $deb" >&2; exit 1; }
done
echo "package: $rpm"

if [ "${1:-}" = "--install" ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo dpkg -i "$deb"
  trap '$sudo dpkg -r switchboard >/dev/null' EXIT
  /usr/bin/switchboard --version
  /usr/bin/switchboard-gateway --version
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /usr/lib/systemd/user/switchboard-gateway.service
    echo "package: the gateway's unit verifies"
  fi
  echo "package: installed and checked; removing"
fi
echo "package: ok"
