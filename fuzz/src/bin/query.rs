//! afl entry point for [`fleethub_fuzz::query`]; run it with `scripts/fuzz.sh query`.

fn main() {
    afl::fuzz!(|data: &[u8]| fleethub_fuzz::query::run(data));
}
