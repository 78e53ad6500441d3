//! Whether an HTTPS connection is doing anything. A connection is busy while a request is in
//! flight, from the moment its head is parsed until its response body has been sent (a firmware
//! download, a live stream or a direct method waiting on a device count as busy, however long
//! they take); otherwise it is idle, and an idle connection is closed after a timeout. The bytes
//! read tell an idle client from a slow one: one that has sent part of a request head and not
//! the rest is a slowloris, not an idle keep-alive connection.

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a connection may stay idle: before its first request, and between requests.
#[derive(Debug, Clone, Copy)]
pub struct IdleTimeouts {
    /// Until the first request head arrives.
    pub first_request: Duration,
    /// After a request, with none in flight.
    pub between_requests: Duration,
}

/// One connection's requests in flight.
pub struct Activity {
    state: Mutex<State>,
    /// Bytes read from the client so far (see [`Counted`]).
    bytes_read: AtomicU64,
    /// Woken when the last request in flight ends: the idle deadline has moved.
    went_idle: Notify,
}

struct State {
    in_flight: usize,
    started_any: bool,
    /// When the last request finished (or the connection opened).
    idle_since: Instant,
    /// `bytes_read` at `idle_since`.
    read_when_idle: u64,
}

/// Where a connection is, for [`Activity::idle_for`].
enum Phase {
    /// No request yet; idle too long at the deadline.
    BeforeFirst(Instant),
    /// Between requests; idle too long at the deadline.
    Idle(Instant),
    /// A request is in flight.
    Busy,
}

/// Re-arms `timer` for `deadline`, unless it already is.
fn arm(timer: std::pin::Pin<&mut tokio::time::Sleep>, deadline: Instant) {
    if timer.deadline() != deadline {
        timer.reset(deadline);
    }
}

/// A request in flight; dropping it ends the request.
pub struct Busy(Arc<Activity>);

impl Activity {
    /// A connection that opens now, idle.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                started_any: false,
                idle_since: Instant::now(),
                read_when_idle: 0,
            }),
            bytes_read: AtomicU64::new(0),
            went_idle: Notify::new(),
        })
    }

    /// Whether the client has sent anything since the connection went idle: the start of a
    /// request it has not finished.
    pub fn request_begun(&self) -> bool {
        let state = self.lock();
        state.in_flight == 0 && self.bytes_read.load(Ordering::Relaxed) > state.read_when_idle
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.lock();
        state.in_flight += 1;
        state.started_any = true;
        Busy(self.clone())
    }

    /// Resolves once the connection has been idle for its timeout.
    ///
    /// One timer for the connection's life, re-armed lazily. After the first request, a request
    /// that ends only moves the deadline later, so it does not wake this task: the timer, when
    /// it fires early, sleeps on to the new deadline, and a busy keep-alive connection costs no
    /// wake-up per request. Before it (the deadline may move earlier) and while a request is in
    /// flight, the end of a request wakes it.
    pub async fn idle_for(&self, timeouts: IdleTimeouts) {
        let timer = tokio::time::sleep_until(Instant::now() + timeouts.first_request);
        tokio::pin!(timer);
        loop {
            let went_idle = self.went_idle.notified();
            tokio::pin!(went_idle);
            let mut phase = self.phase(timeouts);
            if !matches!(phase, Phase::Idle(_)) {
                // Registered before the state is read again, so an end of requests in between
                // still wakes.
                went_idle.as_mut().enable();
                phase = self.phase(timeouts);
            }
            match phase {
                Phase::Idle(deadline) | Phase::BeforeFirst(deadline)
                    if deadline <= Instant::now() =>
                {
                    return
                }
                Phase::Idle(deadline) => {
                    arm(timer.as_mut(), deadline);
                    timer.as_mut().await;
                }
                Phase::BeforeFirst(deadline) => {
                    arm(timer.as_mut(), deadline);
                    tokio::select! {
                        () = timer.as_mut() => {}
                        () = went_idle => {}
                    }
                }
                Phase::Busy => went_idle.await,
            }
        }
    }

    /// Where the connection is, with the deadline by which it must be busy again.
    fn phase(&self, timeouts: IdleTimeouts) -> Phase {
        let state = self.lock();
        match (state.in_flight, state.started_any) {
            (0, false) => Phase::BeforeFirst(state.idle_since + timeouts.first_request),
            (0, true) => Phase::Idle(state.idle_since + timeouts.between_requests),
            _ => Phase::Busy,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.read_when_idle = self.0.bytes_read.load(Ordering::Relaxed);
            drop(state);
            self.0.went_idle.notify_waiters();
        }
    }
}

/// A request body that fails once its client has sent nothing for a while as the handler waits
/// for it, so a client that drips a body (a slowloris past the header) ends its own request with
/// a 400 instead of holding it in flight forever.
pub struct StallLimit<B> {
    inner: B,
    limit: Duration,
    /// Set while the handler waits for data that has not come.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    on_stall: Option<Box<dyn FnOnce() + Send + Sync>>,
    failed: bool,
}

impl<B> StallLimit<B> {
    /// Fails `inner` after `limit` without data; `on_stall` runs when it does.
    pub fn new(inner: B, limit: Duration, on_stall: impl FnOnce() + Send + Sync + 'static) -> Self {
        StallLimit {
            inner,
            limit,
            stall: None,
            on_stall: Some(Box::new(on_stall)),
            failed: false,
        }
    }
}

