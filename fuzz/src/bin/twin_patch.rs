//! afl entry point for [`fleethub_fuzz::twin_patch`]; run it with `scripts/fuzz.sh twin_patch`.

fn main() {
    afl::fuzz!(|data: &[u8]| fleethub_fuzz::twin_patch::run(data));
}
