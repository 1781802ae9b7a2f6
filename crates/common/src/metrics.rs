//! Metrics: plain atomic counters and gauges on the hot paths, read at scrape time into a
//! `prometheus-client` [`Registry`] and encoded as Prometheus text (version 0.0.4).
//!
//! A service registers one collector ([`register`]): a function that reads its atomics and
//! writes each family through [`Families`]. Nothing is copied into the registry between
//! scrapes, so the counters stay what they are (one relaxed atomic add), and a registry is
//! built for each scrape ([`crate::web::metrics`]).
//!
//! Names follow Prometheus' conventions: a counter ends in `_total` (prometheus-client adds
//! it; [`Families::counter`] takes the full name, so it can be found with grep), units are
//! seconds and bytes, and a mean is a `_sum` and a `_count`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;

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

/// Registers `write`, which reads `source` and writes its families at every scrape.
pub fn register<T: Send + Sync + 'static>(
    registry: &mut Registry,
    source: T,
    write: fn(&T, &mut Families<'_>) -> fmt::Result,
) {
    registry.register_collector(Box::new(Scrape { source, write }));
}

struct Scrape<T> {
    source: T,
    write: fn(&T, &mut Families<'_>) -> fmt::Result,
}

impl<T> fmt::Debug for Scrape<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl<T: Send + Sync + 'static> Collector for Scrape<T> {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.write)(&self.source, &mut Families(encoder))
    }
}

/// Where a collector writes its families, each with its name, its help (a sentence) and its
/// values.
pub struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    /// A counter; `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let family = self
            .0
            .encode_descriptor(bare(name), help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(family)
    }

    /// A gauge: a count (`u64`) or, in a base unit that needs a fraction, an `f64` (seconds).
    pub fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        let family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(family)
    }

    /// A counter with one label: a sample per `(label value, count)`; `name` ends in `_total`.
    pub fn labeled_counter(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: &[(&str, u64)],
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(bare(name), help, None, MetricType::Counter)?;
        for (value, count) in samples {
            ConstCounter::new(*count).encode(family.encode_family(&[(label, *value)])?)?;
        }
        Ok(())
    }

    /// A gauge with one label: a sample per `(label value, value)`.
    pub fn labeled_gauge(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: &[(&str, u64)],
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value, v) in samples {
            ConstGauge::new(*v).encode(family.encode_family(&[(label, *value)])?)?;
        }
        Ok(())
    }

    /// Observations known only by their sum (in the base unit, e.g. seconds) and number:
    /// `name_sum` and `name_count`, so that `rate(name_sum) / rate(name_count)` is the mean.
    /// prometheus-client has no summary type, so it is a histogram with the one bucket `+Inf`.
    pub fn sum_and_count(&mut self, name: &str, help: &str, sum: f64, count: u64) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(sum, count, &[(f64::INFINITY, count)], None)
    }
}

/// A counter's name without the `_total` prometheus-client adds.
fn bare(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// `registry` as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// The `Content-Type` of [`encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_has_its_sum_in_seconds_and_its_count() {
        let mut registry = Registry::default();
        register(&mut registry, (0.25, 4), |&(sum, count), f| {
            f.sum_and_count("lag_seconds", "Lag.", sum, count)
        });
        assert_eq!(
            encode(&registry),
            "# HELP lag_seconds Lag.\n# TYPE lag_seconds histogram\n\
             lag_seconds_bucket{le=\"+Inf\"} 4\nlag_seconds_sum 0.25\nlag_seconds_count 4\n"
        );
    }

    #[test]
    fn renders_prometheus_text_read_at_scrape_time() {
        let c = std::sync::Arc::new(Counter::default());
        let mut registry = Registry::default();
        register(&mut registry, c.clone(), |c, f| {
            f.counter("votes_total", "Votes.", c.get())?;
            f.labeled_counter("refused_total", "Refused.", "reason", &[("redis", 2)])?;
            f.gauge("open", "Open.", 7)
        });
        c.add(3);
        let text = encode(&registry);
        assert!(
            text.contains("# HELP votes_total Votes.\n# TYPE votes_total counter\nvotes_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("refused_total{reason=\"redis\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE open gauge\nopen 7\n"), "{text}");
        c.inc();
        assert!(encode(&registry).contains("\nvotes_total 4\n"));
    }
}
