//! Results as JSON lines (DESIGN.md, "Contracts"): one object per measurement with `suite`,
//! `workload`, `system`, `threads`, `ops`, `seconds`, `ops_per_sec`, `p50_us`, `p99_us` and any
//! extra fields a suite adds.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::time::Duration;

/// Latencies of one measurement, in microseconds.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Latencies {
        // 1 us to 100 s at 3 significant digits.
        Latencies {
            histogram: Histogram::new_with_bounds(1, 100_000_000, 3).expect("bounds"),
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let micros = (elapsed.as_nanos() / 1_000).clamp(1, 100_000_000) as u64;
        self.histogram.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn quantile_us(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

/// Sums the operations and merges the latencies of a measurement's threads.
pub fn sum_threads(results: impl IntoIterator<Item = (u64, Latencies)>) -> (u64, Latencies) {
    let mut ops = 0;
    let mut latencies = Latencies::new();
    for (thread_ops, thread_latencies) in results {
        ops += thread_ops;
        latencies.merge(&thread_latencies);
    }
    (ops, latencies)
}

/// Counts the process's context switches (voluntary and involuntary, every thread, exited ones
/// included) from `start` on: each is a thread that slept or was preempted. Reported as
/// `switches_per_op`.
pub struct SwitchCount {
    before: Option<u64>,
}

impl SwitchCount {
    pub fn start() -> SwitchCount {
        SwitchCount {
            before: context_switches(),
        }
    }

    /// Switches since `start` per operation, to two decimals (`None` where the count is not
    /// available, or for no operations).
    pub fn per_op(&self, ops: u64) -> Option<f64> {
        let switches = context_switches()? - self.before?;
        (ops > 0).then(|| (switches as f64 / ops as f64 * 100.0).round() / 100.0)
    }
}

/// Context switches of the whole process so far (`getrusage(RUSAGE_SELF)`), or `None` where
/// that is not available.
#[allow(unsafe_code)]
fn context_switches() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; the call writes only into it.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: zero-initialized, and filled in by the successful call.
    let usage = unsafe { usage.assume_init() };
    Some((usage.ru_nvcsw + usage.ru_nivcsw) as u64)
}

/// One measurement.
pub struct Record {
    pub suite: String,
    pub workload: String,
    pub system: String,
    pub threads: usize,
    pub ops: u64,
    pub seconds: f64,
    pub latencies: Option<Latencies>,
    pub extra: Map<String, Value>,
}

impl Record {
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("suite".into(), self.suite.clone().into());
        object.insert("workload".into(), self.workload.clone().into());
        object.insert("system".into(), self.system.clone().into());
        object.insert("threads".into(), self.threads.into());
        object.insert("ops".into(), self.ops.into());
        object.insert("seconds".into(), round3(self.seconds).into());
        let rate = if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        };
        object.insert("ops_per_sec".into(), round3(rate).into());
        if let Some(latencies) = &self.latencies {
            object.insert("p50_us".into(), latencies.quantile_us(0.50).into());
            object.insert("p99_us".into(), latencies.quantile_us(0.99).into());
        }
        for (key, value) in &self.extra {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Writes records to standard output and, when asked, to a file.
pub struct Reporter {
    file: Option<File>,
}

impl Reporter {
    pub fn new(json_path: Option<&str>) -> anyhow::Result<Reporter> {
        let file = match json_path {
            Some(path) => Some(File::create(path)?),
            None => None,
        };
        Ok(Reporter { file })
    }

    pub fn emit(&mut self, record: &Record) -> anyhow::Result<()> {
        let line = record.to_json().to_string();
        println!("{line}");
        if let Some(file) = &mut self.file {
            writeln!(file, "{line}")?;
        }
        Ok(())
    }
}
