//! The driver's side of an update: start or resume the download, write what arrives, then
//! verify, switch and reboot — each step decided by the model.

use super::{Driver, Flow};
use crate::esp32::download::{self, Fetched};
use crate::esp32::model::{NextStep, StepEnd, Written};
use fleethub_core::firmware::UpdateStatus;

impl Driver {
    pub(super) async fn start_download(&mut self) -> Flow {
        let now = self.now();
        let step = self.model.begin_download(&now);
        self.flush_report().await;
        match step {
            None => Flow::Continue,
            Some(NextStep::Verify) => self.verify_and_apply().await,
            Some(NextStep::Download { url, offset, size }) => {
                let Some(http) = self.http.clone() else {
                    let end = self
                        .model
                        .download_failed("no HTTP client could be built".into(), &now);
                    return self.after_failure(end).await;
                };
                let request = download::Request {
                    url,
                    offset,
                    size,
                    bandwidth_bytes_per_s: self.model.behavior.faults.bandwidth_bytes_per_s,
                };
                self.download = Some(download::start(http, self.clock.clone(), request));
                Flow::Continue
            }
        }
    }

    pub(super) async fn on_fetched(&mut self, fetched: Option<Fetched>) -> Flow {
        let now = self.now();
        let data = match fetched {
            Some(Fetched::Data(data)) => data,
            Some(Fetched::End) | None => {
                self.download = None;
                let end = self.model.download_failed(
                    "the download ended before the image was complete".into(),
                    &now,
                );
                return self.after_failure(end).await;
            }
            Some(Fetched::Failed(error)) => {
                self.download = None;
                if !self.online() {
                    return Flow::Continue;
                }
                let end = self.model.download_failed(error, &now);
                return self.after_failure(end).await;
            }
        };
        match self.model.write_chunk(&data, &now) {
            Written::More => {
                self.flush_report().await;
                Flow::Continue
            }
            Written::Stale => {
                self.download = None;
                Flow::Continue
            }
            Written::PowerCut => Flow::PowerLoss,
            Written::Complete => {
                self.download = None;
                self.flush_report().await;
                self.verify_and_apply().await
            }
        }
    }

    async fn after_failure(&mut self, end: StepEnd) -> Flow {
        if let StepEnd::Failed(Some(wait)) = end {
            self.ota_retry_at = Some(self.at(wait));
        }
        self.flush_report().await;
        match end {
            StepEnd::PowerCut => Flow::PowerLoss,
            _ => Flow::Continue,
        }
    }

    async fn verify_and_apply(&mut self) -> Flow {
        let now = self.now();
        self.model.mark(UpdateStatus::Verifying, &now);
        self.flush_report().await;
        match self.model.verify(&now) {
            StepEnd::Done => {}
            end => return self.after_failure(end).await,
        }
        self.model.mark(UpdateStatus::Applying, &now);
        self.flush_report().await;
        match self.model.apply(&now) {
            StepEnd::Done => {
                self.flush_report().await;
                self.disconnect().await;
                Flow::Reboot
            }
            end => self.after_failure(end).await,
        }
    }
}
