//! Scenario files: the fleet (`[[group]]`), firmware artifacts (`[[firmware]]`), the operator's
//! timeline (`[[step]]`) and what must come true (`[[expect]]`), parsed from TOML and checked
//! once, so a run never starts on a file that would fail halfway.

use crate::duration::SimDuration;
use fleethub_core::firmware::{is_sha256_hex, UpdateStatus};
use fleethub_sim::esp32::Behavior;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use toml::Spanned;

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    simulation: SimulationSection,
    #[serde(default, rename = "group")]
    groups: Vec<Spanned<GroupFile>>,
    #[serde(default, rename = "firmware")]
    firmware: Vec<Spanned<FirmwareFile>>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<StepFile>>,
    #[serde(default, rename = "expect")]
    expectations: Vec<Spanned<ExpectFile>>,
}

/// `[simulation]`: the run as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulationSection {
    /// Seeds every device's faults and key; the same seed repeats the same run.
    pub seed: u64,
    /// Simulated seconds per real second (360: one simulated hour in ten real seconds).
    pub time_scale: f64,
    /// The longest the run lasts, in simulated time.
    pub duration: Option<SimDuration>,
    /// The factory image of groups that do not name their own.
    pub firmware: String,
    /// Device ids are `{prefix}{group}-{n}`.
    pub prefix: String,
}

impl Default for SimulationSection {
    fn default() -> Self {
        SimulationSection {
            seed: 1,
            time_scale: 1.0,
            duration: None,
            firmware: "1.0.0".into(),
            prefix: "sim-".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    name: String,
    count: usize,
    #[serde(default)]
    tags: Map<String, Value>,
    firmware: Option<String>,
    #[serde(default)]
    behavior: Behavior,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareFile {
    version: String,
    url: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    generate: Option<Generate>,
}

/// `generate = { size = 65536 }`: the simulator serves a deterministic blob of this size.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    at: SimDuration,
    name: Option<String>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    query: Option<String>,
    set_firmware: Option<String>,
    twin_patch: Option<Value>,
    method: Option<MethodCall>,
    http: Option<HttpCall>,
}

/// `method = { name = "reboot", payload = {…}, timeout_s = 30 }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodCall {
    pub name: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default = "default_method_timeout")]
    pub timeout_s: u64,
}

fn default_method_timeout() -> u64 {
    30
}

/// `http = { method = "PUT", path = "/jobs/v2/j1", body = {…} }`: any REST call as iothubowner.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    name: Option<String>,
    within: SimDuration,
    after: Option<String>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    query: Option<String>,
    reported_firmware: Option<String>,
    status: Option<String>,
    connected: Option<bool>,
    path: Option<String>,
    equals: Option<Value>,
    at_least: Option<Amount>,
    at_most: Option<Amount>,
    count: Option<u64>,
}

/// A threshold: a share (`"99%"`) or a number of devices (`5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Percent(f64),
    Devices(u64),
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        let bad = |t: &str| {
            serde::de::Error::custom(format!(
                "'{t}' is not an amount; write a share like \"99%\" or a device count like 5"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Amount::Devices(n)),
            Raw::Text(t) => {
                let share = t.trim().strip_suffix('%').ok_or_else(|| bad(&t))?;
                match share.trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Ok(Amount::Percent(p)),
                    _ => Err(bad(&t)),
                }
            }
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Percent(p) => write!(f, "{p}%"),
            Amount::Devices(n) => write!(f, "{n} devices"),
        }
    }
}

/// A checked scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub simulation: SimulationSection,
    pub groups: Vec<Group>,
    pub firmware: Vec<Firmware>,
    /// In the order they run (by `at`, then file order).
    pub steps: Vec<Step>,
    pub expectations: Vec<Expectation>,
}

/// A group of identical devices.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub count: usize,
    pub tags: Map<String, Value>,
    pub firmware: String,
    pub behavior: Behavior,
}

/// A firmware artifact the timeline can roll out.
#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    pub version: String,
    pub source: FirmwareSource,
}

/// Where devices download a firmware version from.
#[derive(Debug, Clone, PartialEq)]
pub enum FirmwareSource {
    /// Served by someone else.
    External {
        url: String,
        sha256: String,
        size: u64,
    },
    /// Generated by the simulator and uploaded to the hub's firmware store.
    Generated(Generate),
}

