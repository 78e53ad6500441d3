//! The embedded hub's own tokio runtime, and the CPU the hub's threads use.
//!
//! `fleethub demo` runs the hub and 2,500 simulated devices in one process, so the process's CPU
//! is both. To tell them apart the hub runs on a runtime of its own: every thread it starts
//! (workers and blocking threads alike, so store reads and image loads too) is named
//! [`HUB_THREAD`]. With the store's writer and checkpoint threads, which name themselves, those are
//! the hub's threads; everything else (the devices, the demo's operator) runs on the caller's
//! runtime. Their user+system time is read from `/proc/self/task/*/stat`, which any process may
//! read about itself. A thread's line leaves that directory when the thread ends, so each of the
//! runtime's threads records its own figures on its way out ([`Ended`]); the store's threads live
//! as long as the store, so read the figures before closing it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

/// The name of every thread of the hub's runtime.
pub const HUB_THREAD: &str = "hub-worker";
/// The store's threads (`fleethub-store-writer`, `fleethub-store-checkpoint`) as the kernel keeps
/// their names: the first 15 bytes.
const STORE_THREADS: &str = "fleethub-store-";

/// A runtime for the embedded hub alone, whose threads' CPU can be read apart from the rest of
/// the process.
pub struct HubRuntime {
    /// `Some` until dropped: a runtime dropped inside another runtime's task must not block.
    runtime: Option<Runtime>,
    handle: Handle,
    ended: Ended,
}

/// The CPU the process and the hub's threads have used, in seconds of user+system time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubCpu {
    /// The whole process: the hub, the simulated devices and whatever else it runs.
    pub process: f64,
    /// The hub's runtime threads, those that ended included.
    pub runtime: f64,
    /// The store's writer and checkpoint threads.
    pub store: f64,
    /// How many store threads were found (a check that their names are still the ones above).
    pub store_threads: usize,
}

impl HubCpu {
    /// The hub's CPU: its runtime's threads and the store's.
    pub fn hub(&self) -> f64 {
        self.runtime + self.store
    }

    /// The rest of the process: the simulated devices and the demo's operator.
    pub fn rest(&self) -> f64 {
        (self.process - self.hub()).max(0.0)
    }
}

impl HubRuntime {
    /// A multi-threaded runtime with tokio's defaults and named threads.
    pub fn new() -> std::io::Result<HubRuntime> {
        Self::build(None)
    }

    /// As [`HubRuntime::new`], with blocking threads that end after `keep_alive` idle (tokio's
    /// default is 10 s).
    fn build(keep_alive: Option<Duration>) -> std::io::Result<HubRuntime> {
        let ended = Ended::default();
        let on_stop = ended.clone();
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .enable_all()
            .thread_name(HUB_THREAD)
            .on_thread_stop(move || on_stop.record_this_thread());
        if let Some(keep_alive) = keep_alive {
            builder.thread_keep_alive(keep_alive);
        }
        let runtime = builder.build()?;
        Ok(HubRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            ended,
        })
    }

    /// Where to spawn the hub's tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The CPU used so far; `None` where `/proc/self/task` cannot be read (not Linux).
    pub fn cpu(&self) -> Option<HubCpu> {
        let process = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut cpu = HubCpu {
            process: seconds(process.ticks),
            runtime: 0.0,
            store: 0.0,
            store_threads: 0,
        };
        let mut live = HashSet::new();
        for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            // A thread may end between the listing and the read: it is then in `ended`.
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(t) = parse_stat(&text) else {
                continue;
            };
            if t.name == HUB_THREAD {
                cpu.runtime += seconds(t.ticks);
                live.insert(t.id);
            } else if t.name.starts_with(STORE_THREADS) {
                cpu.store += seconds(t.ticks);
                cpu.store_threads += 1;
            }
        }
        cpu.runtime += seconds(self.ended.ticks_not_in(&live));
        Some(cpu)
    }
}

