#!/usr/bin/env bash
# Runs FleetHub's coverage-guided fuzz targets (fuzz/, cargo-afl on the stable toolchain) and
# fails if any of them finds a crash or a hang. See docs/fuzzing.md.
#
#   scripts/fuzz.sh                          every target for 60 s
#   scripts/fuzz.sh --seconds 3600 query     one target for an hour
#   scripts/fuzz.sh --keep ...               afterwards, minimize what the run found into
#                                            fuzz/corpus/<target> (afl-cmin), to commit
#
# Installs what it needs on a Debian machine that has Rust: make and a C compiler (apt) and
# cargo-afl, pinned, which builds its own AFL++ into ~/.local/share/afl.rs. Each run starts from
# fuzz/seeds/<target> plus fuzz/corpus/<target>; afl's output goes to fuzz/target/afl/<target>.
#
# Targets run one after another, each on one core. Environment: FUZZ_TIMEOUT_MS (afl's
# per-input timeout, default 2000: generous, because the machine may be busy) and FUZZ_WORK
# (where afl's output goes, default fuzz/target/afl; use another for a long run in the
# background while you rebuild).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
FUZZ="$ROOT/fuzz"
CARGO_AFL_VERSION=0.18.2
ALL_TARGETS=(mqtt_codec mqtt_topic query credentials twin_patch)

seconds=60
keep=""
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -d "$FUZZ/seeds/$t" ] || { echo "unknown target '$t'; targets: ${ALL_TARGETS[*]}" >&2; exit 2; }
done

