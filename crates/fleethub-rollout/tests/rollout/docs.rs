use fleethub_rollout::{Rollout, RolloutSpec, Selector, TripAction};

/// The JSON blocks of docs/rollouts.md that are whole rollout specs.
fn doc_specs() -> Vec<RolloutSpec> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/rollouts.md"
    ))
    .expect("docs/rollouts.md");
    text.split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("\"artifact\""))
        .map(|block| serde_json::from_str(block).expect("a spec in docs/rollouts.md parses"))
        .collect()
}

#[test]
fn the_worked_example_is_a_valid_rollout() {
    let specs = doc_specs();
    assert_eq!(specs.len(), 1);
    let spec = &specs[0];
    assert_eq!(spec.waves.len(), 3);
    assert_eq!(spec.waves[2].select, Selector::Percent(100.0));
    assert_eq!(spec.on_trip, TripAction::RollbackWaveAndContinue);
    let now = chrono::Utc::now();
    let (rollout, step) =
        Rollout::create("night", spec, Vec::new(), now).expect("the example plans");
    assert!(step.pushes.is_empty());
    assert_eq!(rollout.waves().len(), 3);
}
