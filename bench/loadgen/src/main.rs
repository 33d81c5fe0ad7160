//! The benchmark's load generator. One current-thread tokio runtime (pin it with
//! `taskset`), pre-built masked frames, a streaming frame parser; every message carries a
//! sequence number, so counts and order are checked, not assumed.
//!
//! ```text
//! loadgen echo      --port P [--conns 100] [--size 64] [--inflight 1]
//! loadgen broadcast --port P[,P2..] [--conns 100] [--size 64] [--window 8] [--burst 4]  (path /chat)
//! loadgen handshake --port P [--concurrency 8]
//! loadgen idle      --port P [--conns 1000] [--hold 60]
//! loadgen calibrate                        (how fast this CPU is right now)
//! common: [--host 127.0.0.1] [--path /echo] [--warmup 1] [--duration 3]
//!         [--server-pid PID[,PID2..]] [--broker-pid PID] [--sources 127.0.0.2-127.0.0.9]
//! ```
//!
//! Several ports are several server processes sharing a broker: connection `i` goes to
//! the `i % n`-th, so the broadcast sender (connection 0) is on the first, and latency is
//! also reported for the members on the others (`latency_far_us`). The server's CPU is
//! the sum of every `--server-pid` tree; the broker's (`--broker-pid`) is kept apart.
//!
//! It prints one JSON object on stdout (the runner's input) and exits 0 when every
//! count and order check passed, 1 when one failed, 2 on bad arguments.
//! `idle` prints `READY <n>` once all connections are open and each has had one
//! message echoed, then holds them until its standard input closes (or `--hold` runs out).

mod calibrate;
mod conn;
mod frame;
mod histogram;
mod procstat;
mod report;
mod workloads;

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use conn::Target;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    Echo,
    Broadcast,
    Handshake,
    Idle,
}

impl Workload {
    fn parse(name: &str) -> Option<Workload> {
        Some(match name {
            "echo" => Workload::Echo,
            "broadcast" => Workload::Broadcast,
            "handshake" => Workload::Handshake,
            "idle" => Workload::Idle,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Broadcast => "broadcast",
            Workload::Handshake => "handshake",
            Workload::Idle => "idle",
        }
    }
}

pub struct Options {
    pub workload: Workload,
    pub target: Target,
    pub conns: usize,
    pub size: usize,
    pub inflight: usize,
    pub window: usize,
    pub burst: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub hold: Duration,
    pub server_pids: Vec<u32>,
    pub broker_pid: Option<u32>,
}

fn usage(problem: &str) -> ! {
    eprintln!("loadgen: {problem}");
    eprintln!(
        "usage: loadgen <echo|broadcast|handshake|idle> --port P [--host H] [--path /echo] \
         [--conns N] [--size BYTES] [--inflight K] [--window W] [--burst B] [--concurrency C] \
         [--warmup S] [--duration S] [--hold S] [--server-pid PID[,PID..]] [--broker-pid PID] \
         [--sources A-B|A,B,..]"
    );
    std::process::exit(2);
}

/// `127.0.0.2-127.0.0.9` or `127.0.0.2,127.0.0.3`; loopback only.
fn parse_sources(text: &str) -> Vec<Ipv4Addr> {
    let parse = |s: &str| -> Ipv4Addr {
        let address: Ipv4Addr = s
            .trim()
            .parse()
            .unwrap_or_else(|_| usage(&format!("bad address {s}")));
        if !address.is_loopback() {
            usage(&format!("{address} is not a loopback address"));
        }
        address
    };
    let mut sources = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (u32::from(parse(first)), u32::from(parse(last)));
                if last < first || last - first > 4096 {
                    usage("bad source range");
                }
                sources.extend((first..=last).map(Ipv4Addr::from));
            }
            None => sources.push(parse(part)),
        }
    }
    sources
}