/// Which devices a step or an expectation is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    All,
    Groups(Vec<String>),
    Devices(Vec<String>),
    /// An IoT Hub query, resolved by the hub (`POST /devices/query`).
    Query(String),
}

/// One operator action at a simulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: SimDuration,
    pub name: String,
    pub target: Target,
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Patches `desired.firmware` with the artifact: for a generated one, the URL the hub mints
    /// for each device, with the hub's signature.
    SetFirmware(String),
    /// `PATCH /twins/{id}` with this body, per targeted device.
    TwinPatch(Value),
    /// `POST /twins/{id}/methods`, per targeted device.
    Method(MethodCall),
    /// One REST call (the target is ignored).
    Http(HttpCall),
}

/// Something that must come true, as the hub sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub name: String,
    /// Deadline, counted from `after` (a step's run time) or from the start of the run.
    pub within: SimDuration,
    pub after: Option<String>,
    pub target: Target,
    pub matcher: Matcher,
    pub quantity: Quantity,
}

/// What one twin must show to count.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    ReportedFirmware(String),
    Status(UpdateStatus),
    Connected(bool),
    /// A dotted path from the twin's root (`properties.reported.firmware.status`).
    Path {
        path: String,
        equals: Value,
    },
}

/// How many matching twins make the expectation pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantity {
    /// Passes as soon as this many match (checked until the deadline).
    AtLeast(Amount),
    /// Passes if no more than this many match at the deadline.
    AtMost(Amount),
    /// Passes as soon as exactly this many match.
    Exactly(u64),
}

/// A scenario file that cannot run: what is wrong and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line of a byte offset.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

impl Scenario {
    /// Parses and checks a scenario; errors name the line and the field.
    pub fn parse(source: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile =
            toml::from_str(source).map_err(|e| ScenarioError(e.to_string().trim().into()))?;
        let at = |what: &str, span: std::ops::Range<usize>, msg: String| {
            ScenarioError(format!(
                "{what} at line {}: {msg}",
                line_of(source, span.start)
            ))
        };
        let sim = file.simulation;
        if !(sim.time_scale.is_finite() && sim.time_scale > 0.0) {
            return Err(ScenarioError(format!(
                "[simulation] time_scale = {} must be a positive number (360 = one simulated hour in ten real seconds)",
                sim.time_scale
            )));
        }

        let mut groups = Vec::new();
        for g in file.groups {
            let span = g.span();
            let g = g.into_inner();
            let group = check_group(g, &sim, &groups).map_err(|m| at("[[group]]", span, m))?;
            groups.push(group);
        }
        if groups.is_empty() {
            return Err(ScenarioError(
                "the scenario has no [[group]]; add at least one, e.g. [[group]] name = \"fleet\" count = 10".into(),
            ));
        }

        let mut firmware: Vec<Firmware> = Vec::new();
        for f in file.firmware {
            let span = f.span();
            let fw =
                check_firmware(f.into_inner()).map_err(|m| at("[[firmware]]", span.clone(), m))?;
            if firmware.iter().any(|x| x.version == fw.version) {
                return Err(at(
                    "[[firmware]]",
                    span,
                    format!("version '{}' is listed twice", fw.version),
                ));
            }
            firmware.push(fw);
        }

        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let mut steps = Vec::new();
        for (i, s) in file.steps.into_iter().enumerate() {
            let span = s.span();
            let step = check_step(s.into_inner(), i + 1, &names, &firmware)
                .map_err(|m| at("[[step]]", span, m))?;
            steps.push(step);
        }
        // Stable: steps at the same time run in file order.
        steps.sort_by_key(|s| s.at);
        let mut seen = BTreeSet::new();
        for s in &steps {
            if !seen.insert(s.name.as_str()) {
                return Err(ScenarioError(format!(
                    "two steps are named '{}'; step names must be unique so expectations can say after = \"…\"",
                    s.name
                )));
            }
        }

        let mut expectations = Vec::new();
        for (i, e) in file.expectations.into_iter().enumerate() {
            let span = e.span();
            let exp = check_expectation(e.into_inner(), i + 1, &names, &steps)
                .map_err(|m| at("[[expect]]", span, m))?;
            expectations.push(exp);
        }
        Ok(Scenario {
            simulation: sim,
            groups,
            firmware,
            steps,
            expectations,
        })
    }