apt_install() {
    command -v apt-get >/dev/null || { echo "need $*, and apt-get is not available" >&2; exit 1; }
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# cargo-afl compiles AFL++ (C, make) when it is installed.
if ! command -v make >/dev/null || ! command -v cc >/dev/null; then
    apt_install make gcc libc6-dev
fi
if ! cargo afl --version 2>/dev/null | grep -q "^cargo-afl $CARGO_AFL_VERSION "; then
    echo "installing cargo-afl $CARGO_AFL_VERSION (builds AFL++; about two minutes)"
    cargo install --locked --force cargo-afl --version "$CARGO_AFL_VERSION"
fi
# AFL++ is built per rustc version: a new toolchain needs it built again.
if ! cargo afl --version | grep -q "AFL++ version"; then
    cargo afl config --build --force
fi
cargo afl --version
# The AFL++ that cargo-afl built. Its tools look for each other on PATH first, where another
# AFL++ (Debian's afl++ package, 4.04c) would answer with options they do not know.
rustc_id="rustc-$(rustc -vV | sed -n 's/^release: //p')-$(rustc -vV | sed -n 's/^commit-hash: //p' | cut -c1-7)"
AFL_BIN="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/$rustc_id/afl.rs-$CARGO_AFL_VERSION/afl/bin"
[ -x "$AFL_BIN/afl-showmap" ] || { echo "cargo-afl's AFL++ is not in $AFL_BIN" >&2; exit 1; }
export PATH="$AFL_BIN:$PATH"

# An explicit --target keeps cargo-afl's RUSTFLAGS (opt-level 3, one codegen unit, coverage
# instrumentation) off build scripts and proc macros, which makes a clean build about a third
# cheaper.
HOST=$(rustc -vV | sed -n 's/^host: //p')
RELEASE="$FUZZ/target/$HOST/release"
echo "building the fuzz targets (${RELEASE#"$ROOT/"})"
# Not --locked: fuzz/Cargo.lock follows the crates' manifests, which change without anyone
# thinking of fuzz/; a dependency they add resolves here on the next build (commit the lock).
(cd "$FUZZ" && cargo afl build --release --bins --target "$HOST")

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_QUIET=1
# afl wants crashes to dump core rather than go to a handler; without root (or in a container)
# core_pattern cannot be changed, and afl sees crashes all the same through the signal.
if [ "$(head -c1 /proc/sys/kernel/core_pattern 2>/dev/null)" = "|" ]; then
    export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
fi

stat_of() { # <fuzzer_stats> <key>
    sed -n "s/^$2 *: *//p" "$1"
}

failed=()
summary=()
for t in "${targets[@]}"; do
    work="${FUZZ_WORK:-$FUZZ/target/afl}/$t"
    rm -rf "$work"
    mkdir -p "$work/in"
    # The run uses its own copy, so a rebuild meanwhile cannot change the binary under afl.
    bin="$work/$t"
    cp "$RELEASE/$t" "$bin"
    for dir in seeds corpus; do
        [ -d "$FUZZ/$dir/$t" ] || continue
        for f in "$FUZZ/$dir/$t"/*; do
            [ -f "$f" ] && cp "$f" "$work/in/$dir-$(basename "$f")"
        done
    done
    # afl-fuzz skips a kept input that crashes with only a warning: replay them all first, so
    # that a regression fails here with the input and the panic.
    replay_failed=""
    for f in "$work/in"/*; do
        if ! RUST_BACKTRACE=0 timeout 10 "$bin" <"$f" >"$work/replay.log" 2>&1; then
            tail -5 "$work/replay.log"
            echo "FOUND (a kept input fails again): $f"
            echo "  reproduce: $bin < '$f'"
            replay_failed=1
        fi
    done
    if [ -n "$replay_failed" ]; then
        failed+=("$t")
        continue
    fi
    echo "fuzzing $t for ${seconds}s ($(ls "$work/in" | wc -l) inputs)"
    set +e
    cargo afl fuzz -V "$seconds" -t "${FUZZ_TIMEOUT_MS:-2000}" -i "$work/in" -o "$work/out" \
        -- "$bin" >"$work/afl.log" 2>&1
    rc=$?
    set -e
    stats="$work/out/default/fuzzer_stats"
    if [ "$rc" -ne 0 ] || [ ! -f "$stats" ]; then
        tail -30 "$work/afl.log"
        echo "afl-fuzz failed on $t (exit $rc); a seed that crashes or hangs stops it before it" \
            "starts. Log: $work/afl.log"
        failed+=("$t")
        continue
    fi
    crashes=$(stat_of "$stats" saved_crashes)
    hangs=$(stat_of "$stats" saved_hangs)
    summary+=("$(printf '%-12s %6ss %12s execs %8s/s %6s paths %6s crashes %4s hangs' "$t" \
        "$(stat_of "$stats" run_time)" "$(stat_of "$stats" execs_done)" \
        "$(stat_of "$stats" execs_per_sec)" "$(stat_of "$stats" corpus_count)" "$crashes" "$hangs")")
    if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
        failed+=("$t")
        for f in "$work/out/default/crashes"/id:* "$work/out/default/hangs"/id:*; do
            [ -f "$f" ] || continue
            echo "FOUND: $f"
            echo "  reproduce: $bin < '$f'"
            echo "  (after a fix, scripts/fuzz.sh rebuilds ${RELEASE#"$ROOT/"}/$t)"
        done
        echo "  fix it, add a regression test named after what broke, and copy the input to" \
            "fuzz/seeds/$t/crash_<what-broke> (docs/fuzzing.md)"
    elif [ -n "$keep" ]; then
        # What this run found, plus what was kept before, minimized to the inputs that add
        # coverage. Edges only (-e), not hit counts: a third of the files, and afl finds the
        # hit-count variants again within minutes.
        mkdir -p "$work/all"
        cp "$work/in"/* "$work/all/"
        cp "$work/out/default/queue"/id:* "$work/all/" 2>/dev/null || true
        # afl-cmin would set AFL_MAP_SIZE to the target's own map size (2,435 for mqtt_codec),
        # with which afl-showmap 4.40c's batch mode records nothing and everything is dropped.
        if ! AFL_MAP_SIZE=65536 cargo afl cmin -e -t "${FUZZ_TIMEOUT_MS:-2000}" \
            -i "$work/all" -o "$work/min" -- "$bin" >"$work/cmin.log" 2>&1; then
            tail -20 "$work/cmin.log"
            echo "afl-cmin failed on $t; fuzz/corpus/$t is unchanged. Log: $work/cmin.log" >&2
            failed+=("$t (cmin)")
            continue
        fi
        if [ -z "$(ls -A "$work/min")" ]; then
            echo "afl-cmin kept nothing for $t; fuzz/corpus/$t is unchanged. Log: $work/cmin.log" >&2
            failed+=("$t (cmin)")
            continue
        fi
        rm -rf "$FUZZ/corpus/$t"
        mkdir -p "$FUZZ/corpus/$t"
        # Stable names: the content's hash, so re-minimizing does not rename kept inputs.
        for f in "$work/min"/*; do
            cp "$f" "$FUZZ/corpus/$t/$(sha1sum "$f" | cut -c1-16)"
        done
        echo "kept $(ls "$FUZZ/corpus/$t" | wc -l) inputs in fuzz/corpus/$t" \
            "($(du -sk --apparent-size "$FUZZ/corpus/$t" | cut -f1) KiB)"
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