/// `8000` or `8000,8001`: a comma-separated list of numbers.
fn numbers<T: std::str::FromStr>(text: &str) -> Vec<T> {
    text.split(',')
        .map(|part| {
            part.trim()
                .parse()
                .unwrap_or_else(|_| usage(&format!("bad number {part}")))
        })
        .collect()
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let workload = args
        .next()
        .and_then(|name| Workload::parse(&name))
        .unwrap_or_else(|| usage("first argument must be the workload"));
    let mut host = "127.0.0.1".to_string();
    let mut ports: Vec<u16> = Vec::new();
    let mut path = if workload == Workload::Broadcast {
        "/chat"
    } else {
        "/echo"
    }
    .to_string();
    let mut sources = Vec::new();
    let mut options = Options {
        workload,
        target: Target {
            addresses: Vec::new(),
            path: String::new(),
            sources: Vec::new(),
            read_buffer: 0,
        },
        conns: if workload == Workload::Idle {
            1000
        } else {
            100
        },
        size: 64,
        inflight: 1,
        window: 8,
        burst: 0,
        concurrency: 8,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        hold: Duration::from_secs(60),
        server_pids: Vec::new(),
        broker_pid: None,
    };
    let seconds = |text: String| -> Duration {
        let value: f64 = text
            .parse()
            .unwrap_or_else(|_| usage(&format!("bad duration {text}")));
        if !(0.0..=3600.0).contains(&value) {
            usage("durations are bounded to an hour");
        }
        Duration::from_secs_f64(value)
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let mut number = || -> usize {
            let text = value();
            text.parse()
                .unwrap_or_else(|_| usage(&format!("bad number {text}")))
        };
        match flag.as_str() {
            "--host" => host = value(),
            "--port" => ports = numbers(&value()),
            "--path" => path = value(),
            "--sources" => sources = parse_sources(&value()),
            "--conns" => options.conns = number(),
            "--size" => options.size = number(),
            "--inflight" => options.inflight = number(),
            "--window" => options.window = number(),
            "--burst" => options.burst = number(),
            "--concurrency" => options.concurrency = number(),
            "--server-pid" => options.server_pids = numbers(&value()),
            "--broker-pid" => options.broker_pid = Some(number() as u32),
            "--warmup" => options.warmup = seconds(value()),
            "--duration" => options.duration = seconds(value()),
            "--hold" => options.hold = seconds(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if ports.is_empty() {
        usage("--port is required");
    }
    let addresses: Vec<SocketAddr> = ports
        .iter()
        .map(|&port| {
            (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut found| found.find(SocketAddr::is_ipv4))
                .unwrap_or_else(|| usage(&format!("cannot resolve {host}")))
        })
        .collect();
    if !addresses.iter().all(|address| address.ip().is_loopback()) {
        usage("the load generator only targets loopback addresses");
    }
    if options.size < frame::SEQ_DIGITS {
        usage(&format!("--size must be at least {}", frame::SEQ_DIGITS));
    }
    if options.conns == 0 || options.conns > 100_000 || options.inflight == 0 || options.window == 0
    {
        usage("--conns, --inflight and --window must be positive (conns at most 100000)");
    }
    options.concurrency = options.concurrency.clamp(1, 1024);
    // By default a broadcast sender writes half its window at a time.
    if options.burst == 0 {
        options.burst = (options.window / 2).max(1);
    }
    options.burst = options.burst.min(options.window);
    // A buffer that holds a few messages; small for idle connections.
    let read_buffer = match workload {
        Workload::Idle | Workload::Handshake => 512,
        _ => (options.size * 2 + 64).clamp(8 * 1024, 256 * 1024),
    };
    options.target = Target {
        addresses,
        path,
        sources,
        read_buffer,
    };
    options
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("calibrate") {
        println!("{}", calibrate::run());
        return;
    }
    let options = parse_args();
    procstat::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, workloads::run(&options));
    println!("{}", report.to_json(&options));
    if !report.errors.is_empty() {
        for error in report.errors.iter().take(10) {
            eprintln!("loadgen: {error}");
        }
        std::process::exit(1);
    }
}
