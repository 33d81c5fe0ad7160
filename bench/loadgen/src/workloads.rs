//! The four workloads. Each opens its connections first, then runs a warm-up, a
//! measured window (with /proc read at both edges) and a drain in which nothing new is
//! sent and everything in flight must still arrive, in order, before the connections
//! are closed with a closing handshake.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::{spawn_local, JoinHandle};
use tokio::time::{sleep, sleep_until, timeout_at};

use crate::conn::{Conn, Target};
use crate::frame::{Event, MessageCheck, Template};
use crate::histogram::Histogram;
use crate::procstat;
use crate::report::Report;
use crate::{Options, Workload};

const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections being opened at once while a workload sets up.
const OPEN_CONCURRENCY: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

/// What every connection task of a run shares (one thread: plain cells).
struct Shared {
    phase: Cell<Phase>,
    ops: Cell<u64>,
    sent: Cell<u64>,
    received: Cell<u64>,
    latency: RefCell<Histogram>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            phase: Cell::new(Phase::Warmup),
            ops: Cell::new(0),
            sent: Cell::new(0),
            received: Cell::new(0),
            latency: RefCell::new(Histogram::default()),
        })
    }

    fn measuring(&self) -> bool {
        self.phase.get() == Phase::Measure
    }

    /// Counts one completed operation that took `latency` (if inside the window).
    fn complete(&self, latency: Duration) {
        if self.measuring() {
            self.ops.set(self.ops.get() + 1);
            self.latency.borrow_mut().record(latency.as_nanos() as u64);
        }
    }

    fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

pub async fn run(options: &Options) -> Report {
    match options.workload {
        Workload::Echo => echo(options).await,
        Workload::Broadcast => broadcast(options).await,
        Workload::Handshake => handshake(options).await,
        Workload::Idle => idle(options).await,
    }
}

