//! How a hub starts: its shared state is assembled (`hub.rs`), method calls a crash left in
//! flight are failed, and the job engine and the periodic upkeep begin. The one module that
//! knows every background task, so `hub.rs` itself depends on none of them.

use crate::{Hub, HubConfig};
use fleethub_core::{Clock, HubResult};
use fleethub_store::Store;
use std::sync::Arc;

impl Hub {
    /// Opens the hub over `store`: loads (or on first start creates) the access policies,
    /// recovers the job engine's interrupted calls, and starts the engine (unless
    /// `config.jobs.autorun` is off) and the background upkeep.
    pub async fn open(store: Store, clock: Arc<dyn Clock>, config: HubConfig) -> HubResult<Hub> {
        let hub = Hub::assemble(store, clock, config).await?;
        // Before anything runs: method calls a crash left in flight are failed, never repeated.
        hub.job_engine().recover().await?;
        hub.load_unfinished_rollouts().await?;
        if hub.config().jobs.autorun {
            crate::jobs::spawn_engine(Arc::downgrade(&hub.inner), hub.jobs_state().clone());
            crate::configurations::apply::spawn_follower(
                Arc::downgrade(&hub.inner),
                hub.configurations_state().clone(),
            );
            crate::rollouts::engine::spawn(
                Arc::downgrade(&hub.inner),
                hub.rollouts_state().clone(),
            );
        }
        hub.spawn_upkeep();
        Ok(hub)
    }

    fn spawn_upkeep(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.config().upkeep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let hub = Hub { inner };
                if let Err(e) = hub.upkeep().await {
                    tracing::warn!("upkeep failed: {e}");
                }
            }
        });
    }

    /// Removes expired cloud-to-device messages, telemetry and events past their retention and
    /// jobs past theirs.
    pub async fn upkeep(&self) -> HubResult<()> {
        let now = self.now_ms();
        let cutoff = now - self.config().telemetry_retention.as_millis() as i64;
        self.store().write(move |tx| tx.expire_c2d(now)).await?;
        self.prune_in_batches(move |tx, batch| tx.prune_telemetry(cutoff, batch))
            .await?;
        self.prune_events().await?;
        self.prune_jobs().await?;
        Ok(())
    }
}