    /// Total devices over every group.
    pub fn device_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// The artifact for a version.
    pub fn firmware(&self, version: &str) -> Option<&Firmware> {
        self.firmware.iter().find(|f| f.version == version)
    }
}

fn check_group(g: GroupFile, sim: &SimulationSection, earlier: &[Group]) -> Result<Group, String> {
    let valid_name = !g.name.is_empty()
        && g.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        return Err(format!(
            "group name '{}' may use only letters, digits, '-', '_' and '.' (it becomes part of device ids)",
            g.name
        ));
    }
    if earlier.iter().any(|e| e.name == g.name) {
        return Err(format!("group '{}' is defined twice", g.name));
    }
    if g.count == 0 {
        return Err(format!(
            "group '{}' has count = 0; give it at least one device",
            g.name
        ));
    }
    check_probability(&g.behavior)?;
    Ok(Group {
        firmware: g.firmware.unwrap_or_else(|| sim.firmware.clone()),
        name: g.name,
        count: g.count,
        tags: g.tags,
        behavior: g.behavior,
    })
}

fn check_probability(b: &Behavior) -> Result<(), String> {
    let f = &b.faults;
    for (name, p) in [
        ("power_loss", f.power_loss),
        ("corrupt_download", f.corrupt_download),
        ("duplicate_rate", f.duplicate_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(format!(
                "behavior.faults.{name} = {p} is a probability and must be between 0 and 1"
            ));
        }
    }
    Ok(())
}

/// The largest image a virtual device accepts.
const MAX_GENERATED: u64 = 64 * 1024 * 1024;

fn check_firmware(f: FirmwareFile) -> Result<Firmware, String> {
    if f.version.trim().is_empty() {
        return Err("firmware version is empty".into());
    }
    let source = match (f.generate, f.url, f.sha256, f.size) {
        (Some(g), None, None, None) => {
            if !(1..=MAX_GENERATED).contains(&g.size) {
                return Err(format!(
                    "firmware '{}': generate.size = {} must be 1 to {MAX_GENERATED} bytes (64 MiB, the largest image a device accepts)",
                    f.version, g.size
                ));
            }
            FirmwareSource::Generated(g)
        }
        (None, Some(url), Some(sha256), Some(size)) => {
            let hex_ok = is_sha256_hex(&sha256);
            if !hex_ok {
                return Err(format!(
                    "firmware '{}': sha256 must be 64 hex digits, got '{sha256}'",
                    f.version
                ));
            }
            FirmwareSource::External {
                url,
                sha256: sha256.to_ascii_lowercase(),
                size,
            }
        }
        _ => {
            return Err(format!(
                "firmware '{}' needs either url + sha256 + size, or generate = {{ size = … }} (not both)",
                f.version
            ))
        }
    };
    Ok(Firmware {
        version: f.version,
        source,
    })
}

