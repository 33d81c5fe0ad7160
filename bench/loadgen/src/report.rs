//! The one JSON object the load generator prints: what ran, what was counted in the
//! measured window, and the raw /proc readings at its edges (the runner derives CPU per
//! operation and the noise figures from them).

use std::fmt::Write;

use crate::histogram::Histogram;
use crate::procstat::{self, CpuTimes, Sample};
use crate::Options;

#[derive(Default)]
pub struct Report {
    pub errors: Vec<String>,
    /// Operations completed inside the window (echoed messages, deliveries, handshakes).
    pub ops: u64,
    pub window_seconds: f64,
    pub latency: Histogram,
    /// Broadcast to several servers: latency at the members not on the sender's server.
    pub latency_far: Option<Histogram>,
    pub sent: u64,
    pub received: u64,
    pub connect_seconds: f64,
    pub connections: usize,
    pub closed_clean: usize,
    pub start: Sample,
    pub end: Sample,
    pub loadgen_cpu_micros: u64,
}

const MAX_ERRORS: usize = 20;

impl Report {
    pub fn error(&mut self, error: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(error);
        } else if self.errors.len() == MAX_ERRORS {
            self.errors.push("(further errors not shown)".into());
        }
    }

    pub fn to_json(&self, options: &Options) -> String {
        let unit = match options.workload {
            crate::Workload::Echo => "message",
            crate::Workload::Broadcast => "delivery",
            crate::Workload::Handshake => "handshake",
            crate::Workload::Idle => "connection",
        };
        let mut out = String::from("{");
        let mut field = |name: &str, value: String| {
            if out.len() > 1 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":{value}");
        };
        field("workload", quote(options.workload.name()));
        field("path", quote(&options.target.path));
        field("ok", (self.errors.is_empty()).to_string());
        field(
            "errors",
            format!(
                "[{}]",
                self.errors
                    .iter()
                    .map(|e| quote(e))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        field("unit", quote(unit));
        field("conns", options.conns.to_string());
        field("size", options.size.to_string());
        field("inflight", options.inflight.to_string());
        field("window", options.window.to_string());
        field("burst", options.burst.to_string());
        field("concurrency", options.concurrency.to_string());
        field("sources", options.target.sources.len().max(1).to_string());
        field("connections", self.connections.to_string());
        field("connect_s", format!("{:.3}", self.connect_seconds));
        field("closed_clean", self.closed_clean.to_string());
        field("window_s", format!("{:.4}", self.window_seconds));
        field("ops", self.ops.to_string());
        field("sent", self.sent.to_string());
        field("received", self.received.to_string());
        field("latency_us", latency_json(&self.latency));
        if let Some(far) = &self.latency_far {
            field("latency_far_us", latency_json(far));
        }
        let total = self.end.total.minus(&self.start.total);
        let server_ticks = self
            .end
            .server_ticks
            .saturating_sub(self.start.server_ticks);
        let self_ticks = self.end.self_ticks.saturating_sub(self.start.self_ticks);
        let broker_ticks = self
            .end
            .broker_ticks
            .saturating_sub(self.start.broker_ticks);
        let per_cpu: Vec<String> = self
            .end
            .per_cpu
            .iter()
            .zip(&self.start.per_cpu)
            .map(|(end, start)| cpu_json(&end.minus(start)))
            .collect();
        field(
            "cpu",
            format!(
                "{{\"clk_tck\":{},\"server_ticks\":{},\"server_processes\":{},\"loadgen_ticks\":{},\
                 \"broker_ticks\":{},\"others_ticks\":{},\"loadgen_us\":{},\"total\":{},\"per_cpu\":[{}]}}",
                procstat::clock_ticks_per_second(),
                server_ticks,
                self.end.server_processes,
                self_ticks,
                broker_ticks,
                self.end.all_ticks.saturating_sub(self.start.all_ticks).saturating_sub(server_ticks + self_ticks + broker_ticks),
                self.loadgen_cpu_micros,
                cpu_json(&total),
                per_cpu.join(","),
            ),
        );
        field("server_rss_start", self.start.server_rss_bytes.to_string());
        field("server_rss_end", self.end.server_rss_bytes.to_string());
        out.push('}');
        out
    }
}

fn latency_json(latency: &Histogram) -> String {
    let micros = |nanos: u64| nanos as f64 / 1000.0;
    format!(
        "{{\"count\":{},\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}",
        latency.count(),
        micros(latency.quantile(0.50)),
        micros(latency.quantile(0.90)),
        micros(latency.quantile(0.99)),
        micros(latency.quantile(0.999)),
        micros(latency.max()),
    )
}

fn cpu_json(times: &CpuTimes) -> String {
    format!(
        "{{\"user\":{},\"nice\":{},\"system\":{},\"idle\":{},\"iowait\":{},\"irq\":{},\"softirq\":{},\"steal\":{}}}",
        times.user, times.nice, times.system, times.idle, times.iowait, times.irq, times.softirq, times.steal
    )
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
