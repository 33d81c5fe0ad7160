//! A broadcast backend over Redis PUB/SUB: one manager's messages cross processes and hosts.
//!
//! A `Link` publishes what its manager sends (one `PUBLISH` per broadcast, pipelined in
//! order on one multiplexed connection) and subscribes, on a dedicated connection, to the
//! manager's channels: everyone, this process's node channels (`send_to` and query
//! replies), and each room that has local members. What arrives is handed to the manager's
//! local fan-out through `LocalMembers`, with no Python in between; queries are answered
//! here. The link reconnects by itself with jittered backoff, notices a dead or half-open
//! connection by PING, and resubscribes. It tells its manager what happened (log lines,
//! reconnects, query answers) through its own `Bridge`, so it never takes the GIL and never
//! names the registry that owns it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use redis::{AsyncConnectionConfig, Client, Msg};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::bridge::{Bridge, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARNING};
use crate::envelope::{Body, Envelope, Malformed, Query, Target};
use crate::frame::OutFrame;
use crate::node;

/// First retry after this; doubles up to `BACKOFF_MAX`; each wait is jittered to 50–100 %.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The subscriber is pinged this often and must answer within `PING_TIMEOUT`: a half-open
/// connection is noticed within about three seconds.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A room whose last local member left stays subscribed this long, so members that come
/// and go quickly do not churn SUBSCRIBE/UNSUBSCRIBE.
const ROOM_LINGER: Duration = Duration::from_secs(2);
/// A node tag's claim in Redis lives this long and is renewed every `CLAIM_RENEW`.
const CLAIM_TTL_SECONDS: u64 = 30;
const CLAIM_RENEW: Duration = Duration::from_secs(10);
/// How often a reader that stopped for the local fan-out looks whether it may go on.
const KEEP_UP_POLL: Duration = Duration::from_millis(1);
/// One pipeline holds at most this many messages or bytes.
const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 1 << 20;

/// What the link needs from the manager that owns it.
pub trait LocalMembers: Send + Sync {
    /// Offer a message from another process to the local members `target` names.
    fn deliver_remote(&self, frame: OutFrame, target: &Target, exclude: Option<u64>);
    /// Whether deliveries are this far behind that the reader should wait for them.
    fn backlog_full(&self) -> bool;
    /// This process's answer to a query: `[count]`, or the member ids.
    fn answer(&self, query: Query, room: Option<&str>) -> Vec<u64>;
}

/// What the link tells its manager, on the loop thread (`Registry.backend_drain`).
pub enum Notice {
    Log(i32, String),
    /// The link is connected again after losing Redis: the app may resync.
    Reconnected,
    /// The cluster-wide answer to a query, or why there is none.
    Answer(u64, Result<Vec<u64>, QueryError>),
}

pub enum QueryError {
    /// Not every process answered in time.
    Timeout(String),
    /// Redis is not reachable, or the query could not be published.
    Unavailable(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Connecting = 0,
    Connected = 1,
    Down = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Down => "down",
        }
    }
}

pub struct Settings {
    pub url: String,
    pub channel_prefix: String,
    pub name: String,
    /// Bytes queued for publishing at most; past it messages are dropped and counted.
    pub publish_limit: usize,
    pub presence_timeout: Duration,
}

#[derive(Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub reconnects: AtomicU64,
    pub malformed: AtomicU64,
}

struct Outgoing {
    channel: String,
    data: Vec<u8>,
    /// A query: its PUBLISH reply says how many processes will answer.
    query: Option<u64>,
}

#[derive(Default)]
struct Rooms {
    /// Rooms with local members.
    wanted: HashSet<String>,
    /// Rooms whose last local member left, and when.
    released: HashMap<String, Instant>,
}

struct Pending {
    query: Query,
    values: Vec<u64>,
    /// Other processes that will answer, once PUBLISH has said.
    expected: Option<u64>,
    answered: u64,
}

