//! FleetHub's fuzz targets: one function per parser that bytes from the network reach, each
//! checking cheap invariants besides "never panics". `src/bin/` wraps each in `afl::fuzz!`;
//! the tests below replay the kept corpus without afl (`cargo test --lib`).
//!
//! How to run them, and what a long run found: docs/fuzzing.md.

pub mod credentials;
pub mod mqtt_codec;
pub mod mqtt_topic;
pub mod query;
pub mod twin_patch;

/// A fuzz target: takes any bytes, panics on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: [(&str, Target); 5] = [
    ("mqtt_codec", mqtt_codec::run),
    ("mqtt_topic", mqtt_topic::run),
    ("query", query::run),
    ("credentials", credentials::run),
    ("twin_patch", twin_patch::run),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every kept input (seeds, past crashes, the minimized corpus) still passes its target.
    #[test]
    fn kept_inputs_replay_without_failure() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, run) in super::TARGETS {
            let mut seeds = 0;
            for dir in ["seeds", "corpus"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    println!("{}", path.display());
                    run(&std::fs::read(&path).unwrap());
                    seeds += usize::from(dir == "seeds");
                }
            }
            assert!(seeds > 0, "fuzz/seeds/{name} is empty");
        }
    }
}