/// Opens `count` connections, `OPEN_CONCURRENCY` at a time, each followed by `then`.
async fn open_all<F, Fut>(target: &Target, count: usize, report: &mut Report, then: F) -> Vec<Conn>
where
    F: Fn(Conn, usize) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Result<Conn, String>> + 'static,
{
    let started = Instant::now();
    let permits = Rc::new(Semaphore::new(OPEN_CONCURRENCY));
    let handles: Vec<JoinHandle<Result<Conn, String>>> = (0..count)
        .map(|index| {
            let (target, permits, then) = (target.clone(), permits.clone(), then.clone());
            spawn_local(async move {
                let _permit = permits.acquire().await.expect("semaphore is never closed");
                let conn = Conn::open(&target, index).await?;
                then(conn, index).await
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(count);
    let mut failures = 0;
    for handle in handles {
        match handle.await {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(error)) => {
                failures += 1;
                report.error(format!("opening a connection: {error}"));
            }
            Err(error) => report.error(format!("opening a connection: {error}")),
        }
    }
    if failures > 0 {
        report.error(format!(
            "{failures} of {count} connections could not be opened"
        ));
    }
    report.connect_seconds = started.elapsed().as_secs_f64();
    report.connections = conns.len();
    conns
}

async fn no_check(conn: Conn, _index: usize) -> Result<Conn, String> {
    Ok(conn)
}

/// Warm-up, then the measured window with /proc read at both edges.
async fn measure_window(shared: &Shared, options: &Options, report: &mut Report) {
    sleep(options.warmup).await;
    report.start = procstat::sample(&options.server_pids, options.broker_pid);
    let cpu_before = procstat::self_cpu_micros();
    let started = Instant::now();
    shared.phase.set(Phase::Measure);
    sleep(options.duration).await;
    shared.phase.set(Phase::Drain);
    report.window_seconds = started.elapsed().as_secs_f64();
    report.loadgen_cpu_micros = procstat::self_cpu_micros().saturating_sub(cpu_before);
    report.end = procstat::sample(&options.server_pids, options.broker_pid);
}

/// Waits for connection tasks that end in a closing handshake (true when clean).
async fn collect(handles: Vec<JoinHandle<Result<bool, String>>>, report: &mut Report, what: &str) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut stuck = 0;
    for handle in handles {
        match timeout_at(deadline, handle).await {
            Ok(Ok(Ok(clean))) => report.closed_clean += clean as usize,
            Ok(Ok(Err(error))) => report.error(format!("{what}: {error}")),
            Ok(Err(error)) => report.error(format!("{what}: task failed: {error}")),
            Err(_) => stuck += 1,
        }
    }
    if stuck > 0 {
        report.error(format!(
            "{stuck} {what} connections still had messages in flight after {DRAIN_TIMEOUT:?}"
        ));
    }
}

fn finish_counts(shared: &Shared, report: &mut Report) {
    report.ops = shared.ops.get();
    report.sent = shared.sent.get();
    report.received = shared.received.get();
    report.latency = std::mem::take(&mut *shared.latency.borrow_mut());
}

// ---------------------------------------------------------------- echo

async fn echo(options: &Options) -> Report {
    let mut report = Report::default();
    let conns = open_all(&options.target, options.conns, &mut report, no_check).await;
    if !report.errors.is_empty() {
        return report;
    }
    let shared = Shared::new();
    let template = Rc::new(Template::new(options.size));
    let handles = conns
        .into_iter()
        .map(|conn| {
            spawn_local(echo_conn(
                conn,
                shared.clone(),
                template.clone(),
                options.inflight,
            ))
        })
        .collect();
    measure_window(&shared, options, &mut report).await;
    collect(handles, &mut report, "echo").await;
    finish_counts(&shared, &mut report);
    report
}

/// Keeps `inflight` messages outstanding; each echo must carry the next sequence
/// number and the exact content, and is answered with a new message until the drain.
async fn echo_conn(
    mut conn: Conn,
    shared: Rc<Shared>,
    template: Rc<Template>,
    inflight: usize,
) -> Result<bool, String> {
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let mut next_send = 0u64;
    let mut next_receive = 0u64;
    let mut check = MessageCheck::default();
    let now = Instant::now();
    for _ in 0..inflight {
        template.push(&mut conn.out, next_send);
        next_send += 1;
        sent_at.push_back(now);
    }
    Shared::add(&shared.sent, inflight as u64);
    conn.flush().await?;

    while !sent_at.is_empty() {
        let mut answered = 0u64;
        let mut now: Option<Instant> = None;
        let mut on_event = |event: Event<'_>| -> Result<(), String> {
            match event {
                Event::Data { offset, bytes } => check.data(&template, offset, bytes),
                Event::MessageEnd { opcode, len } => {
                    let seq = check.finish(&template, opcode, len)?;
                    if seq != next_receive {
                        return Err(format!(
                            "echo out of order: expected message {next_receive}, got {seq}"
                        ));
                    }
                    next_receive += 1;
                    let sent = sent_at
                        .pop_front()
                        .ok_or("an echo of a message never sent")?;
                    shared.complete(now.get_or_insert_with(Instant::now).duration_since(sent));
                    answered += 1;
                }
                Event::Close => return Err("server closed the connection".into()),
                Event::Ping(_) => {}
            }
            Ok(())
        };
        if !conn.read_events(&mut on_event).await? {
            return Err(format!(
                "server ended the stream with {} messages in flight",
                sent_at.len()
            ));
        }
        Shared::add(&shared.received, answered);
        if shared.phase.get() != Phase::Drain && answered > 0 {
            let now = Instant::now();
            for _ in 0..answered {
                template.push(&mut conn.out, next_send);
                next_send += 1;
                sent_at.push_back(now);
            }
            Shared::add(&shared.sent, answered);
        }
        conn.flush().await?;
    }
    Ok(conn.close(CLOSE_TIMEOUT).await)
}

// ---------------------------------------------------------------- broadcast

/// Sequence numbers at and above this are probes, sent before the measured stream.
const PROBE_BASE: u64 = 1 << 63;
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Delivery bookkeeping for one sender and `subscribers` receivers (the sender is one).
struct Fanout {
    subscribers: usize,
    window: usize,
    burst: usize,
    sent_at: RefCell<Vec<Instant>>,
    /// Deliveries still owed for each message from `completed` on.
    owed: RefCell<VecDeque<u32>>,
    completed: Cell<u64>,
    sent: Cell<u64>,
    wake_sender: Notify,
    /// Until every subscriber has received one probe, members may still be joining.
    syncing: Cell<bool>,
    probe: Cell<u64>,
    probe_acks: Cell<usize>,
    synced: Notify,
    /// Latency at the members connected to another server than the sender's.
    far_latency: RefCell<Histogram>,
}

impl Fanout {
    fn delivered(&self, seq: u64) {
        let mut owed = self.owed.borrow_mut();
        let at = (seq - self.completed.get()) as usize;
        owed[at] -= 1;
        let mut woke = false;
        while owed.front() == Some(&0) {
            owed.pop_front();
            self.completed.set(self.completed.get() + 1);
            woke = true;
        }
        if woke {
            self.wake_sender.notify_one();
        }
    }

    /// The sender's turn: probe until every subscriber is in, then keep up to `window`
    /// messages in flight until the drain, written `burst` or more at a time.
    fn send_more(
        &self,
        out: &mut Vec<u8>,
        template: &Template,
        shared: &Shared,
        next_probe: &mut Instant,
    ) -> Result<(), String> {
        let now = Instant::now();
        if self.syncing.get() {
            if self.probe_acks.get() == self.subscribers {
                self.syncing.set(false);
                self.synced.notify_one();
            } else {
                if now >= *next_probe {
                    let probe = if self.probe.get() < PROBE_BASE {
                        PROBE_BASE
                    } else {
                        self.probe.get() + 1
                    };
                    self.probe.set(probe);
                    self.probe_acks.set(0);
                    template.push(out, self.probe.get());
                    *next_probe = now + PROBE_INTERVAL;
                }
                return Ok(());
            }
        }
        if shared.phase.get() == Phase::Drain {
            return Ok(());
        }
        // Refill only once a whole burst fits, so messages reach the server in bursts.
        let in_flight = self.sent.get() - self.completed.get();
        if in_flight + self.burst as u64 > self.window as u64 {
            return Ok(());
        }
        let mut sent_at = self.sent_at.borrow_mut();
        let mut owed = self.owed.borrow_mut();
        let before = self.sent.get();
        while (self.sent.get() - self.completed.get()) < self.window as u64 {
            template.push(out, self.sent.get());
            sent_at.push(now);
            owed.push_back(self.subscribers as u32);
            self.sent.set(self.sent.get() + 1);
        }
        Shared::add(&shared.sent, self.sent.get() - before);
        Ok(())
    }
}

struct Subscriber {
    check: MessageCheck,
    next_seq: u64,
    /// Connected to another server process than the sender (reached through the broker).
    far: bool,
}

impl Subscriber {
    fn on_event(
        &mut self,
        event: Event<'_>,
        template: &Template,
        fanout: &Fanout,
        shared: &Shared,
        now: &mut Option<Instant>,
    ) -> Result<(), String> {
        match event {
            Event::Data { offset, bytes } => self.check.data(template, offset, bytes),
            Event::MessageEnd { opcode, len } => {
                let seq = self.check.finish(template, opcode, len)?;
                if seq >= PROBE_BASE {
                    if self.next_seq > 0 || !fanout.syncing.get() {
                        return Err(format!(
                            "a probe ({}) arrived after the measured stream began",
                            seq - PROBE_BASE
                        ));
                    }
                    if seq == fanout.probe.get() {
                        fanout.probe_acks.set(fanout.probe_acks.get() + 1);
                        if fanout.probe_acks.get() == fanout.subscribers {
                            fanout.wake_sender.notify_one();
                        }
                    }
                    return Ok(());
                }
                if seq != self.next_seq {
                    return Err(format!(
                        "broadcast out of order or lost: expected message {}, got {seq}",
                        self.next_seq
                    ));
                }
                self.next_seq += 1;
                let sent = fanout.sent_at.borrow()[seq as usize];
                let latency = now.get_or_insert_with(Instant::now).duration_since(sent);
                shared.complete(latency);
                if self.far && shared.measuring() {
                    let nanos = latency.as_nanos() as u64;
                    fanout.far_latency.borrow_mut().record(nanos);
                }
                Shared::add(&shared.received, 1);
                fanout.delivered(seq);
            }
            Event::Close => return Err("server closed the connection".into()),
            Event::Ping(_) => {}
        }
        Ok(())
    }
}

async fn broadcast(options: &Options) -> Report {
    let mut report = Report::default();
    let conns = open_all(&options.target, options.conns, &mut report, no_check).await;
    if !report.errors.is_empty() {
        return report;
    }
    let shared = Shared::new();
    let template = Rc::new(Template::new(options.size));
    let fanout = Rc::new(Fanout {
        subscribers: conns.len(),
        window: options.window,
        burst: options.burst,
        sent_at: RefCell::new(Vec::with_capacity(1 << 16)),
        owed: RefCell::new(VecDeque::new()),
        completed: Cell::new(0),
        sent: Cell::new(0),
        wake_sender: Notify::new(),
        syncing: Cell::new(true),
        probe: Cell::new(0),
        probe_acks: Cell::new(0),
        synced: Notify::new(),
        far_latency: RefCell::new(Histogram::default()),
    });
    let (finish, finished) = watch::channel(false);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(index, conn)| {
            let far = options.target.server_of(index) != options.target.server_of(0);
            let task = broadcast_conn(
                conn,
                index == 0,
                far,
                fanout.clone(),
                shared.clone(),
                template.clone(),
                finished.clone(),
            );
            spawn_local(task)
        })
        .collect();

    let sync_deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    if timeout_at(sync_deadline, fanout.synced.notified())
        .await
        .is_err()
    {
        report.error(format!("not every subscriber received a probe within {SYNC_TIMEOUT:?}: the server does not broadcast to all"));
        return report;
    }
    measure_window(&shared, options, &mut report).await;

    // Drain: wait until every message sent has reached every subscriber.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    fanout.wake_sender.notify_one();
    while fanout.completed.get() < fanout.sent.get() && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    let missing = fanout.sent.get() - fanout.completed.get();
    if missing > 0 {
        report.error(format!(
            "{missing} messages never reached every subscriber within {DRAIN_TIMEOUT:?}"
        ));
    }
    let _ = finish.send(true);
    collect(handles, &mut report, "broadcast").await;
    finish_counts(&shared, &mut report);
    if options.target.addresses.len() > 1 {
        report.latency_far = Some(std::mem::take(&mut *fanout.far_latency.borrow_mut()));
    }
    report
}

