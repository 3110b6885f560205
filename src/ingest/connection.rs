//! Connection lifecycle for the ingest and admin listeners: connection slots, the header and
//! idle deadlines, and shedding idle connections when the slots run out.
//!
//! Every accepted connection is registered with an [`Activity`]: how many requests it has in
//! progress, how many it has served, and since when it has been idle. A watchdog per connection
//! closes it when
//!
//! * it has not produced a complete request head `header_timeout` after **accept** (not after
//!   its first byte): silent sockets, partial heads, and HTTP/2 connections that only sent the
//!   preface all count as "no request yet";
//! * it has had no request in progress for `idle_timeout` since its last response (HTTP/1
//!   keep-alive, and HTTP/2 connections without an open stream);
//! * the listener shed it: when every slot is taken, accepting a new connection closes the
//!   connections that have been idle longest (a batch of 1/64 of the slots, so a burst of new
//!   clients does not pay one shed each), so a new client always gets a slot unless every slot
//!   is busy with a request in progress;
//! * its client (peer IP address) already holds `max_per_client` connections: the client's own
//!   longest-idle connection is shed to make room, and when all of them are busy with requests
//!   the new connection is refused at once (503 `too_many_connections`), so one client cannot
//!   hold every slot with stalled requests.
//!
//! Invariants:
//! * A connection with a request in progress is never closed by the watchdog (request bodies
//!   have their own deadlines in the handler), so closing never loses an acknowledged append.
//! * At most `max_connections` connections are served at once; a shed connection gives its
//!   slot back when its task ends, which the accept loop waits for.
//! * [`Connections::saturated`] is true while the accept loop waits for a slot that shedding
//!   could not free: `/readyz` reports it.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::IngestError;
use super::tls::ListenerTls;
use crate::metrics as m;

/// Deadlines and the slot count of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// From accept to the first complete request head.
    pub header_timeout: Duration,
    /// From the end of the last request to the next request head.
    pub idle_timeout: Duration,
    /// Most connections one client (peer IP address) may hold.
    pub max_per_client: usize,
}

impl ConnectionLimits {
    /// The default per-client cap for `max_connections` slots: a quarter of them, but never
    /// fewer than 64, so clients behind one NAT still fit. With 64 slots or fewer that is all
    /// of them: no per-client cap.
    pub fn default_per_client(max_connections: usize) -> usize {
        (max_connections / 4).max(max_connections.min(64)).max(1)
    }
}

/// Why the watchdog closed a connection (the `reason` label of the closed-connections metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    Shed,
    /// Refused at accept: its client holds `max_per_client` busy connections.
    ClientLimit,
}

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shed => "shed",
            CloseReason::ClientLimit => "client_limit",
        }
    }
}

/// The open connections of one listener.
pub struct Connections {
    listener: &'static str,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    open: Mutex<Registry>,
    next_id: AtomicU64,
    saturated: AtomicBool,
}

/// Shedding frees 1/64 of the slots at once (at least one).
const SHED_FRACTION: usize = 64;

/// How long the accept loop waits for a slot before it tries shedding again.
const SLOT_RETRY: Duration = Duration::from_millis(50);

