//! afl entry point for [`fleethub_fuzz::credentials`]; run it with `scripts/fuzz.sh credentials`.

fn main() {
    afl::fuzz!(|data: &[u8]| fleethub_fuzz::credentials::run(data));
}
