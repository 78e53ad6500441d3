#!/usr/bin/env bash
# Runs every check FleetHub has, as CI does: formatting, lints, the Rust tests, a release build,
# the compatibility suite (the unmodified Azure IoT Python and Node.js SDKs against a real hub
# on 8883 and, when the hub may bind it, 443), and the dashboard's browser tests.
#
# Works on a fresh Debian machine with only the Rust toolchain and Python 3.11: it installs what
# the tests need (a venv at .venv from tests/compat/requirements.txt, python3-venv if missing;
# nodejs and npm if missing, and tests/compat-node/node_modules by `npm ci`; Debian's chromium
# and chromium-driver if missing). Re-running reuses
# the venv while the requirements are unchanged, and node_modules while package-lock.json and
# node's version are.
#
#   scripts/test.sh            everything
#   SKIP_RUST=1 scripts/test.sh    only build the binary and run the compatibility suite
#   SKIP_FUZZ=1 scripts/test.sh    without the short fuzz run (FUZZ_SECONDS=N: N s per target)
#   PYTEST_ARGS="-k twin -x" scripts/test.sh
#   SKIP_BROWSER=1 scripts/test.sh without the dashboard's browser tests (chromium)
#   SKIP_COMPAT=1 scripts/test.sh  without `fleethub demo` and the compatibility suite (and node)
#   SKIP_RUST=1 SKIP_COMPAT=1 scripts/test.sh   only the release build and the browser tests
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/tests/compat/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON=${PYTHON:-python3}

# A run from a clean checkout gains nothing from incremental compilation, and its caches were
# a third of target/: CI once failed writing them to a full disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

SECONDS=0
section() {
    printf '\n\033[1m==== %s ====\033[0m  (%ds)\n' "$*" "$SECONDS"
}
fail() {
    printf '\n\033[1;31mFAILED: %s\033[0m\n' "$*" >&2
    exit 1
}
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '\n\033[1;31mscripts/test.sh failed (exit %d) after %ds\033[0m\n' "$rc" "$SECONDS" >&2
    fi
}
trap on_exit EXIT

apt_install() {
    # Debian packages only when something is actually missing.
    command -v apt-get >/dev/null || fail "need $*, and apt-get is not available to install it"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

section "toolchain"
command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain"
command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"
cargo --version
"$PYTHON" --version
ensure_component() { # <cargo subcommand> <rustup component>
    if ! cargo "$1" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "cargo $1 is missing and rustup is not available"
        rustup component add "$2"
    fi
}
ensure_component fmt rustfmt
ensure_component clippy clippy

section "python environment (.venv)"
make_venv() {
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's python3 lacks ensurepip until python3.X-venv is installed.
        rm -rf "$VENV"
        apt_install "python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
        "$PYTHON" -m venv "$VENV"
    fi
}
want=$( { cat "$REQUIREMENTS"; "$PYTHON" --version 2>&1; } | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c 'import azure.iot.hub, azure.iot.device, paho.mqtt, pytest, selenium' 2>/dev/null; then
    echo "reusing $VENV (requirements unchanged)"
else
    rm -rf "$VENV"
    make_venv
    "$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
    echo "$want" >"$STAMP"
fi
"$VENV/bin/python" -m pip freeze | grep -iE '^(azure-iot-hub|azure-iot-device|paho-mqtt|pytest|selenium)=='

if [ -z "${SKIP_COMPAT:-}" ]; then
    section "node environment (tests/compat-node)"
    NODE_SUITE="$ROOT/tests/compat-node"
    NODE_STAMP="$NODE_SUITE/node_modules/.lock.sha256"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    node --version
    want=$( { cat "$NODE_SUITE/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)
    if [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$want" ]; then
        echo "reusing tests/compat-node/node_modules (package-lock.json and node unchanged)"
    else
        (cd "$NODE_SUITE" && npm ci --no-audit --no-fund)
        echo "$want" >"$NODE_STAMP"
    fi
fi

if [ -z "${SKIP_RUST:-}" ]; then
    section "cargo fmt --check"
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check

    section "unused dependencies"
    "$PYTHON" scripts/check-unused-deps.py

    section "cargo clippy (-D warnings)"
    cargo clippy --workspace --all-targets -- -D warnings

    section "cargo test"
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace
        cargo test --workspace --doc
    else
        cargo test --workspace
    fi
fi

if [ -z "${SKIP_RUST:-}" ] && [ -z "${SKIP_FUZZ:-}" ]; then
    # Every fuzz target for a few seconds: replays the kept corpus and looks a little further.
    # Installs cargo-afl the first time (docs/fuzzing.md).
    section "fuzz (short)"
    scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-20}"
fi

section "cargo build --release -p fleethub"
cargo build --release -p fleethub
export FLEETHUB_BIN="$ROOT/target/release/fleethub"

if [ -z "${SKIP_COMPAT:-}" ]; then
    section "fleethub demo (the night a security fix ships; must tell its story in under 3 minutes)"
    # Exits 0 only when the gate tripped in Boston and nowhere else, Boston's rollback completed and
    # at least 99 % of the rest of the fleet runs 2.1.0.
    timeout 180 "$FLEETHUB_BIN" demo --json | tee "$ROOT/target/demo-output.txt" \
        || fail "fleethub demo did not tell its story in 3 minutes (see its output above)"
    # The hub's CPU is its own threads' (its runtime's and the store's): more than nothing and
    # less than the whole process, which also runs the 2,500 simulated devices.
    tail -n 1 "$ROOT/target/demo-output.txt" | "$PYTHON" -c '
import json, sys
cpu = json.load(sys.stdin)["cpu_seconds"]
assert 0 < cpu["hub"] < cpu["process"], cpu
print("demo CPU: hub %(hub).1f s of the whole process %(process).1f s" % cpu)' \
        || fail "fleethub demo reported no hub CPU apart from the process (cpu_seconds above)"

    section "compatibility suite (official Azure IoT SDKs against a real hub)"
    set +e
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
    "$VENV/bin/python" -m pytest tests/compat -v ${PYTEST_ARGS:-}
    rc=$?
    set -e
    case $rc in
        0) ;;
        5) fail "pytest collected no tests in tests/compat" ;;
        *) fail "compatibility suite (pytest exit $rc)" ;;
    esac
fi

if [ -z "${SKIP_BROWSER:-}" ]; then
    # The dashboard in Debian's chromium, headless, driven through chromedriver by selenium (in
    # the venv), against a real hub and a simulated fleet on ephemeral ports.
    section "browser tests (the dashboard in headless chromium)"
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt_install chromium chromium-driver
    fi
    chromium --version
    browser_start=$SECONDS
    set +e
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pytest tests/browser -v ${BROWSER_PYTEST_ARGS:-}
    rc=$?
    set -e
    echo "browser tests took $((SECONDS - browser_start)) s"
    case $rc in
        0) ;;
        5) fail "pytest collected no tests in tests/browser" ;;
        *) fail "browser tests (pytest exit $rc)" ;;
    esac
fi

section "all checks passed"
