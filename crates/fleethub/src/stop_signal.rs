//! The one way the binary's long-running commands (`serve`, `simulate`) learn they should stop.

/// Resolves on Ctrl-C or SIGTERM (what service managers send), so both stop gracefully. Where
/// SIGTERM cannot be watched, Ctrl-C alone; an error means Ctrl-C cannot be watched either.
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            };
        }
    }
    tokio::signal::ctrl_c().await
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_resolves_it_and_nothing_else_does() {
        let stop = stop_signal();
        tokio::pin!(stop);
        // The first polls install the handlers; nothing has been sent yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut stop)
                .await
                .is_err(),
            "resolved without a signal"
        );
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), &mut stop).await;
        assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
    }
}