async fn broadcast_conn(
    mut conn: Conn,
    is_sender: bool,
    far: bool,
    fanout: Rc<Fanout>,
    shared: Rc<Shared>,
    template: Rc<Template>,
    mut finished: watch::Receiver<bool>,
) -> Result<bool, String> {
    let mut subscriber = Subscriber {
        check: MessageCheck::default(),
        next_seq: 0,
        far,
    };
    let mut next_probe = Instant::now();
    while !*finished.borrow() {
        if is_sender {
            fanout.send_more(&mut conn.out, &template, &shared, &mut next_probe)?;
        }
        conn.flush().await?;
        let probe_due = tokio::time::Instant::from_std(next_probe);
        let mut now = None;
        let mut on_event =
            |event: Event<'_>| subscriber.on_event(event, &template, &fanout, &shared, &mut now);
        tokio::select! {
            open = conn.read_events(&mut on_event) => {
                if !open? {
                    return Err("server ended the stream".into());
                }
            }
            _ = fanout.wake_sender.notified(), if is_sender => {}
            _ = sleep_until(probe_due), if is_sender && fanout.syncing.get() => {}
            _ = finished.changed() => {}
        }
    }
    if subscriber.next_seq != fanout.sent.get() {
        return Err(format!(
            "a subscriber received {} of {} messages",
            subscriber.next_seq,
            fanout.sent.get()
        ));
    }
    Ok(conn.close(CLOSE_TIMEOUT).await)
}

