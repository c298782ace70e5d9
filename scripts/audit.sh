#!/usr/bin/env bash
# Audits the dependency tree: cargo-deny (licenses, bans on duplicate crates, sources, and the
# RustSec advisories) by deny.toml, and `npm audit` for the UI's production packages.
# The two advisory checks need their databases (github.com/rustsec/advisory-db and the npm
# registry's audit endpoint); where the machine cannot reach one, that check says so and is
# skipped, and everything else still fails the run on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "audit: installing cargo-deny"
  cargo install cargo-deny --locked
fi

echo "audit: cargo deny check bans licenses sources"
cargo deny --locked check bans licenses sources

fetched=$(mktemp)
trap 'rm -f "$fetched"' EXIT
if cargo deny --locked fetch db >"$fetched" 2>&1; then
  echo "audit: cargo deny check advisories"
  cargo deny --locked check --disable-fetch advisories
else
  echo "audit: SKIPPED the RustSec advisories: the advisory database cannot be fetched from here"
  sed 's/^/audit:   /' "$fetched" | tail -3
fi

echo "audit: npm audit --omit=dev"
report=$(npm audit --omit=dev --json 2>/dev/null || true)
verdict=$(node -e '
  let report; try { report = JSON.parse(process.argv[1]); } catch { report = null; }
  if (!report || !report.metadata || !report.metadata.vulnerabilities) {
    const why = report && (report.message || (report.error && (report.error.summary || report.error.code)));
    console.log("unreachable " + (why || "no answer"));
  } else {
    const v = report.metadata.vulnerabilities;
    console.log((v.total > 0 ? "found " : "clean ") + JSON.stringify(v));
  }' "$report")
case "$verdict" in
  clean*) echo "audit: npm: no known vulnerabilities in production packages" ;;
  found*) npm audit --omit=dev || true; echo "audit: npm: ${verdict#found }" >&2; exit 1 ;;
  *) echo "audit: SKIPPED npm audit: the registry's audit endpoint did not answer (${verdict#unreachable })" ;;
esac
echo "audit: ok"