impl Connections {
    /// `listener` names the listener in metrics (`ingest`, `admin`).
    pub fn new(listener: &'static str, limits: ConnectionLimits) -> Self {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        // Exposed from the start (as 0), so dashboards and alerts see the series.
        metrics::gauge!(m::CONNECTIONS_SATURATED, "listener" => listener).set(0.0);
        Connections {
            listener,
            limits,
            slots: Arc::new(Semaphore::new(max)),
            open: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
        }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// The listener's name in metrics and logs.
    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// True while every slot is busy with a request in progress and a new client must wait.
    pub fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Acquire)
    }

    /// Connections currently registered.
    pub fn open(&self) -> usize {
        self.open.lock().connections.len()
    }

    /// Accept the next connection and give it a slot (shedding the longest-idle connection
    /// when none is free). A connection over its client's cap is refused here (answered and
    /// closed in the background) and the next one accepted. `None` once `shutdown` is
    /// cancelled.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
        tls: Option<&Arc<ListenerTls>>,
        shutdown: &CancellationToken,
    ) -> Option<Accepted> {
        let (stream, peer) = loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE/ENFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = self.listener, error = %err, "accept failed");
                        tokio::time::sleep(SLOT_RETRY).await;
                        continue;
                    }
                },
            };
            if self.make_room_for_client(peer.ip()) {
                break (stream, peer);
            }
            self.refuse_over_client_limit(stream, peer, tls.cloned());
        };
        let slot = self.slot(shutdown).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.open.lock().insert(id, peer.ip(), activity.clone());
        Some(Accepted {
            stream,
            peer,
            guard: ConnectionGuard {
                connections: self.clone(),
                id,
                activity,
                _slot: slot,
            },
        })
    }

    /// True when `client` may open another connection: it is under its cap, or one of its
    /// idle connections was shed to make room.
    fn make_room_for_client(&self, client: IpAddr) -> bool {
        if self.limits.max_per_client >= self.limits.max_connections {
            // No cap below the slot count: a client may wait for a slot like anyone else.
            return true;
        }
        let open = self.open.lock();
        if open.count(client) < self.limits.max_per_client {
            return true;
        }
        let oldest_idle = open
            .connections
            .values()
            .filter(|(peer, _)| *peer == client)
            .filter_map(|(_, activity)| activity.idle_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        match oldest_idle {
            Some((_, activity)) => {
                activity.shed();
                true
            }
            None => false,
        }
    }

    /// Answer a connection over its client's cap with 503 and close it, off the accept loop.
    /// Over TLS the answer needs a handshake first, bounded by the header deadline.
    fn refuse_over_client_limit(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        tls: Option<Arc<ListenerTls>>,
    ) {
        let (limit, deadline) = (self.limits.max_per_client, self.limits.header_timeout);
        tracing::debug!(listener = self.listener, %peer, limit, "connection refused: client holds too many busy connections");
        metrics::counter!(
            m::CONNECTIONS_CLOSED_TOTAL,
            "listener" => self.listener,
            "reason" => CloseReason::ClientLimit.name()
        )
        .increment(1);
        tokio::spawn(async move {
            let refusal = IngestError::TooManyConnections { limit };
            match tls {
                None => super::head::refuse(stream, &refusal).await,
                Some(tls) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(deadline, tls.accept(stream)).await
                    {
                        super::head::refuse(stream, &refusal).await;
                    }
                }
            }
        });
    }

    async fn slot(&self, shutdown: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                self.set_saturated(false);
                return Some(permit);
            }
            let shed = self.shed_longest_idle();
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                permit = self.slots.clone().acquire_owned() => {
                    self.set_saturated(false);
                    return permit.ok();
                }
                _ = tokio::time::sleep(SLOT_RETRY) => {
                    if !shed {
                        self.set_saturated(true);
                    }
                }
            }
        }
    }

    fn set_saturated(&self, saturated: bool) {
        if self.saturated.swap(saturated, Ordering::AcqRel) != saturated {
            if saturated {
                tracing::warn!(
                    listener = self.listener,
                    max_connections = self.limits.max_connections,
                    "every connection slot is busy with a request; new clients wait"
                );
            }
            metrics::gauge!(m::CONNECTIONS_SATURATED, "listener" => self.listener)
                .set(if saturated { 1.0 } else { 0.0 });
        }
    }

    /// Ask the connections idle longest (no request in progress) to close: a batch of
    /// [`SHED_FRACTION`] of the slots, so a burst of new connections does not pay one shed
    /// and one wake-up each. False when every connection is busy.
    fn shed_longest_idle(&self) -> bool {
        let batch = (self.limits.max_connections / SHED_FRACTION).max(1);
        let open = self.open.lock();
        let mut idle: Vec<(Instant, &Arc<Activity>)> = open
            .connections
            .values()
            .filter_map(|(_, activity)| activity.idle_since().map(|since| (since, activity)))
            .collect();
        if idle.len() > batch {
            idle.select_nth_unstable_by_key(batch - 1, |(since, _)| *since);
            idle.truncate(batch);
        }
        for (_, activity) in &idle {
            activity.shed();
        }
        !idle.is_empty()
    }

    /// Serve one connection: run `connection` until it ends or the watchdog closes it.
    pub async fn serve<F, E>(
        &self,
        guard: ConnectionGuard,
        peer: std::net::SocketAddr,
        connection: F,
    ) where
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::select! {
            result = connection => if let Err(err) = result {
                tracing::debug!(listener = self.listener, %peer, error = %err, "connection ended with an error");
            },
            reason = guard.activity.expired(self.limits) => {
                tracing::debug!(listener = self.listener, %peer, reason = reason.name(), "connection closed");
                metrics::counter!(
                    m::CONNECTIONS_CLOSED_TOTAL,
                    "listener" => self.listener,
                    "reason" => reason.name()
                )
                .increment(1);
            }
        }
        drop(guard);
    }
}

/// A freshly accepted connection with its slot.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: std::net::SocketAddr,
    pub guard: ConnectionGuard,
}

/// Holds a connection's slot and registration; both are released on drop.
pub struct ConnectionGuard {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

impl ConnectionGuard {
    /// The activity record the connection's service marks requests on.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.open.lock().remove(self.id);
    }
}

/// The registered connections of a listener, with a count per client address.
#[derive(Default)]
struct Registry {
    connections: HashMap<u64, (IpAddr, Arc<Activity>)>,
    per_client: HashMap<IpAddr, usize>,
}