// ---------------------------------------------------------------- handshake

async fn handshake(options: &Options) -> Report {
    let mut report = Report::default();
    let shared = Shared::new();
    let failures = Rc::new(RefCell::new(Vec::<String>::new()));
    let clean = Rc::new(Cell::new(0usize));
    let handles: Vec<_> = (0..options.concurrency)
        .map(|worker| {
            let (target, shared, failures, clean) = (
                options.target.clone(),
                shared.clone(),
                failures.clone(),
                clean.clone(),
            );
            let stride = options.concurrency;
            spawn_local(async move {
                let mut index = worker;
                while shared.phase.get() != Phase::Drain {
                    let started = Instant::now();
                    match Conn::open(&target, index).await {
                        Ok(conn) => {
                            let latency = started.elapsed();
                            clean.set(clean.get() + conn.close(CLOSE_TIMEOUT).await as usize);
                            shared.complete(latency);
                            Shared::add(&shared.received, 1);
                        }
                        Err(error) => {
                            failures.borrow_mut().push(error);
                            // Keep going, but do not spin on a server that refuses.
                            sleep(Duration::from_millis(10)).await;
                        }
                    }
                    index += stride;
                }
            })
        })
        .collect();
    measure_window(&shared, options, &mut report).await;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    for handle in handles {
        if timeout_at(deadline, handle).await.is_err() {
            report.error("a handshake did not finish during the drain".into());
        }
    }
    let failures = failures.borrow();
    if !failures.is_empty() {
        report.error(format!(
            "{} handshakes failed; first: {}",
            failures.len(),
            failures[0]
        ));
    }
    finish_counts(&shared, &mut report);
    report.connections = report.received as usize;
    report.closed_clean = clean.get();
    report
}

