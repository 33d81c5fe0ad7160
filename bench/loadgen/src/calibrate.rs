//! How fast this CPU is right now. A shared virtual machine can be slowed by its
//! neighbours in ways no /proc counter shows (a busy sibling hyperthread, a contended
//! cache, a lower clock), and that inflates every CPU-time figure taken meanwhile. The
//! runner runs this on the server's CPU around each measured window: a fixed integer
//! chain (the core's speed) and a pointer chase over 4 MiB (the caches' and memory's);
//! a window whose figures are well above the run's best is flagged. Both are timed in
//! this thread's CPU time, so sharing the CPU with another process does not count.

/// This thread's CPU time in nanoseconds: time on the CPU only, so another process
/// sharing the CPU (already counted as "others") does not read as a slow CPU.
fn thread_cpu_nanos() -> u64 {
    // SAFETY: clock_gettime writes into the struct we own.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

const SPIN_STEPS: u64 = 2_000_000;
const CHASE_BYTES: usize = 4 << 20;
const CHASE_STEPS: usize = 200_000;
const ROUNDS: usize = 5;

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn spin_ns_per_step() -> f64 {
    let started = thread_cpu_nanos();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..SPIN_STEPS {
        x = xorshift(x);
    }
    std::hint::black_box(x);
    (thread_cpu_nanos() - started) as f64 / SPIN_STEPS as f64
}

/// A single random cycle through the buffer, so every step is a dependent load.
fn chase_table() -> Vec<u32> {
    let slots = CHASE_BYTES / std::mem::size_of::<u32>();
    let mut order: Vec<u32> = (0..slots as u32).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..slots).rev() {
        x = xorshift(x);
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0u32; slots];
    for pair in order.windows(2) {
        next[pair[0] as usize] = pair[1];
    }
    next[order[slots - 1] as usize] = order[0];
    next
}

fn chase_ns_per_step(table: &[u32]) -> f64 {
    let started = thread_cpu_nanos();
    let mut at = 0u32;
    for _ in 0..CHASE_STEPS {
        at = table[at as usize];
    }
    std::hint::black_box(at);
    (thread_cpu_nanos() - started) as f64 / CHASE_STEPS as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Prints `{"spin_ns":..,"chase_ns":..}`: medians of a few rounds, about 0.1 s in all.
pub fn run() -> String {
    let table = chase_table();
    chase_ns_per_step(&table); // bring the table in once
    let spin = median((0..ROUNDS).map(|_| spin_ns_per_step()).collect());
    let chase = median((0..ROUNDS).map(|_| chase_ns_per_step(&table)).collect());
    format!("{{\"spin_ns\":{spin:.4},\"chase_ns\":{chase:.3}}}")
}
