//! What a load run measured, and the arithmetic on it.

use std::time::Duration;

/// The outcome of a load run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests the hub answered with success.
    pub acked: u64,
    /// Requests that failed: error status, timeout, or lost connection.
    pub errors: u64,
    /// Devices that could not connect or subscribe; they sent nothing.
    pub failed_connects: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latencies of successful requests in microseconds, sampled evenly, sorted ascending.
    pub latencies_us: Vec<u64>,
}

impl LoadReport {
    /// The `q`-th percentile latency (0..=100, nearest rank), if any request succeeded.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let micros = if self.latencies_us.is_sorted() {
            percentile(&self.latencies_us, q)
        } else {
            let mut sorted = self.latencies_us.clone();
            sorted.sort_unstable();
            percentile(&sorted, q)
        };
        micros.map(Duration::from_micros)
    }

    /// The median latency.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(50.0)
    }

    /// The 99th-percentile latency.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(99.0)
    }

    /// Successful requests per second over the whole run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.acked as f64 / secs
        } else {
            0.0
        }
    }
}

/// Nearest-rank percentile of ascending `sorted` samples, `q` clamped to 0..=100: the one
/// percentile every benchmark figure uses (latencies in µs, query times in ms).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 100.0) };
    let rank = (q / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Keeps a uniform random sample of at most `capacity` values out of any number offered
/// (Algorithm R), so a long run neither grows without bound nor keeps only its warm-up.
pub(crate) struct Reservoir {
    capacity: usize,
    seen: u64,
    samples: Vec<u64>,
    rng: u64,
}

impl Reservoir {
    /// An empty reservoir; `seed` makes its choices reproducible.
    pub fn new(capacity: usize, seed: u64) -> Self {
        Reservoir {
            capacity: capacity.max(1),
            seen: 0,
            samples: Vec::new(),
            // xorshift must not start at zero.
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Offers one value.
    pub fn offer(&mut self, value: u64) {
        self.seen += 1;
        if self.samples.len() < self.capacity {
            self.samples.push(value);
            return;
        }
        let slot = self.next_random() % self.seen;
        if let Ok(slot) = usize::try_from(slot) {
            if slot < self.capacity {
                self.samples[slot] = value;
            }
        }
    }

    /// The kept values.
    pub fn into_samples(self) -> Vec<u64> {
        self.samples
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 99.5), Some(100));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2], f64::NAN), Some(1));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        let millis = [0.5, 1.5, 2.5, 10.0];
        assert_eq!(percentile(&millis, 50.0), Some(1.5));
        assert_eq!(percentile(&millis, 90.0), Some(10.0));
    }

    #[test]
    fn report_helpers_sort_when_needed_and_divide_by_elapsed() {
        let report = LoadReport {
            acked: 500,
            elapsed: Duration::from_secs(2),
            latencies_us: vec![900, 100, 300, 200, 1000, 400, 500, 600, 700, 800],
            ..LoadReport::default()
        };
        assert_eq!(report.p50(), Some(Duration::from_micros(500)));
        assert_eq!(report.p99(), Some(Duration::from_micros(1000)));
        assert_eq!(report.throughput(), 250.0);
        assert_eq!(LoadReport::default().throughput(), 0.0);
        assert_eq!(LoadReport::default().p50(), None);
    }

    #[test]
    fn reservoir_keeps_everything_until_full() {
        let mut r = Reservoir::new(10, 1);
        (0..5).for_each(|v| r.offer(v));
        assert_eq!(r.into_samples(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn reservoir_samples_the_whole_run_not_just_its_start() {
        let mut r = Reservoir::new(1000, 42);
        (0..100_000).for_each(|v| r.offer(v));
        let samples = r.into_samples();
        assert_eq!(samples.len(), 1000);
        let late = samples.iter().filter(|&&v| v >= 50_000).count();
        // Uniform sampling puts about half the kept values in the second half of the run.
        assert!(
            (400..=600).contains(&late),
            "{late} of 1000 from the second half"
        );
    }
}