// ---------------------------------------------------------------- idle

/// Sends one message and waits for its echo, so the server's handler is known to be
/// running and back in `receive_text` when the connection is counted.
async fn echo_once(mut conn: Conn, template: Rc<Template>) -> Result<Conn, String> {
    template.push(&mut conn.out, 0);
    conn.flush().await?;
    let mut check = MessageCheck::default();
    let mut done = false;
    while !done {
        let mut on_event = |event: Event<'_>| -> Result<(), String> {
            match event {
                Event::Data { offset, bytes } => check.data(&template, offset, bytes),
                Event::MessageEnd { opcode, len } => {
                    check.finish(&template, opcode, len)?;
                    done = true;
                }
                Event::Close => return Err("server closed the connection".into()),
                Event::Ping(_) => {}
            }
            Ok(())
        };
        if !conn.read_events(&mut on_event).await? {
            return Err("server ended the stream before echoing".into());
        }
        conn.flush().await?;
    }
    Ok(conn)
}

async fn idle(options: &Options) -> Report {
    let mut report = Report::default();
    let template = Rc::new(Template::new(options.size));
    let conns = open_all(
        &options.target,
        options.conns,
        &mut report,
        move |conn, _| echo_once(conn, template.clone()),
    )
    .await;
    report.start = procstat::sample(&options.server_pids, options.broker_pid);
    println!("READY {}", conns.len());
    let _ = std::io::stdout().flush();

    let (finish, finished) = watch::channel(false);
    let handles: Vec<JoinHandle<Result<bool, String>>> = conns
        .into_iter()
        .map(|mut conn| {
            let mut finished = finished.clone();
            spawn_local(async move {
                // Hold the connection: answer pings, expect nothing else.
                loop {
                    let mut on_event = |event: Event<'_>| match event {
                        Event::Close => Err("server closed an idle connection".to_string()),
                        Event::Data { .. } | Event::MessageEnd { .. } => {
                            Err("unexpected message on an idle connection".to_string())
                        }
                        Event::Ping(_) => Ok(()),
                    };
                    tokio::select! {
                        open = conn.read_events(&mut on_event) => {
                            if !open? {
                                return Err("server ended an idle connection".into());
                            }
                            conn.flush().await?;
                        }
                        _ = finished.changed() => break,
                    }
                }
                Ok(conn.close(CLOSE_TIMEOUT).await)
            })
        })
        .collect();

    // Hold until the runner closes our standard input, or the hold time runs out.
    let started = Instant::now();
    let hold = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(options.hold, hold).await;
    report.window_seconds = started.elapsed().as_secs_f64();
    report.end = procstat::sample(&options.server_pids, options.broker_pid);
    let _ = finish.send(true);
    collect(handles, &mut report, "idle").await;
    report.ops = report.connections as u64;
    report
}
