#!/usr/bin/env bash
# Builds the window's web UI (ui/dist) when it is missing or older than its sources. The desktop
# app embeds ui/dist when it is compiled, and its build script only checks that it is there and
# current, so run this (scripts/setup.sh does) before `cargo build`, `cargo test` or clippy after
# changing the UI. `npm run tauri build` runs `npm run build` itself.
set -euo pipefail
cd "$(dirname "$0")/.."
built=ui/dist/index.html
if [ -f "$built" ] && [ -z "$(find ui/src ui/index.html ui/vite.config.ts ui/tsconfig.json package.json -newer "$built" -print -quit)" ]; then
  exit 0
fi
echo "build-ui: building the web UI (npm run build)"
npm run build --silent
