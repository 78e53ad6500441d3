//! Completion notices: an engine built on device operations (rollouts, configurations) hears
//! when each device's part and each operation reach a terminal state, from the effects of the
//! write that put them there, in commit order, never by polling.
//!
//! Each subscriber has its own unbounded channel, so a slow one misses nothing and holds up no
//! one; a dropped receiver is forgotten at the next notice. While nobody subscribes, the writes
//! record no effect at all: the job engine's batches cost what they cost before.

use fleethub_core::jobs::{DeviceJobStatus, JobStatus};
use fleethub_store::WriteTx;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A device operation (a job) or one device's part in it reached a terminal state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationNotice {
    /// One device's part ended: completed, failed or canceled.
    DeviceFinished {
        operation: String,
        device_id: String,
        status: DeviceJobStatus,
    },
    /// The operation ended (completed, failed or cancelled); its devices' notices came first.
    Finished {
        operation: String,
        status: JobStatus,
    },
}

/// The subscribers to completion notices.
#[derive(Default)]
pub(crate) struct Subscribers {
    senders: Mutex<Vec<mpsc::UnboundedSender<OperationNotice>>>,
    /// How many senders there are, read without the lock on the write path.
    count: AtomicUsize,
}

impl Subscribers {
    pub(super) fn subscribe(&self) -> mpsc::UnboundedReceiver<OperationNotice> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut senders = self.senders.lock();
        senders.push(tx);
        self.count.store(senders.len(), Ordering::Release);
        rx
    }

    /// Whether anyone listens (a write that finds nobody records nothing).
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    fn publish(&self, notices: &[OperationNotice]) {
        let mut senders = self.senders.lock();
        senders.retain(|s| notices.iter().all(|n| s.send(n.clone()).is_ok()));
        self.count.store(senders.len(), Ordering::Release);
    }

    /// Publishes `notices` once `tx` commits, after every notice of earlier commits.
    pub(crate) fn on_commit(self: &Arc<Self>, tx: &mut WriteTx<'_>, notices: Vec<OperationNotice>) {
        if notices.is_empty() || !self.any() {
            return;
        }
        let me = Arc::clone(self);
        tx.on_commit(move || me.publish(&notices));
    }

    /// [`Subscribers::on_commit`] for devices of one operation that all ended in `status`.
    pub(crate) fn devices_on_commit(
        self: &Arc<Self>,
        tx: &mut WriteTx<'_>,
        operation: &str,
        devices: Vec<String>,
        status: DeviceJobStatus,
    ) {
        if !self.any() {
            return;
        }
        let notices = devices
            .into_iter()
            .map(|device_id| OperationNotice::DeviceFinished {
                operation: operation.to_string(),
                device_id,
                status,
            })
            .collect();
        self.on_commit(tx, notices);
    }
}