fn target(
    group: Option<String>,
    groups: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    query: Option<String>,
    known: &[&str],
) -> Result<Target, String> {
    let t = match (group, groups, devices, query) {
        (None, None, None, None) => Target::All,
        (Some(g), None, None, None) => Target::Groups(vec![g]),
        (None, Some(gs), None, None) => Target::Groups(gs),
        (None, None, Some(ds), None) => Target::Devices(ds),
        (None, None, None, Some(q)) => Target::Query(q),
        _ => {
            return Err(
                "give at most one of group, groups, devices or query (none = every device)".into(),
            )
        }
    };
    if let Target::Groups(gs) = &t {
        for g in gs {
            if !known.contains(&g.as_str()) {
                return Err(format!(
                    "group '{g}' is not defined; the groups are: {}",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(t)
}

fn check_step(
    s: StepFile,
    n: usize,
    groups: &[&str],
    firmware: &[Firmware],
) -> Result<Step, String> {
    let mut actions = Vec::new();
    if let Some(v) = s.set_firmware {
        if !firmware.iter().any(|f| f.version == v) {
            let known: Vec<&str> = firmware.iter().map(|f| f.version.as_str()).collect();
            return Err(format!(
                "set_firmware = \"{v}\" names no [[firmware]] artifact (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        actions.push(Action::SetFirmware(v));
    }
    if let Some(p) = s.twin_patch {
        if !p.is_object() {
            return Err(
                "twin_patch must be a table, e.g. { properties = { desired = { … } } }".into(),
            );
        }
        actions.push(Action::TwinPatch(p));
    }
    if let Some(m) = s.method {
        actions.push(Action::Method(m));
    }
    if let Some(h) = s.http {
        if !h.path.starts_with('/') {
            return Err(format!("http.path '{}' must start with '/'", h.path));
        }
        let m = h.method.to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
            return Err(format!(
                "http.method '{}' must be GET, POST, PUT, PATCH or DELETE",
                h.method
            ));
        }
        actions.push(Action::Http(HttpCall { method: m, ..h }));
    }
    let action = match actions.len() {
        1 => actions.remove(0),
        0 => return Err("a step needs one action: set_firmware, twin_patch, method or http".into()),
        _ => {
            return Err(
                "a step has one action; split set_firmware, twin_patch, method and http into separate [[step]]s".into(),
            )
        }
    };
    let target = target(s.group, s.groups, s.devices, s.query, groups)?;
    let name = s.name.unwrap_or_else(|| format!("step-{n}"));
    Ok(Step {
        at: s.at,
        name,
        target,
        action,
    })
}

fn check_expectation(
    e: ExpectFile,
    n: usize,
    groups: &[&str],
    steps: &[Step],
) -> Result<Expectation, String> {
    if let Some(after) = &e.after {
        if !steps.iter().any(|s| &s.name == after) {
            return Err(format!(
                "after = \"{after}\" names no [[step]]; give the step a name = \"{after}\""
            ));
        }
    }
    let mut matchers = Vec::new();
    if let Some(v) = e.reported_firmware {
        matchers.push(Matcher::ReportedFirmware(v));
    }
    if let Some(s) = e.status {
        let status = UpdateStatus::parse(&s).ok_or_else(|| {
            let known: Vec<&str> = UpdateStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "status = \"{s}\" is not a firmware status; one of {}",
                known.join(", ")
            )
        })?;
        matchers.push(Matcher::Status(status));
    }
    if let Some(c) = e.connected {
        matchers.push(Matcher::Connected(c));
    }
    match (e.path, e.equals) {
        (Some(path), Some(equals)) => matchers.push(Matcher::Path { path, equals }),
        (None, None) => {}
        _ => {
            return Err(
                "path and equals go together: path = \"properties.reported.x\", equals = …".into(),
            )
        }
    }
    let matcher = match matchers.len() {
        1 => matchers.remove(0),
        0 => return Err("an expectation needs one of reported_firmware, status, connected, or path + equals".into()),
        _ => return Err("an expectation checks one thing; split reported_firmware, status, connected and path into separate [[expect]]s".into()),
    };
    let quantity = match (e.at_least, e.at_most, e.count) {
        (None, None, None) => Quantity::AtLeast(Amount::Percent(100.0)),
        (Some(a), None, None) => Quantity::AtLeast(a),
        (None, Some(a), None) => Quantity::AtMost(a),
        (None, None, Some(c)) => Quantity::Exactly(c),
        _ => {
            return Err(
                "give at most one of at_least, at_most or count (none = all devices)".into(),
            )
        }
    };
    let target = target(e.group, e.groups, e.devices, e.query, groups)?;
    Ok(Expectation {
        name: e.name.unwrap_or_else(|| format!("expect-{n}")),
        within: e.within,
        after: e.after,
        target,
        matcher,
        quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
[simulation]
seed = 7
time_scale = 360
duration = "2h"
firmware = "1.0.0"

[[group]]
name = "boston"
count = 10
tags = { city = "boston", floor = 3 }
[group.behavior]
telemetry_interval_s = 60
[group.behavior.faults]
link_drop_mean_s = 3600
link_down_s = 30
power_loss = 0.01
bad_firmware = [{ version = "2.1.0", failure = "boot_loop" }]

[[group]]
name = "hq"
count = 2
firmware = "0.9.0"

[[firmware]]
version = "2.1.0"
generate = { size = 65536 }

[[firmware]]
version = "2.2.0"
url = "https://cdn.example.com/fw-2.2.0.bin"
sha256 = "AB0000000000000000000000000000000000000000000000000000000000000F"
size = 1024

[[step]]
at = "10m"
name = "canary"
group = "hq"
set_firmware = "2.1.0"

[[step]]
at = "5m"
devices = ["sim-boston-0"]
method = { name = "reboot" }

[[step]]
at = "20m"
http = { method = "put", path = "/jobs/v2/j1", body = { type = "scheduleUpdateTwin" } }

[[expect]]
after = "canary"
within = "10m"
group = "hq"
reported_firmware = "2.1.0"
at_least = "99%"

[[expect]]
within = "1h"
group = "boston"
status = "rolled_back"
at_most = 2

[[expect]]
within = "1h"
connected = true
count = 12
"#;

    #[test]
    fn a_complete_file_parses_into_checked_parts() {
        let s = Scenario::parse(GOOD).unwrap();
        assert_eq!(s.simulation.seed, 7);
        assert_eq!(s.simulation.time_scale, 360.0);
        assert_eq!(s.simulation.duration, Some(SimDuration::from_secs(7200)));
        assert_eq!(s.device_count(), 12);
        assert_eq!(s.groups[0].tags["floor"], 3);
        assert_eq!(s.groups[0].firmware, "1.0.0");
        assert_eq!(s.groups[1].firmware, "0.9.0");
        let faults = &s.groups[0].behavior.faults;
        assert_eq!(faults.link_drop_mean_s, Some(3600.0));
        assert_eq!(faults.bad_firmware[0].failed_boots, 3);
        assert_eq!(
            s.firmware[1].source,
            FirmwareSource::External {
                url: "https://cdn.example.com/fw-2.2.0.bin".into(),
                sha256: "ab0000000000000000000000000000000000000000000000000000000000000f".into(),
                size: 1024
            }
        );
        // Sorted by time; unnamed steps are numbered in file order.
        let order: Vec<(&str, u64)> = s
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.at.0.as_secs()))
            .collect();
        assert_eq!(order, [("step-2", 300), ("canary", 600), ("step-3", 1200)]);
        assert_eq!(s.steps[1].target, Target::Groups(vec!["hq".into()]));
        assert!(matches!(&s.steps[2].action, Action::Http(h) if h.method == "PUT"));
        assert!(matches!(&s.steps[0].action, Action::Method(m) if m.timeout_s == 30));
        let e = &s.expectations;
        assert_eq!(e[0].quantity, Quantity::AtLeast(Amount::Percent(99.0)));
        assert_eq!(e[0].after.as_deref(), Some("canary"));
        assert_eq!(e[1].quantity, Quantity::AtMost(Amount::Devices(2)));
        assert_eq!(e[1].matcher, Matcher::Status(UpdateStatus::RolledBack));
        assert_eq!(e[2].target, Target::All);
        assert_eq!(e[2].quantity, Quantity::Exactly(12));
    }

    fn err(src: &str) -> String {
        Scenario::parse(src).unwrap_err().0
    }

    const ONE_GROUP: &str = "[[group]]\nname = \"g\"\ncount = 1\n";

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let e = err("[simulation]\nseed = 1\ntime_scael = 2\n");
        assert!(e.contains("line 3") && e.contains("time_scael"), "{e}");
        let e = err(&format!(
            "{ONE_GROUP}[group.behavior.faults]\npower_los = 0.1\n"
        ));
        assert!(e.contains("line 5") && e.contains("power_los"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let e = err(&format!("{ONE_GROUP}\n[[step]]\nat = \"5 minutes\"\nhttp = {{ method = \"GET\", path = \"/x\" }}\n"));
        assert!(e.contains("line 6") && e.contains("5 minutes"), "{e}");
        let e = err(&format!(
            "{ONE_GROUP}\n[[expect]]\nwithin = \"1m\"\nconnected = true\nat_least = \"101%\"\n"
        ));
        assert!(e.contains("line 8") && e.contains("101%"), "{e}");
        let e = err("[[group]]\nname = \"g\"\ncount = -1\n");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn cross_references_are_checked_with_the_line_of_their_table() {
        let e = err(&format!("{ONE_GROUP}\n[[step]]\nat = \"1m\"\ngroup = \"nope\"\nhttp = {{ method = \"GET\", path = \"/x\" }}\n"));
        assert!(
            e.starts_with("[[step]] at line 5")
                && e.contains("group 'nope' is not defined; the groups are: g"),
            "{e}"
        );
        let e = err(&format!(
            "{ONE_GROUP}\n[[step]]\nat = \"1m\"\nset_firmware = \"9.9.9\"\n"
        ));
        assert!(
            e.contains("line 5") && e.contains("names no [[firmware]]"),
            "{e}"
        );
        let e = err(&format!(
            "{ONE_GROUP}\n[[expect]]\nwithin = \"1m\"\nafter = \"rollout\"\nconnected = true\n"
        ));
        assert!(
            e.contains("line 5") && e.contains("after = \"rollout\" names no [[step]]"),
            "{e}"
        );
    }

    #[test]
    fn ambiguous_tables_are_refused_with_what_would_be_right() {
        let cases = [
            ("[[step]]\nat = \"1m\"\n", "a step needs one action"),
            (
                "[[step]]\nat = \"1m\"\ntwin_patch = {}\nmethod = { name = \"m\" }\n",
                "a step has one action",
            ),
            (
                "[[step]]\nat = \"1m\"\ngroup = \"g\"\ndevices = [\"a\"]\ntwin_patch = {}\n",
                "at most one of group",
            ),
            (
                "[[step]]\nat = \"1m\"\nhttp = { method = \"GET\", path = \"x\" }\n",
                "must start with '/'",
            ),
            (
                "[[expect]]\nwithin = \"1m\"\n",
                "needs one of reported_firmware",
            ),
            (
                "[[expect]]\nwithin = \"1m\"\nconnected = true\nat_least = 1\ncount = 1\n",
                "at most one of at_least",
            ),
            (
                "[[expect]]\nwithin = \"1m\"\npath = \"a.b\"\n",
                "path and equals go together",
            ),
            (
                "[[firmware]]\nversion = \"2\"\nurl = \"https://x\"\n",
                "needs either url + sha256 + size",
            ),
            (
                "[[firmware]]\nversion = \"2\"\nurl = \"u\"\nsize = 1\nsha256 = \"zz\"\n",
                "64 hex digits",
            ),
        ];
        for (tail, want) in cases {
            let e = err(&format!("{ONE_GROUP}{tail}"));
            assert!(e.contains(want), "{tail:?}: {e}");
            assert!(e.contains("line 4"), "{tail:?}: {e}");
        }
    }

    #[test]
    fn every_example_scenario_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let s =
                    Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!s.expectations.is_empty(), "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 2, "found {seen} examples in {}", dir.display());
    }

    #[test]
    fn fleet_level_mistakes_are_refused() {
        assert!(err("").contains("no [[group]]"));
        assert!(err("[[group]]\nname = \"a b\"\ncount = 1\n").contains("only letters"));
        assert!(err("[[group]]\nname = \"a\"\ncount = 0\n").contains("count = 0"));
        assert!(err(&format!("{ONE_GROUP}{ONE_GROUP}")).contains("defined twice"));
        assert!(err(&format!("[simulation]\ntime_scale = 0\n{ONE_GROUP}")).contains("positive"));
        let e = err(&format!(
            "{ONE_GROUP}[group.behavior.faults]\npower_loss = 2\n"
        ));
        assert!(e.contains("between 0 and 1") && e.contains("line 1"), "{e}");
        let e = err(&format!("{ONE_GROUP}[[step]]\nat = \"1m\"\nname = \"x\"\ntwin_patch = {{}}\n[[step]]\nat = \"2m\"\nname = \"x\"\ntwin_patch = {{}}\n"));
        assert!(e.contains("two steps are named 'x'"), "{e}");
    }
    #[test]
    fn the_demo_fleet_is_2500_sensors_in_ten_cities_with_their_zones() {
        let s = Scenario::parse(include_str!("../../../examples/demo/fleet.toml")).unwrap();
        assert_eq!(s.device_count(), 2500);
        let tag = |g: &Group, k: &str| g.tags[k].as_str().unwrap_or_default().to_string();
        let cities: BTreeSet<String> = s.groups.iter().map(|g| tag(g, "city")).collect();
        assert_eq!(cities.len(), 10, "{cities:?}");
        let canaries: usize = s
            .groups
            .iter()
            .filter(|g| tag(g, "ring") == "canary")
            .map(|g| g.count)
            .sum();
        assert_eq!(canaries, 20);
        for g in &s.groups {
            assert_eq!(tag(g, "product"), "aq-sensor");
            fleethub_core::semver::parse(&g.firmware).unwrap();
            assert!(tag(g, "tz").starts_with("America/"), "{}", g.name);
        }
        let boston = s.groups.iter().find(|g| g.name == "boston").unwrap();
        assert_eq!(boston.count, 200);
        assert_eq!(boston.behavior.faults.bad_firmware[0].version, "2.1.0");
    }
}
