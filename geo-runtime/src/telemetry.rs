//! Per-node counters and histograms, rendered in Prometheus' text format by the node's admin
//! endpoint ([`crate::node::admin`]).
//!
//! Each node owns its own [`Metrics`] (a cheap, clonable handle) rather than a process-global
//! recorder: two nodes in one process (the demo, the tests) keep separate figures, and nothing
//! needs installing before a node starts. Workers built without a handle record into a detached
//! one that nobody reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What every metric the runtime records is, for the `# HELP` / `# TYPE` lines.
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "geo_sync_transfers_total",
        "counter",
        "Blob downloads finished, by replicable and outcome (synced, failed).",
    ),
    (
        "geo_sync_bytes_total",
        "counter",
        "Bytes of objects downloaded and made durable, by replicable.",
    ),
    (
        "geo_sync_failures_total",
        "counter",
        "Failed blob downloads, by replicable and reason.",
    ),
    (
        "geo_sync_download_duration_seconds",
        "histogram",
        "Time from request to a checked, staged object, by replicable.",
    ),
    (
        "geo_verification_total",
        "counter",
        "Checksums computed, by replicable and outcome (succeeded, failed).",
    ),
    (
        "geo_cursor_events_applied_total",
        "counter",
        "Events applied to the registries by the event cursor.",
    ),
    (
        "geo_event_gaps_abandoned_total",
        "counter",
        "Event ids given up on after the gap timeout (the consistency pass repairs them).",
    ),
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// A node's counters and histograms.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// A fresh, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic while holding the lock leaves counters, not invariants: keep counting.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner)
    }

    /// Adds `by` to the counter `name` with `labels`.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        if by == 0 {
            return;
        }
        self.with(|i| *i.counters.entry((name, owned(labels))).or_default() += by as f64);
    }

    /// Records one observation of `seconds` in the histogram `name`.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        self.with(|i| {
            let h = i.histograms.entry((name, owned(labels))).or_default();
            for (bound, n) in BUCKETS.iter().zip(h.buckets.iter_mut()) {
                if seconds <= *bound {
                    *n += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        });
    }

    /// The counter's value (0 when never incremented).
    pub fn counter(&self, name: &str, labels: &[(&'static str, &str)]) -> f64 {
        self.with(|i| {
            i.counters
                .iter()
                .find(|((n, l), _)| {
                    *n == name
                        && l.len() == labels.len()
                        && l.iter().zip(labels).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
                })
                .map_or(0.0, |(_, v)| *v)
        })
    }

    /// Appends every counter and histogram in Prometheus' text format, each sample also
    /// labelled with `common` (the node's `name` and `url`, as Geo labels its gauges).
    pub fn render(&self, common: &[(&'static str, &str)], out: &mut String) {
        self.with(|i| {
            for (name, kind, help) in CATALOGUE {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for ((n, labels), v) in &i.counters {
                    if n == name {
                        sample(out, name, common, labels, None, *v);
                    }
                }
                for ((n, labels), h) in &i.histograms {
                    if n != name {
                        continue;
                    }
                    let bucket = format!("{name}_bucket");
                    for (bound, c) in BUCKETS.iter().zip(h.buckets) {
                        sample(
                            out,
                            &bucket,
                            common,
                            labels,
                            Some(&bound.to_string()),
                            c as f64,
                        );
                    }
                    sample(out, &bucket, common, labels, Some("+Inf"), h.count as f64);
                    sample(out, &format!("{name}_sum"), common, labels, None, h.sum);
                    sample(
                        out,
                        &format!("{name}_count"),
                        common,
                        labels,
                        None,
                        h.count as f64,
                    );
                }
            }
        });
    }
}

/// Escapes a label value (backslash, quote, newline), as the text format requires.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample line: `name{common..., labels..., le} value`.
pub fn sample(
    out: &mut String,
    name: &str,
    common: &[(&'static str, &str)],
    labels: &[(&'static str, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    let all = common
        .iter()
        .map(|(k, v)| (*k, *v))
        .chain(labels.iter().map(|(k, v)| (*k, v.as_str())))
        .chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (k, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::new();
        m.add(
            "geo_sync_failures_total",
            &[("replicable", "widget"), ("reason", "http_status")],
            2,
        );
        m.add("geo_sync_bytes_total", &[("replicable", "wid\"get")], 10);
        m.observe(
            "geo_sync_download_duration_seconds",
            &[("replicable", "widget")],
            0.3,
        );
        assert_eq!(
            m.counter(
                "geo_sync_failures_total",
                &[("replicable", "widget"), ("reason", "http_status")]
            ),
            2.0
        );
        let mut out = String::new();
        m.render(&[("name", "east")], &mut out);
        assert!(out.contains(
            "geo_sync_failures_total{name=\"east\",replicable=\"widget\",reason=\"http_status\"} 2\n"
        ));
        assert!(out.contains("geo_sync_bytes_total{name=\"east\",replicable=\"wid\\\"get\"} 10\n"));
        assert!(out.contains(
            "geo_sync_download_duration_seconds_bucket{name=\"east\",replicable=\"widget\",le=\"0.25\"} 0\n"
        ));
        assert!(out.contains(
            "geo_sync_download_duration_seconds_bucket{name=\"east\",replicable=\"widget\",le=\"0.5\"} 1\n"
        ));
        assert!(out.contains(
            "geo_sync_download_duration_seconds_count{name=\"east\",replicable=\"widget\"} 1\n"
        ));
    }
}
