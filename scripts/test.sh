#!/usr/bin/env bash
# The project's one test command: installs the pinned tools, points the tests at them, and runs
# every test of the workspace (cargo-nextest when installed, else cargo test).
# Extra arguments go to cargo, e.g. `scripts/test.sh -p refbus-testkit`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

scripts/install-tools.sh

export REFBUS_NATS_SERVER="$repo_root/.tools/bin/nats-server"
export PATH="$repo_root/.tools/bin:$PATH"

# Cargo ignores -p when --workspace is given, so asking for packages drops --workspace.
# The whole workspace also turns on the testkit's `browser` feature, so the browser tests (headless
# Chromium from install-tools.sh) run; with -p, pass `--features refbus-testkit/browser` yourself
# when the selected package has the testkit as a dependency.
scope=(--workspace --features refbus-testkit/browser)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        -p | -p* | --package | --package=*) scope=() ;;
    esac
done

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run "${scope[@]}" --no-fail-fast "$@"
else
    exec cargo test "${scope[@]}" --no-fail-fast "$@"
fi