impl Registry {
    fn count(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    fn insert(&mut self, id: u64, client: IpAddr, activity: Arc<Activity>) {
        self.connections.insert(id, (client, activity));
        *self.per_client.entry(client).or_default() += 1;
    }

    fn remove(&mut self, id: u64) {
        let Some((client, _)) = self.connections.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// What one connection is doing, as far as its deadlines are concerned.
pub struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    in_progress: usize,
    served: u64,
    /// Accept time, then the end of the last request.
    idle_since: Instant,
    shed: bool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                in_progress: 0,
                served: 0,
                idle_since: Instant::now(),
                shed: false,
            }),
            changed: Notify::new(),
        }
    }

    /// Mark a request head as received; the request counts as in progress until the returned
    /// guard is dropped (its handler finished).
    pub fn begin_request(self: &Arc<Self>) -> RequestInProgress {
        let mut state = self.state.lock();
        state.in_progress += 1;
        state.served += 1;
        drop(state);
        self.changed.notify_one();
        RequestInProgress {
            activity: self.clone(),
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.lock();
        (state.in_progress == 0 && !state.shed).then_some(state.idle_since)
    }

    fn shed(&self) {
        self.state.lock().shed = true;
        self.changed.notify_one();
    }

    /// Resolves when the connection must close.
    async fn expired(&self, limits: ConnectionLimits) -> CloseReason {
        loop {
            let notified = self.changed.notified();
            let deadline = {
                let state = self.state.lock();
                if state.shed {
                    return CloseReason::Shed;
                }
                match (state.in_progress, state.served) {
                    (0, 0) => Some((
                        state.idle_since + limits.header_timeout,
                        CloseReason::HeaderTimeout,
                    )),
                    (0, _) => Some((
                        state.idle_since + limits.idle_timeout,
                        CloseReason::IdleTimeout,
                    )),
                    _ => None,
                }
            };
            match deadline {
                Some((at, reason)) if at <= Instant::now() => return reason,
                Some((at, _)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// A request in progress on a connection (see [`Activity::begin_request`]).
pub struct RequestInProgress {
    activity: Arc<Activity>,
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        let mut state = self.activity.state.lock();
        state.in_progress -= 1;
        if state.in_progress == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.activity.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 2,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_per_client: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn the_header_deadline_counts_from_accept() {
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        assert_eq!(activity.expired(LIMITS).await, CloseReason::HeaderTimeout);
        assert_eq!(started.elapsed(), LIMITS.header_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_expired_and_idleness_starts_after_it() {
        let activity = Arc::new(Activity::new());
        let request = activity.begin_request();
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.expired(LIMITS).await }
        });
        tokio::time::sleep(LIMITS.idle_timeout * 3).await;
        assert!(!watchdog.is_finished(), "closed with a request in progress");
        let ended = Instant::now();
        drop(request);
        assert_eq!(watchdog.await.unwrap(), CloseReason::IdleTimeout);
        assert_eq!(ended.elapsed(), LIMITS.idle_timeout);
    }

    /// A listener with [`LIMITS`] and both its slots taken.
    struct FullListener {
        connections: Arc<Connections>,
        listener: Arc<TcpListener>,
        shutdown: CancellationToken,
        clients: Vec<TcpStream>,
        accepted: Vec<Accepted>,
    }

    impl FullListener {
        async fn new() -> Self {
            let mut full = FullListener {
                connections: Arc::new(Connections::new("test", LIMITS)),
                listener: Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap()),
                shutdown: CancellationToken::new(),
                clients: Vec::new(),
                accepted: Vec::new(),
            };
            for _ in 0..LIMITS.max_connections {
                full.connect().await;
                let accepted = full
                    .connections
                    .accept(&full.listener, None, &full.shutdown);
                full.accepted.push(accepted.await.unwrap());
            }
            full
        }

        async fn connect(&mut self) {
            let addr = self.listener.local_addr().unwrap();
            self.clients.push(TcpStream::connect(addr).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_full_listener_sheds_the_longest_idle_connection() {
        let mut full = FullListener::new().await;
        // The second connection is busy; the first is idle and older.
        let busy = full.accepted[1].guard.activity().begin_request();
        let oldest = full.accepted.remove(0);
        let serving = {
            let connections = full.connections.clone();
            tokio::spawn(async move {
                let never = std::future::pending::<Result<(), String>>();
                connections.serve(oldest.guard, oldest.peer, never).await;
            })
        };
        full.connect().await;
        let third = full
            .connections
            .accept(&full.listener, None, &full.shutdown);
        let third = third.await.unwrap();
        serving.await.unwrap();
        assert_eq!(full.connections.open(), 2, "the idle one made room");
        assert!(!full.connections.saturated());
        drop((busy, third));
    }

    #[tokio::test]
    async fn a_listener_with_every_slot_busy_reports_saturation_until_one_frees() {
        let mut full = FullListener::new().await;
        let mut busy: Vec<_> = full
            .accepted
            .drain(..)
            .map(|accepted| (accepted.guard.activity().begin_request(), accepted.guard))
            .collect();
        full.connect().await;
        let third = {
            let (connections, listener, shutdown) = (
                full.connections.clone(),
                full.listener.clone(),
                full.shutdown.clone(),
            );
            tokio::spawn(async move {
                connections
                    .accept(&listener, None, &shutdown)
                    .await
                    .is_some()
            })
        };
        while !full.connections.saturated() {
            tokio::time::sleep(SLOT_RETRY).await;
        }
        assert!(!third.is_finished(), "no busy connection is shed");
        busy.pop();
        assert!(third.await.unwrap());
        assert!(!full.connections.saturated());
    }
}
