//! afl entry point for [`fleethub_fuzz::mqtt_topic`]; run it with `scripts/fuzz.sh mqtt_topic`.

fn main() {
    afl::fuzz!(|data: &[u8]| fleethub_fuzz::mqtt_topic::run(data));
}
