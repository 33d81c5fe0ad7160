//! CPU and memory readings from /proc, taken at the edges of the measured window:
//! the server's whole process tree (utime+stime of every process under its PID), this
//! process, and the machine's totals, so that other processes' use can be told apart.

use std::fs;

/// /proc/stat's CPU counters, in clock ticks.
#[derive(Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    fn parse(fields: &[&str]) -> CpuTimes {
        let at = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
        CpuTimes {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        }
    }

    pub fn minus(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

#[derive(Clone, Default)]
pub struct Sample {
    /// utime+stime (and that of reaped children) of the server's process tree.
    pub server_ticks: u64,
    pub server_rss_bytes: u64,
    pub server_processes: usize,
    /// utime+stime of the broker the servers share (Redis), if any: not the server's.
    pub broker_ticks: u64,
    pub self_ticks: u64,
    /// The same sum over every process on the machine: what the others used is the
    /// change in this, minus the server's and ours. A process that ends in between is
    /// still counted, through its parent's reaped-children times.
    pub all_ticks: u64,
    pub total: CpuTimes,
    pub per_cpu: Vec<CpuTimes>,
}

pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

struct ProcessStat {
    pid: u32,
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    ticks: u64,
    rss_pages: u64,
}

fn process_stat(pid: u32) -> Option<ProcessStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14) ... rss(21).
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ProcessStat {
        pid,
        ppid: number(1)? as u32,
        ticks: number(11)? + number(12)? + number(13)? + number(14)?,
        rss_pages: number(21)?,
    })
}

fn all_processes() -> Vec<ProcessStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process_stat)
        .collect()
}

/// The PID and every descendant of it.
fn tree(root: u32, processes: &[ProcessStat]) -> Vec<u32> {
    let mut tree = vec![root];
    let mut at = 0;
    while at < tree.len() {
        let parent = tree[at];
        tree.extend(processes.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        at += 1;
    }
    tree
}

/// Reads everything; `servers` are the root PIDs of the server processes' trees (the
/// server is their sum), `broker` the PID of the broker they share, if any.
pub fn sample(servers: &[u32], broker: Option<u32>) -> Sample {
    let mut result = Sample::default();
    let processes = all_processes();
    let me = std::process::id();
    let server_tree: Vec<u32> = servers
        .iter()
        .flat_map(|&root| tree(root, &processes))
        .collect();
    for process in &processes {
        result.all_ticks += process.ticks;
        if process.pid == me {
            result.self_ticks = process.ticks;
        } else if Some(process.pid) == broker {
            result.broker_ticks = process.ticks;
        } else if server_tree.contains(&process.pid) {
            result.server_ticks += process.ticks;
            result.server_rss_bytes += process.rss_pages * page_size();
            result.server_processes += 1;
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/stat") {
        for line in text.lines().filter(|line| line.starts_with("cpu")) {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or("");
            let times = CpuTimes::parse(&words.collect::<Vec<_>>());
            if name == "cpu" {
                result.total = times;
            } else {
                result.per_cpu.push(times);
            }
        }
    }
    result
}

/// CPU time this process has used, in microseconds (finer than clock ticks).
pub fn self_cpu_micros() -> u64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Raises this process's soft open-file limit to its hard limit.
pub fn raise_open_file_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        limit.rlim_cur as u64
    }
}
