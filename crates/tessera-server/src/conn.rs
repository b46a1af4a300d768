//! The bounds both listeners put on their connections, so that no client
//! (and no flood of clients) can take what the others and the engine need:
//!
//! - **caps**: at most `max_connections` open connections per listener
//!   (more wait in the kernel's listen backlog, holding no descriptor of
//!   ours) and `max_connections_per_address` from one client address (HTTP
//!   answers 429 and closes; gRPC closes at once);
//! - **a descriptor reserve**: the caps are lowered at start, if need be,
//!   so that connections can never take the descriptors the engine needs to
//!   seal, merge and back up ([`fit_descriptors`]);
//! - **idle gRPC connections close** after `grpc_idle_timeout` with no rpc
//!   in flight or started ([`GrpcConn`]; HTTP's header read timeout does the
//!   same for kept-alive HTTP connections);
//! - **request bodies are metered** ([`Metered`]): a gRPC message must
//!   arrive within `body_timeout_ms` of its headers, as an HTTP body must, and
//!   the bytes of bodies and messages being received at once stay under
//!   `max_receiving_bytes` over every connection and under
//!   `max_receiving_bytes_per_address` from one client address.

use crate::error::{ApiError, ErrorKind};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A listener's caps on open connections: in all, and per client address.
#[derive(Clone)]
pub(crate) struct Caps {
    slots: Arc<Semaphore>,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pub per_address: usize,
}

impl Caps {
    pub fn new(max: usize, per_address: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            by_address: Arc::default(),
            per_address: per_address.max(1),
        }
    }

    /// A free connection slot: waits while `max` connections are open.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots.clone().acquire_owned().await.expect("never closed")
    }

    /// A connection of `ip`, unless it holds `per_address` already.
    pub fn address(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut m = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot { map: self.by_address.clone(), ip })
    }
}

/// One of the connections a client address holds; given back on drop.
pub(crate) struct AddressSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A connection's hold on its listener's caps, given back when it closes (is dropped).
pub(crate) struct Held {
    _slot: OwnedSemaphorePermit,
    _address: AddressSlot,
}

impl Held {
    pub fn new(slot: OwnedSemaphorePermit, address: AddressSlot) -> Self {
        Self { _slot: slot, _address: address }
    }
}

/// The next connection: an error (out of descriptors, say) is logged and
/// retried after a pause instead of ending the accept loop.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Writes `answer` (within 5 s), closes the writing side, then reads and
/// drops up to `drain` bytes the client sent (within 1 s) before the stream
/// is closed: closing with unread bytes resets the connection, which can
/// lose the answer before the client reads it.
pub(crate) async fn answer_and_close(stream: &mut TcpStream, answer: &[u8], drain: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer)).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let read_all = async {
        let mut read = 0;
        while let Ok(n @ 1..) = stream.read(&mut sink).await {
            read += n;
            if read > drain {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_all).await;
}

/// Descriptors kept free for the engine (new segments, indexes, WALs, full-text
/// files, backups) beside those open at start; half the limit when it is small.
const DESCRIPTOR_RESERVE: u64 = 1024;

/// The connection caps of the listeners (`wanted`, one per listener) fitted
/// to the process's descriptor limit: the soft limit is raised to the hard
/// one, and if the caps would still leave fewer than the reserve free beside
/// the descriptors open now, each is lowered in proportion (and logged).
pub(crate) fn fit_descriptors(wanted: &[usize]) -> Vec<usize> {
    let Some((limit, open)) = descriptors() else { return wanted.to_vec() };
    let reserve = DESCRIPTOR_RESERVE.min(limit / 2);
    let room = limit.saturating_sub(open + reserve).max(wanted.len() as u64) as usize;
    let total: usize = wanted.iter().sum();
    if total <= room {
        return wanted.to_vec();
    }
    let fitted: Vec<usize> = wanted.iter().map(|&w| (w * room / total).max(1)).collect();
    tracing::warn!(
        descriptor_limit = limit,
        open,
        reserve,
        ?wanted,
        ?fitted,
        "max_connections lowered so that connections leave descriptors for the engine (raise `ulimit -n` to keep them)"
    );
    fitted
}

/// `(limit, open)`: the descriptor limit (the soft one raised to the hard
/// one first) and how many are open now; `None` where this cannot be read.
#[cfg(target_os = "linux")]
fn descriptors() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limits into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the struct; raising the soft limit to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((lim.rlim_cur, open))
}

#[cfg(not(target_os = "linux"))]
fn descriptors() -> Option<(u64, u64)> {
    None
}

/// What a gRPC connection is doing: rpcs in flight, and when the last one
/// started or ended (its idle time is measured from then).
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    /// Counts an rpc in flight until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        InFlight(self.clone())
    }

    /// When the connection became idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(last)
    }
}

/// An rpc in flight on its connection.
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its rpc counted in flight until it has been
/// sent whole (or dropped), so that a long answer to a slow client is not cut
/// as idle.
pub(crate) struct Guarded<B> {
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, in_flight: Option<InFlight>) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What tonic puts in each request's extensions about its connection.
#[derive(Debug, Clone)]
pub struct GrpcConnInfo {
    pub remote: SocketAddr,
    pub activity: Arc<Activity>,
}

/// A gRPC connection: its stream, its hold on the caps, and its idle clock.
/// Once no rpc has been in flight for `idle`, reading ends (as if the client
/// had closed), and the connection closes.
pub(crate) struct GrpcConn<S> {
    io: S,
    info: GrpcConnInfo,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    _held: Held,
}

