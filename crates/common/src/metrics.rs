//! Prometheus text exposition for plain atomic counters and gauges, written by hand: the
//! services export a dozen numbers and need no registry.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.header(name, help, "counter");
        let _ = writeln!(self.0, "{name} {value}");
        self
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.header(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
        self
    }

    /// A gauge in a base unit that needs a fraction (seconds).
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.header(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
        self
    }

    /// A summary without quantiles: `name_sum` (in the base unit, e.g. seconds) and
    /// `name_count`, so that `rate(name_sum) / rate(name_count)` is the mean.
    pub fn summary(&mut self, name: &str, help: &str, sum: f64, count: u64) -> &mut Self {
        self.header(name, help, "summary");
        let _ = writeln!(self.0, "{name}_sum {sum}");
        let _ = writeln!(self.0, "{name}_count {count}");
        self
    }

    /// A counter with one label, one sample per `(label value, count)`.
    pub fn labeled_counter(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: &[(&str, u64)],
    ) -> &mut Self {
        self.header(name, help, "counter");
        for (value, count) in samples {
            let _ = writeln!(self.0, "{name}{{{label}=\"{value}\"}} {count}");
        }
        self
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_has_its_sum_in_seconds_and_its_count() {
        let mut e = Exposition::default();
        e.summary("lag_seconds", "Lag.", 0.25, 4);
        assert_eq!(
            e.finish(),
            "# HELP lag_seconds Lag.\n# TYPE lag_seconds summary\nlag_seconds_sum 0.25\nlag_seconds_count 4\n"
        );
    }

    #[test]
    fn renders_prometheus_text() {
        let c = Counter::default();
        c.add(3);
        let mut e = Exposition::default();
        e.counter("votes_total", "Votes.", c.get()).labeled_counter(
            "refused_total",
            "Refused.",
            "reason",
            &[("redis", 2)],
        );
        let text = e.finish();
        assert!(text.contains("# TYPE votes_total counter\nvotes_total 3\n"));
        assert!(text.contains("refused_total{reason=\"redis\"} 2\n"));
    }
}
