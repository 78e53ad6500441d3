//! The live view on stderr: redrawn in place twice a second on a terminal, one line every ten
//! seconds otherwise (logs, CI).

use fleethub_scenario::duration::SimDuration;
use fleethub_sim::esp32::{in_version_order, StatsSnapshot};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the view shows besides the counters.
pub struct Frame<'a> {
    pub stats: &'a StatsSnapshot,
    pub simulated: Duration,
    pub time_scale: f64,
    pub real: Duration,
    /// The next step still to run, e.g. `15m set_firmware 2.1.0 → group beta`.
    pub next_step: Option<String>,
    /// Expectations not decided yet.
    pub pending: usize,
}

fn versions(s: &StatsSnapshot) -> String {
    if s.versions.is_empty() {
        return "-".into();
    }
    in_version_order(&s.versions)
        .into_iter()
        .map(|(v, n)| format!("{v}: {n}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// The multi-line terminal frame.
pub fn render(f: &Frame<'_>) -> Vec<String> {
    let s = f.stats;
    let mut lines = vec![
        format!(
            "simulated {}  (×{}, real {:.1}s)   devices {}",
            SimDuration(Duration::from_secs(f.simulated.as_secs())),
            f.time_scale,
            f.real.as_secs_f64(),
            s.devices
        ),
        format!(
            "  connected {}  reporting {}  updating {}  failed {}  rolled back {}  reconnects {}",
            s.connected, s.reporting, s.updating, s.failed, s.rolled_back, s.reconnects
        ),
        format!("  versions  {}", versions(s)),
    ];
    match (&f.next_step, f.pending) {
        (None, 0) => lines.push("  (Ctrl-C stops the devices and prints the report)".into()),
        (next, pending) => lines.push(format!(
            "  next step {}   expectations pending {pending}",
            next.as_deref().unwrap_or("-")
        )),
    }
    lines
}

/// One line for logs.
pub fn render_line(f: &Frame<'_>) -> String {
    let s = f.stats;
    format!(
        "[sim {} real {:.0}s] devices {} connected {} reporting {} updating {} failed {} rolled_back {} versions {}",
        SimDuration(Duration::from_secs(f.simulated.as_secs())),
        f.real.as_secs_f64(),
        s.devices,
        s.connected,
        s.reporting,
        s.updating,
        s.failed,
        s.rolled_back,
        versions(s)
    )
}

/// Draws frames on stderr at the right pace for where stderr goes.
pub struct LiveView {
    tty: bool,
    drawn: usize,
    last_line: Option<Instant>,
}

impl LiveView {
    pub fn new() -> LiveView {
        LiveView {
            tty: std::io::stderr().is_terminal(),
            drawn: 0,
            last_line: None,
        }
    }

    /// How often [`LiveView::draw`] should be called.
    pub fn period(&self) -> Duration {
        Duration::from_millis(500)
    }

    pub fn draw(&mut self, f: &Frame<'_>) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let lines = render(f);
            let mut out = String::new();
            if self.drawn > 0 {
                out.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for l in &lines {
                out.push_str("\x1b[2K");
                out.push_str(l);
                out.push('\n');
            }
            self.drawn = lines.len();
            let _ = err.write_all(out.as_bytes());
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_line = Some(Instant::now());
            let _ = writeln!(err, "{}", render_line(f));
        }
        let _ = err.flush();
    }
}

impl Default for LiveView {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_show_counters_versions_and_what_comes_next() {
        let stats = StatsSnapshot {
            devices: 2500,
            connected: 2490,
            reporting: 2480,
            updating: 12,
            failed: 3,
            rolled_back: 1,
            reconnects: 7,
            versions: [("1.0.0".into(), 2000), ("2.1.0".into(), 500)].into(),
            ..Default::default()
        };
        let f = Frame {
            stats: &stats,
            simulated: Duration::from_millis(750_400),
            time_scale: 360.0,
            real: Duration::from_millis(2080),
            next_step: Some("15m set_firmware 2.1.0 → group beta".into()),
            pending: 2,
        };
        assert_eq!(
            render(&f),
            [
                "simulated 12m30s  (×360, real 2.1s)   devices 2500",
                "  connected 2490  reporting 2480  updating 12  failed 3  rolled back 1  reconnects 7",
                "  versions  1.0.0: 2000  2.1.0: 500",
                "  next step 15m set_firmware 2.1.0 → group beta   expectations pending 2",
            ]
        );
        assert_eq!(
            render_line(&f),
            "[sim 12m30s real 2s] devices 2500 connected 2490 reporting 2480 updating 12 failed 3 rolled_back 1 versions 1.0.0: 2000  2.1.0: 500"
        );
    }
}