pub struct Link {
    settings: Settings,
    client: Client,
    /// The URL with its password replaced, for logs.
    pub address: String,
    queue: mpsc::UnboundedSender<Outgoing>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    queued_bytes: AtomicUsize,
    rooms: Mutex<Rooms>,
    rooms_changed: Notify,
    state: AtomicU8,
    pub counters: Counters,
    pending: Mutex<HashMap<u64, Pending>>,
    next_query: AtomicU64,
    pub notices: Bridge<Notice>,
    /// The manager's members, set once by `start`.
    local: OnceLock<Weak<dyn LocalMembers>>,
    /// This process's instance number and newest node tag, read at `start` (in the
    /// process that serves, after any fork) so that no message asks `node` for them.
    instance: OnceLock<u64>,
    origin_tag: AtomicU32,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The server refused the tag claims once (logged once).
    claims_refused: AtomicBool,
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        },
        None => url.to_owned(),
    }
}

fn jittered(backoff: Duration) -> Duration {
    let fraction = 0.5 + (node::random_u64() % 1000) as f64 / 2000.0;
    backoff.mul_f64(fraction)
}

impl Link {
    /// Check the settings; no connection is made and no thread started until `start`.
    pub fn new(settings: Settings) -> Result<Self, String> {
        let address = redact(&settings.url);
        let scheme = settings.url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            return Err(format!(
                "{address} is not a Redis URL (redis://, rediss:// or unix://)"
            ));
        }
        let client = Client::open(settings.url.as_str())
            .map_err(|e| format!("{address} is not a valid Redis URL: {e}"))?;
        let (queue, receiver) = mpsc::unbounded_channel();
        Ok(Self {
            settings,
            client,
            address,
            queue,
            receiver: Mutex::new(Some(receiver)),
            queued_bytes: AtomicUsize::new(0),
            rooms: Mutex::new(Rooms::default()),
            rooms_changed: Notify::new(),
            state: AtomicU8::new(State::Connecting as u8),
            counters: Counters::default(),
            pending: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            notices: Bridge::new().map_err(|e| format!("cannot make an eventfd: {e}"))?,
            local: OnceLock::new(),
            instance: OnceLock::new(),
            origin_tag: AtomicU32::new(0),
            task: Mutex::new(None),
            claims_refused: AtomicBool::new(false),
        })
    }

    /// Connect and keep connected, on the IO threads. Once; later calls do nothing.
    pub fn start(self: &Arc<Self>, local: Weak<dyn LocalMembers>) {
        let Some(receiver) = self.receiver.lock().take() else {
            return;
        };
        let _ = self.local.set(local);
        let _ = self.instance.set(node::instance());
        self.origin_tag.store(node::tag(), Ordering::Relaxed);
        let link = self.clone();
        let task = crate::runtime::get().spawn(async move { link.run(receiver).await });
        *self.task.lock() = Some(task);
    }

    pub fn stop(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            1 => State::Connected,
            2 => State::Down,
            _ => State::Connecting,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    fn log(&self, level: i32, message: String) {
        self.notices.push(Notice::Log(level, message));
    }

    // ---- channels ----

    fn channel(&self, suffix: std::fmt::Arguments<'_>) -> String {
        format!(
            "{}:{}:{}",
            self.settings.channel_prefix, self.settings.name, suffix
        )
    }

    fn all_channel(&self) -> String {
        self.channel(format_args!("all"))
    }

    fn room_channel(&self, room: &str) -> String {
        self.channel(format_args!("room:{room}"))
    }

    fn node_channel(&self, tag: u32) -> String {
        self.channel(format_args!("node:{tag}"))
    }

    fn claim_key(&self, tag: u32) -> String {
        format!("{}:node:{tag}", self.settings.channel_prefix)
    }

    /// An envelope from this process (instance 0 before `start`: nothing reads it then).
    fn envelope(&self, body: Body) -> Envelope {
        Envelope {
            origin_tag: self.origin_tag.load(Ordering::Relaxed),
            origin_instance: self.instance.get().copied().unwrap_or(0),
            body,
        }
    }

    fn local(&self) -> Option<Arc<dyn LocalMembers>> {
        self.local.get().and_then(Weak::upgrade)
    }

    // ---- what the manager asks ----

    /// Publish a message for the members `target` names on every other process.
    pub fn publish(&self, target: &Target, exclude: Option<u64>, frame: &OutFrame) {
        let channel = match target {
            Target::All => self.all_channel(),
            Target::Room(room) => self.room_channel(room),
            Target::One(id) => self.node_channel(node::tag_of(*id)),
        };
        let envelope = self.envelope(Body::Message {
            target: target.clone(),
            exclude,
            binary: frame.is_binary(),
            payload: frame.payload.clone(),
        });
        self.enqueue(channel, envelope.encode(), None);
    }

    /// Queue for publishing unless the queue is over its limit (then count a drop).
    fn enqueue(&self, channel: String, data: Vec<u8>, query: Option<u64>) -> bool {
        let size = data.len() + channel.len();
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size > self.settings.publish_limit {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.counters
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let sent = self.queue.send(Outgoing {
            channel,
            data,
            query,
        });
        sent.is_ok()
    }

    /// A local member opened `room`: subscribe to its channel.
    pub fn room_opened(&self, room: &str) {
        let mut rooms = self.rooms.lock();
        rooms.released.remove(room);
        if rooms.wanted.insert(room.to_owned()) {
            self.rooms_changed.notify_one();
        }
    }

    /// The last local member left `room`: unsubscribe after the linger time.
    pub fn room_closed(&self, room: &str) {
        let mut rooms = self.rooms.lock();
        if rooms.wanted.remove(room) {
            rooms.released.insert(room.to_owned(), Instant::now());
        }
    }

    /// Ask every process (this one included) and answer later with `Notice::Answer`.
    pub fn query(self: &Arc<Self>, query: Query, room: Option<String>) -> u64 {
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let local = self.local();
        let values = local.map_or_else(Vec::new, |l| l.answer(query, room.as_deref()));
        if self.state() != State::Connected {
            let why = format!(
                "the broadcast backend {} is {}",
                self.address,
                self.state().name()
            );
            self.notices
                .push(Notice::Answer(id, Err(QueryError::Unavailable(why))));
            return id;
        }
        self.pending.lock().insert(
            id,
            Pending {
                query,
                values,
                expected: None,
                answered: 0,
            },
        );
        let envelope = self.envelope(Body::Query { id, query, room });
        if !self.enqueue(self.all_channel(), envelope.encode(), Some(id)) {
            self.finish(
                id,
                Some(QueryError::Unavailable("the publish queue is full".into())),
            );
            return id;
        }
        let link = Arc::downgrade(self);
        let timeout = self.settings.presence_timeout;
        crate::runtime::get().spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(link) = link.upgrade() {
                link.time_out(id, timeout);
            }
        });
        id
    }

    fn finish(&self, id: u64, error: Option<QueryError>) {
        let Some(mut pending) = self.pending.lock().remove(&id) else {
            return;
        };
        let answer = match error {
            Some(why) => Err(why),
            None => {
                pending.values.sort_unstable();
                Ok(pending.values)
            }
        };
        self.notices.push(Notice::Answer(id, answer));
    }

    fn time_out(&self, id: u64, timeout: Duration) {
        let why = {
            let pending = self.pending.lock();
            let Some(p) = pending.get(&id) else { return };
            match p.expected {
                Some(expected) => format!(
                    "{} of {expected} other processes answered within {:.3} s",
                    p.answered,
                    timeout.as_secs_f64()
                ),
                None => format!(
                    "the query was not published within {:.3} s",
                    timeout.as_secs_f64()
                ),
            }
        };
        self.finish(id, Some(QueryError::Timeout(why)));
    }

    /// PUBLISH said how many subscribers got query `id`; one of them is this process.
    fn query_published(&self, id: u64, receivers: u64) {
        let done = {
            let mut pending = self.pending.lock();
            let Some(p) = pending.get_mut(&id) else {
                return;
            };
            let expected = receivers.saturating_sub(1);
            p.expected = Some(expected);
            p.answered >= expected
        };
        if done {
            self.finish(id, None);
        }
    }

    fn collect(&self, id: u64, values: Vec<u64>) {
        let done = {
            let mut pending = self.pending.lock();
            let Some(p) = pending.get_mut(&id) else {
                return;
            };
            match p.query {
                Query::Count => {
                    let add = values.first().copied().unwrap_or(0);
                    match p.values.first_mut() {
                        Some(total) => *total += add,
                        None => p.values.push(add),
                    }
                }
                Query::Members => p.values.extend(values),
            }
            p.answered += 1;
            p.expected.is_some_and(|expected| p.answered >= expected)
        };
        if done {
            self.finish(id, None);
        }
    }

    // ---- the connection ----

    async fn run(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
        let mut backoff = BACKOFF_START;
        let mut ever_connected = false;
        let mut outage_logged = false;
        loop {
            match self.connect().await {
                Ok((publisher, subscriber)) => {
                    let (ready, reason) = self
                        .serve(publisher, subscriber, &mut queue, ever_connected)
                        .await;
                    self.state.store(State::Down as u8, Ordering::Release);
                    if ready {
                        ever_connected = true;
                        outage_logged = false;
                        backoff = BACKOFF_START;
                    }
                    self.log(
                        LOG_WARNING,
                        format!(
                            "broadcast backend {} lost ({reason}); local delivery goes on, \
                             reconnecting",
                            self.address
                        ),
                    );
                }
                Err(error) => {
                    self.state.store(State::Down as u8, Ordering::Release);
                    let level = if outage_logged { LOG_DEBUG } else { LOG_ERROR };
                    self.log(
                        level,
                        format!(
                            "broadcast_backend {} is unreachable ({error}); local delivery \
                             goes on, retrying with backoff up to {} s",
                            self.address,
                            BACKOFF_MAX.as_secs()
                        ),
                    );
                    outage_logged = true;
                }
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, PubSub), String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let publisher = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let subscriber = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "no answer within 3 s".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok((publisher, subscriber))
    }

    /// The session is subscribed: say so (and, after an outage, tell the manager).
    fn announce(&self, reconnect: bool) {
        self.state.store(State::Connected as u8, Ordering::Release);
        if reconnect {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            self.log(
                LOG_INFO,
                format!("broadcast backend {} reconnected", self.address),
            );
            self.notices.push(Notice::Reconnected);
        } else {
            self.log(
                LOG_INFO,
                format!(
                    "broadcast backend {} connected (manager {:?})",
                    self.address, self.settings.name
                ),
            );
        }
    }

    /// One connected session. It counts as connected (and is announced) once its tags
    /// are claimed and its channels subscribed; returns whether it got that far, and why
    /// it ended.
    async fn serve(
        &self,
        mut publisher: MultiplexedConnection,
        subscriber: PubSub,
        queue: &mut mpsc::UnboundedReceiver<Outgoing>,
        reconnect: bool,
    ) -> (bool, String) {
        let (mut sink, mut stream) = subscriber.split();
        let mut subscribed = HashSet::new();
        let mut in_flight = Vec::new();
        let mut ready = false;
        let reason = async {
            let _: bool = self.claim_tags(&mut publisher).await?;
            self.reconcile(&mut sink, &mut subscribed).await?;
            self.announce(reconnect);
            ready = true;
            let mut claims = publisher.clone();
            let publishing = self.publish_loop(&mut publisher, queue, &mut in_flight);
            tokio::pin!(publishing);
            let mut ping = tokio::time::interval(PING_EVERY);
            let mut renew = tokio::time::interval(CLAIM_RENEW);
            loop {
                // While the local fan-out is over its backlog limit (members waited for,
                // see `slow.rs`), stop reading: Redis holds what follows, within its own
                // limits. Publishing and pings go on.
                let behind = self.local().is_some_and(|local| local.backlog_full());
                tokio::select! {
                    reason = &mut publishing => return Err::<(), String>(reason),
                    () = tokio::time::sleep(KEEP_UP_POLL), if behind => {}
                    message = stream.next(), if !behind => match message {
                        Some(message) => self.receive(&message),
                        None => return Err("the subscription connection closed".to_owned()),
                    },
                    () = self.rooms_changed.notified() => {
                        self.reconcile(&mut sink, &mut subscribed).await?;
                    }
                    _ = ping.tick() => {
                        match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(format!("PING failed: {e}")),
                            Err(_) => return Err("no answer to PING within 2 s".to_owned()),
                        }
                        self.reconcile(&mut sink, &mut subscribed).await?;
                    }
                    _ = renew.tick() => {
                        if self.claim_tags(&mut claims).await? {
                            self.reconcile(&mut sink, &mut subscribed).await?;
                        }
                    }
                }
            }
        }
        .await
        .err()
        .unwrap_or_default();
        // A batch cut off mid-pipeline is lost: count it.
        self.discard(&mut in_flight);
        (ready, reason)
    }

    /// Claim this process's node tags in Redis; when the newest is held by another
    /// process, new ids move to a fresh tag. True when the tags changed. A server that
    /// refuses the keys (ACLs, a cluster node redirecting) only loses the collision check.
    async fn claim_tags(&self, conn: &mut MultiplexedConnection) -> Result<bool, String> {
        let mut changed = false;
        let mut pending = node::tags();
        while let Some(tag) = pending.pop() {
            let ours = match self.claim(conn, tag).await {
                Ok(ours) => ours,
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    return Err(format!("claiming node tag {tag} failed: {e}"));
                }
                Err(e) => {
                    if !self.claims_refused.swap(true, Ordering::Relaxed) {
                        let why = format!("node tags are not checked for collisions: {e}");
                        self.log(LOG_WARNING, why);
                    }
                    return Ok(changed);
                }
            };
            if !ours && node::tag() == tag {
                let fresh = node::abandon(tag);
                self.origin_tag.store(fresh, Ordering::Relaxed);
                self.log(
                    LOG_WARNING,
                    format!("node tag {tag} is held by another process; new ids use {fresh}"),
                );
                pending.push(fresh);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Claim or renew one tag; false when another process holds it.
    async fn claim(&self, conn: &mut MultiplexedConnection, tag: u32) -> redis::RedisResult<bool> {
        let key = self.claim_key(tag);
        let instance = node::instance().to_string();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&instance)
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_TTL_SECONDS)
            .query_async(conn)
            .await?;
        if claimed.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        if holder.as_deref() != Some(instance.as_str()) {
            return Ok(false);
        }
        let _: () = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(CLAIM_TTL_SECONDS)
            .query_async(conn)
            .await?;
        Ok(true)
    }

    /// Subscribe to what should be and unsubscribe from rooms released long enough ago.
    async fn reconcile(
        &self,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<String>,
    ) -> Result<(), String> {
        let mut wanted: HashSet<String> = node::tags()
            .into_iter()
            .map(|tag| self.node_channel(tag))
            .collect();
        wanted.insert(self.all_channel());
        {
            let mut rooms = self.rooms.lock();
            rooms
                .released
                .retain(|_, since| since.elapsed() < ROOM_LINGER);
            for room in rooms.wanted.iter().chain(rooms.released.keys()) {
                wanted.insert(self.room_channel(room));
            }
        }
        let subscribe: Vec<&String> = wanted.difference(subscribed).collect();
        if !subscribe.is_empty() {
            sink.subscribe(&subscribe)
                .await
                .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
        }
        let unsubscribe: Vec<&String> = subscribed.difference(&wanted).collect();
        if !unsubscribe.is_empty() {
            sink.unsubscribe(&unsubscribe)
                .await
                .map_err(|e| format!("UNSUBSCRIBE failed: {e}"))?;
        }
        *subscribed = wanted;
        Ok(())
    }

    async fn publish_loop(
        &self,
        conn: &mut MultiplexedConnection,
        queue: &mut mpsc::UnboundedReceiver<Outgoing>,
        batch: &mut Vec<Outgoing>,
    ) -> String {
        loop {
            let Some(first) = queue.recv().await else {
                return "the publish queue closed".to_owned();
            };
            let mut bytes = first.data.len();
            batch.push(first);
            while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.data.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for message in batch.iter() {
                pipe.cmd("PUBLISH")
                    .arg(&message.channel)
                    .arg(&message.data[..]);
            }
            let receivers: Vec<u64> = match pipe.query_async(conn).await {
                Ok(receivers) => receivers,
                Err(error) => return format!("PUBLISH failed: {error}"),
            };
            self.counters
                .published
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (message, receivers) in batch.drain(..).zip(receivers) {
                self.queued_bytes
                    .fetch_sub(message.data.len() + message.channel.len(), Ordering::AcqRel);
                if let Some(id) = message.query {
                    self.query_published(id, receivers);
                }
            }
        }
    }

    fn discard(&self, batch: &mut Vec<Outgoing>) {
        for message in batch.drain(..) {
            self.queued_bytes
                .fetch_sub(message.data.len() + message.channel.len(), Ordering::AcqRel);
            self.counters
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
            if let Some(id) = message.query {
                let why = "the connection to Redis was lost".to_owned();
                self.finish(id, Some(QueryError::Unavailable(why)));
            }
        }
    }

    fn receive(&self, message: &Msg) {
        let envelope = match Envelope::decode(message.get_payload_bytes()) {
            Ok(envelope) => envelope,
            Err(Malformed(why)) => return self.malformed(message.get_channel_name(), why),
        };
        if Some(&envelope.origin_instance) == self.instance.get() {
            return; // our own message, already delivered here
        }
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let Some(local) = self.local() else {
            return;
        };
        match envelope.body {
            Body::Message {
                target,
                exclude,
                binary,
                payload,
            } => {
                let frame = if binary {
                    OutFrame::binary(payload)
                } else if std::str::from_utf8(&payload).is_ok() {
                    OutFrame::text(payload)
                } else {
                    return self.malformed(message.get_channel_name(), "text is not UTF-8");
                };
                local.deliver_remote(frame, &target, exclude);
            }
            Body::Query { id, query, room } => {
                let reply = self.envelope(Body::Reply {
                    id,
                    values: local.answer(query, room.as_deref()),
                });
                self.enqueue(self.node_channel(envelope.origin_tag), reply.encode(), None);
            }
            Body::Reply { id, values } => self.collect(id, values),
        }
    }

    fn malformed(&self, channel: &str, why: &str) {
        if self.counters.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
            self.log(
                LOG_WARNING,
                format!("ignoring a malformed message on {channel}: {why}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact("redis://user:s3cret@db:6379/2"),
            "redis://user:***@db:6379/2"
        );
        assert_eq!(redact("rediss://:s3cret@db"), "rediss://:***@db");
        assert_eq!(redact("redis://db:6379/0"), "redis://db:6379/0");
        assert_eq!(redact("redis://user@db"), "redis://user@db");
    }

    fn settings(url: &str) -> Settings {
        Settings {
            url: url.to_owned(),
            channel_prefix: "ferrosock".into(),
            name: "default".into(),
            publish_limit: 1024,
            presence_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn malformed_urls_are_refused_at_once() {
        assert!(Link::new(settings("redis://127.0.0.1:6379/0")).is_ok());
        assert!(Link::new(settings("rediss://u:p@127.0.0.1/1")).is_ok());
        let error = Link::new(settings("http://u:p@127.0.0.1/")).err().unwrap();
        assert!(error.contains("u:***@") && !error.contains(":p@"));
        assert!(Link::new(settings("redis://127.0.0.1:notaport")).is_err());
    }

    #[test]
    fn the_publish_queue_is_bounded_in_bytes() {
        let link = Link::new(settings("redis://127.0.0.1:1")).unwrap();
        let frame = OutFrame::text(Bytes::from(vec![b'x'; 300]));
        for _ in 0..10 {
            link.publish(&Target::All, None, &frame);
        }
        assert!(link.queued_bytes() <= 1024);
        // Each one counts 323 bytes of envelope and 21 of channel name: two fit.
        assert_eq!(link.queued_bytes(), 2 * 344);
        assert_eq!(link.counters.publish_dropped.load(Ordering::Relaxed), 8);
    }
}