impl<S> GrpcConn<S> {
    pub fn new(io: S, remote: SocketAddr, held: Held, idle: Duration) -> Self {
        let activity = Arc::new(Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) });
        let timer = Box::pin(tokio::time::sleep(idle));
        Self { io, info: GrpcConnInfo { remote, activity }, idle, timer, _held: held }
    }

    /// The stream underneath.
    #[cfg(test)]
    pub fn io(&self) -> &S {
        &self.io
    }

    /// Whether the connection has been idle for its timeout (the timer is
    /// re-armed, and its waker registered, while it has not). Called only when
    /// nothing is there to read.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = match self.info.activity.idle_since() {
                Some(since) if since.elapsed() >= self.idle => return true,
                Some(since) => since + self.idle,
                None => Instant::now() + self.idle,
            };
            self.timer.as_mut().reset(due.into());
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GrpcConn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Whatever the client sent is read first: a request that arrives as
        // the timer fires is served, not dropped.
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Pending if self.timed_out(cx) => {
                tracing::debug!(remote = %self.info.remote, "closing an idle gRPC connection");
                Poll::Ready(Ok(())) // end of stream: the connection closes
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GrpcConn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<S> tonic::transport::server::Connected for GrpcConn<S> {
    type ConnectInfo = GrpcConnInfo;

    fn connect_info(&self) -> GrpcConnInfo {
        self.info.clone()
    }
}

/// The bytes of request bodies (HTTP) and messages (gRPC) being received at
/// once, over every connection and per client address, and their bounds: one
/// address cannot hold the whole budget while others are refused.
#[derive(Debug)]
pub struct Receiving {
    used: Mutex<Used>,
    pub max: usize,
    pub per_address: usize,
}

#[derive(Debug, Default)]
struct Used {
    all: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A gRPC message's 5-byte prefix, which `max_body_bytes` does not count:
/// allowed beyond both bounds, so that they may equal `max_body_bytes` and
/// still take a message of that size.
const FRAMING: usize = 5;

/// Which bound a take would pass.
enum Over {
    Address(usize),
    All(usize),
}

impl Receiving {
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self { used: Mutex::default(), max, per_address })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `n` bytes of the budget for `ip`, unless that would pass the
    /// address's bound or the server's (the bytes held then, for the error).
    fn take(&self, ip: Option<IpAddr>, n: usize) -> Result<(), Over> {
        if n == 0 {
            return Ok(()); // an empty frame: no entry for an address that holds nothing
        }
        let mut u = self.lock();
        if let Some(ip) = ip {
            let held = u.by_address.get(&ip).copied().unwrap_or(0);
            if held + n > self.per_address + FRAMING {
                return Err(Over::Address(held));
            }
        }
        if u.all + n > self.max + FRAMING {
            return Err(Over::All(u.all));
        }
        u.all += n;
        if let Some(ip) = ip {
            *u.by_address.entry(ip).or_default() += n;
        }
        Ok(())
    }

    fn give(&self, ip: Option<IpAddr>, n: usize) {
        if n == 0 {
            return;
        }
        let mut u = self.lock();
        u.all -= n;
        if let Some(ip) = ip
            && let Some(held) = u.by_address.get_mut(&ip)
        {
            *held -= n;
            if *held == 0 {
                u.by_address.remove(&ip);
            }
        }
    }

    /// Bytes being received now.
    pub fn used(&self) -> usize {
        self.lock().all
    }
}

/// The client address of an HTTP request, put in its extensions when its
/// connection is served (gRPC's is in [`GrpcConnInfo`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddress(pub IpAddr);

/// A request body read under the server's bounds: its bytes count against
/// `max_receiving_bytes` until the request is done with them (the body is
/// dropped), and with a `deadline` it must end by then. A bound passed ends
/// the body with an [`ApiError`], turned into the body's error by `refuse`
/// (a `tonic::Status` for gRPC, which tonic answers as it is).
pub(crate) struct Metered<B> {
    inner: B,
    budget: Arc<Receiving>,
    /// The client's address, whose share the bytes count against too.
    ip: Option<IpAddr>,
    held: usize,
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
    refuse: fn(ApiError) -> BoxError,
}

impl<B> Metered<B> {
    pub fn new(
        inner: B,
        budget: Arc<Receiving>,
        ip: Option<IpAddr>,
        timeout: Option<Duration>,
        refuse: fn(ApiError) -> BoxError,
    ) -> Self {
        let deadline = timeout.map(|t| (Box::pin(tokio::time::sleep(t)), t));
        Self { inner, budget, ip, held: 0, deadline, refuse }
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.budget.give(self.ip, self.held);
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some((sleep, t)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let ms = t.as_millis();
            let e = ApiError {
                kind: ErrorKind::RequestTimeout,
                message: format!("the request message did not arrive within {ms} ms, the limit body_timeout_ms"),
                limit: Some("body_timeout_ms"),
            };
            self.deadline = None;
            return Poll::Ready(Some(Err((self.refuse)(e))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.deadline = None;
                return Poll::Ready(None);
            }
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len();
            if let Err(over) = self.budget.take(self.ip, n) {
                let (message, limit) = match over {
                    Over::Address(held) => (
                        format!(
                            "this address is sending {held} bytes of other requests, near the limit \
                             max_receiving_bytes_per_address = {}; try again once they are received",
                            self.budget.per_address
                        ),
                        "max_receiving_bytes_per_address",
                    ),
                    Over::All(held) => (
                        format!(
                            "the server is receiving {held} bytes of other requests, near the limit \
                             max_receiving_bytes = {}; try again",
                            self.budget.max
                        ),
                        "max_receiving_bytes",
                    ),
                };
                let e = ApiError { kind: ErrorKind::Unavailable, message, limit: Some(limit) };
                return Poll::Ready(Some(Err((self.refuse)(e))));
            }
            self.held += n;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