impl<B> HttpBody for StallLimit<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stall = None;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let limit = this.limit;
        let stall = this
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        std::task::ready!(stall.as_mut().poll(cx));
        this.failed = true;
        if let Some(on_stall) = this.on_stall.take() {
            on_stall();
        }
        let message = format!("the request body sent nothing for {limit:?}");
        Poll::Ready(Some(Err(
            io::Error::new(io::ErrorKind::TimedOut, message).into()
        )))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's stream that counts the bytes read from it into its [`Activity`].
pub struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    /// Counts what is read from `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Counted<S> {
        Counted { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.activity.bytes_read.fetch_add(n, Ordering::Relaxed);
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until the body ends or is dropped.
pub struct BusyBody {
    inner: Body,
    busy: Option<Busy>,
}

impl BusyBody {
    /// Ties `busy` to `inner`.
    pub fn new(inner: Body, busy: Busy) -> BusyBody {
        BusyBody {
            inner,
            busy: Some(busy),
        }
    }
}

impl HttpBody for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.busy = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Activity {
        fn idle_deadline(&self, timeouts: IdleTimeouts) -> Option<Instant> {
            match self.phase(timeouts) {
                Phase::BeforeFirst(deadline) | Phase::Idle(deadline) => Some(deadline),
                Phase::Busy => None,
            }
        }
    }

    /// The watchdog's timer is armed for the deadline it saw; a later request moves the deadline
    /// without waking it, and when the timer fires it must sleep on rather than close.
    #[tokio::test]
    async fn a_request_after_the_watchdog_armed_its_timer_moves_the_idle_deadline_later() {
        let timeouts = IdleTimeouts {
            first_request: Duration::from_secs(3600),
            between_requests: Duration::from_millis(300),
        };
        let activity = Activity::new();
        drop(activity.begin());
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(timeouts).await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let ((), ended) = during(|| drop(activity.begin()));
        tokio::time::timeout(Duration::from_secs(10), watchdog)
            .await
            .expect("idle 300 ms after the last request")
            .unwrap();
        assert!(
            Instant::now() >= *ended.start() + timeouts.between_requests,
            "closed before the last request's idle timeout"
        );
    }

    const TIMEOUTS: IdleTimeouts = IdleTimeouts {
        first_request: Duration::from_secs(10),
        between_requests: Duration::from_secs(60),
    };

    /// Runs `f` and returns the window of instants it ran in.
    fn during<T>(f: impl FnOnce() -> T) -> (T, std::ops::RangeInclusive<Instant>) {
        let before = Instant::now();
        let value = f();
        (value, before..=Instant::now())
    }

    fn assert_deadline_in(
        activity: &Activity,
        window: &std::ops::RangeInclusive<Instant>,
        after: Duration,
    ) {
        let deadline = activity.idle_deadline(TIMEOUTS).expect("idle");
        assert!(
            (*window.start() + after..=*window.end() + after).contains(&deadline),
            "deadline {deadline:?} not {after:?} after {window:?}"
        );
    }

    #[test]
    fn a_connection_that_never_sends_a_request_has_the_first_request_timeout() {
        let (activity, opened) = during(Activity::new);
        assert_deadline_in(&activity, &opened, TIMEOUTS.first_request);
    }

    #[test]
    fn a_long_request_is_never_idle_and_the_idle_clock_starts_when_it_ends() {
        let activity = Activity::new();
        let busy = activity.begin();
        let other = activity.begin();
        assert_eq!(activity.idle_deadline(TIMEOUTS), None);
        drop(busy);
        assert_eq!(
            activity.idle_deadline(TIMEOUTS),
            None,
            "one still in flight"
        );
        let ((), ended) = during(|| drop(other));
        assert_deadline_in(&activity, &ended, TIMEOUTS.between_requests);
    }

    /// The watchdog once slept to the first-request deadline and never saw the request end, so
    /// an HTTP/2 connection lived on for the whole header timeout instead of the idle timeout.
    #[tokio::test]
    async fn the_idle_clock_starts_when_a_request_ends_not_at_the_first_request_deadline() {
        let timeouts = IdleTimeouts {
            first_request: Duration::from_secs(3600),
            between_requests: Duration::from_millis(50),
        };
        let activity = Activity::new();
        let busy = activity.begin();
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(timeouts).await }
        });
        tokio::task::yield_now().await;
        drop(busy);
        tokio::time::timeout(Duration::from_secs(10), watchdog)
            .await
            .expect("idle 50 ms after the request, not an hour after opening")
            .unwrap();
    }

    #[tokio::test]
    async fn a_streaming_body_keeps_its_request_in_flight_until_it_ends() {
        let activity = Activity::new();
        let mut body = BusyBody::new(Body::from("firmware"), activity.begin());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "firmware");
        assert_eq!(
            activity.idle_deadline(TIMEOUTS),
            None,
            "the body may not be done"
        );
        let (end, ended) = during(|| {
            futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| {
                Pin::new(&mut body).poll_frame(cx)
            }))
        });
        assert!(matches!(end, Some(None)), "the body has ended");
        assert_deadline_in(&activity, &ended, TIMEOUTS.between_requests);
    }

    #[tokio::test]
    async fn bytes_after_a_response_are_a_begun_request_and_none_is_plain_idleness() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let activity = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Counted::new(server, activity.clone());
        assert!(!activity.request_begun());
        let busy = activity.begin();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        server.read_exact(&mut [0; 18]).await.unwrap();
        drop(busy);
        assert!(
            !activity.request_begun(),
            "a served request is not a begun one"
        );
        client.write_all(b"GE").await.unwrap();
        server.read_exact(&mut [0; 2]).await.unwrap();
        assert!(activity.request_begun(), "half a request head is");
    }
}
