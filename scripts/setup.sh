#!/usr/bin/env bash
# Installs what building and testing Switchboard needs on a fresh Debian/Ubuntu machine, and
# nothing that is already there. Safe to run again. Runs without a terminal (CI has no stdin).
#
# - system packages: the compiler tool chain, WebKitGTK and the tray library for the desktop app,
#   and the headless desktop the end-to-end tests drive (Xvfb, D-Bus, dunst, a tray host,
#   WebKitWebDriver, which the tests attach to the app's window process), and a Secret Service
#   (gnome-keyring) for the token tests;
# - the Rust tool chain (rustup) when cargo is missing;
# - Node 20+ with npm (the window's UI build) and the UI's packages (npm ci, else npm install).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
packages=(
  build-essential pkg-config file curl ca-certificates
  # The desktop app: WebKitGTK (pulls GTK 3, libsoup 3), the tray (loaded at run time), SVG icons.
  libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev
  # The end-to-end tests: a virtual X server, a session bus, a notification daemon and its CLI,
  # a StatusNotifier host for the tray, the WebKit WebDriver, and small X tools.
  xvfb xauth dbus dbus-x11 dunst libnotify-bin at-spi2-core
  haskell-status-notifier-item-utils webkit2gtk-driver imagemagick x11-utils xdotool python3
  # The token tests: a real Secret Service (gnome-keyring) and libsecret's CLI to look inside it.
  gnome-keyring libsecret-tools
)
for pkg in "${packages[@]}"; do
  have_pkg "$pkg" || need_apt+=("$pkg")
done
if ! command -v node >/dev/null 2>&1; then
  need_apt+=(nodejs npm)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain (rustup)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true

# The UI is built with Vite 7, which needs Node 20 or later.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node $(node --version 2>/dev/null || echo 'is missing') is too old; the UI build needs Node 20 or later" >&2
  echo "setup: install it (e.g. from https://nodejs.org or your distribution's backports) and run this again" >&2
  exit 1
fi

# The UI's packages, exactly as package-lock.json pins them; again only when the lock changed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing the UI's npm packages"
  # `npm ci` insists that the lock lists every platform's optional packages (esbuild, rollup and
  # the Tauri CLI ship one per OS); a registry mirror that only carries this platform's can never
  # satisfy that, so fall back to `npm install`, which keeps the locked versions it can resolve.
  npm ci --no-audit --no-fund || npm install --no-audit --no-fund
fi
# The window's UI, which the desktop app embeds when it is compiled.
bash scripts/build-ui.sh

