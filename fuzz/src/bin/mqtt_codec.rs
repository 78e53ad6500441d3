//! afl entry point for [`fleethub_fuzz::mqtt_codec`]; run it with `scripts/fuzz.sh mqtt_codec`.

fn main() {
    afl::fuzz!(|data: &[u8]| fleethub_fuzz::mqtt_codec::run(data));
}
