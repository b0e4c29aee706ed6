#!/usr/bin/env bash
# The project's one run command: installs the pinned tools, builds refbus, and runs `refbus up`
# (a local nats-server with JetStream and every agency's adapter). Arguments go to `refbus up`,
# e.g. `scripts/up.sh --demo` or `scripts/up.sh --config my-kabupaten.toml`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

scripts/install-tools.sh
export REFBUS_NATS_SERVER="$repo_root/.tools/bin/nats-server"
cargo build --release --quiet -p refbus
exec target/release/refbus up "$@"