impl Drop for HubRuntime {
    fn drop(&mut self) {
        // Stops the hub's tasks without waiting for them; safe inside the caller's runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the runtime's threads that ended had used, each recorded by the thread itself.
#[derive(Clone, Default)]
struct Ended(Arc<Mutex<Vec<ThreadStat>>>);

impl Ended {
    fn record_this_thread(&self) {
        let Some(t) = std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            return;
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(t);
    }

    /// Ticks of the ended threads, leaving out those still listed (a thread records itself just
    /// before it ends, so it may be both).
    fn ticks_not_in(&self, live: &HashSet<ThreadId>) -> u64 {
        let ended = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ended
            .iter()
            .filter(|t| !live.contains(&t.id))
            .map(|t| t.ticks)
            .sum()
    }
}

/// A thread, told apart from a later one given the same id by when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ThreadId {
    tid: u32,
    start: u64,
}

/// One line of `/proc/…/stat`, the fields this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadStat {
    id: ThreadId,
    name: String,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

/// `tid (name) state ppid …`: the name may hold spaces and parentheses, so it ends at the last
/// `)`. After it, utime and stime are the 12th and 13th fields and starttime the 20th (`man 5
/// proc`: fields 14, 15 and 22 counting from the id).
fn parse_stat(text: &str) -> Option<ThreadStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let (tid, name) = head.split_once(" (")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ThreadStat {
        id: ThreadId {
            tid: tid.trim().parse().ok()?,
            start: field(19)?,
        },
        name: name.to_string(),
        ticks: field(11)? + field(12)?,
    })
}

fn seconds(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_second()
}

#[cfg(unix)]
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[cfg(not(unix))]
fn ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::target::HubTarget;
    use serde_json::json;
    use std::time::Instant;

    /// The CPU the calling thread has used, in seconds.
    fn this_thread_cpu() -> f64 {
        let text = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        seconds(parse_stat(&text).unwrap().ticks)
    }

    /// Keeps the calling thread busy until it has used `secs` of CPU.
    fn burn(secs: f64) {
        let until = this_thread_cpu() + secs;
        let mut x = 0u64;
        while this_thread_cpu() < until {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 9 0 777 0 0\n";
        let t = parse_stat(line).unwrap();
        assert_eq!(t.name, "a) b (c)");
        assert_eq!(t.ticks, 290);
        assert_eq!(
            t.id,
            ThreadId {
                tid: 4242,
                start: 777
            }
        );
        assert_eq!(parse_stat("4242 (cut"), None);
    }

    /// The demo's figure: the hub's CPU counts the hub's threads (runtime and store) and not the
    /// threads of its callers, so it is more than nothing and less than the process's.
    /// The two tests below measure the process's threads: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn hub_cpu_counts_the_hubs_threads_and_not_the_callers() {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let hub = HubRuntime::new().unwrap();
        let caller = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = caller.block_on(async {
            let target = HubTarget::embedded_on(hub.handle(), |_| {}).await.unwrap();
            let devices: Vec<_> = (0..300)
                .map(|i| json!({"id": format!("cpu-{i}"), "importMode": "create"}))
                .collect();
            target.rest.bulk_all(devices, 4).await.unwrap();
            let n = target
                .rest
                .query_all("SELECT COUNT() AS n FROM devices", 10)
                .await;
            assert_eq!(n.unwrap()[0]["n"], 300);
            target
        });
        let before = hub.cpu().unwrap();
        // Work on a thread that is not the hub's.
        let busy = 0.3;
        std::thread::spawn(move || burn(busy)).join().unwrap();
        let cpu = hub.cpu().unwrap();
        caller.block_on(async { target.close() });

        assert!(cpu.hub() > 0.0, "{cpu:?}");
        assert!(cpu.hub() < cpu.process, "{cpu:?}");
        assert_eq!(
            cpu.store_threads, 2,
            "the writer and the checkpointer: {cpu:?}"
        );
        assert!(
            cpu.process - before.process >= busy,
            "{before:?} then {cpu:?}"
        );
        assert!(
            cpu.hub() - before.hub() < busy / 2.0,
            "the busy thread was counted as the hub's: {before:?} then {cpu:?}"
        );
        assert!(cpu.rest() >= busy, "{cpu:?}");
    }

    /// A blocking thread of the hub's runtime that ends (idle past its keep-alive) takes its line
    /// in /proc with it; what it used still counts.
    #[test]
    fn a_hub_thread_that_ended_still_counts() {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let hub = HubRuntime::build(Some(Duration::from_millis(20))).unwrap();
        let busy = 0.2;
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let tid = caller
            .block_on(hub.handle().spawn_blocking(move || {
                burn(busy);
                parse_stat(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
                    .unwrap()
                    .id
                    .tid
            }))
            .unwrap();
        let gone = || !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gone() {
            assert!(
                Instant::now() < deadline,
                "the blocking thread did not end in 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let cpu = hub.cpu().unwrap();
        assert!(cpu.runtime >= busy, "{cpu:?}");
    }
}
