//! Per-node counters and histograms, kept in prometheus-client's types and rendered in
//! Prometheus' text format (0.0.4) by the node's admin endpoint ([`crate::node::admin`]).
//!
//! Each node owns its own [`Metrics`] (a cheap, clonable handle) rather than a process-global
//! recorder: two nodes in one process (the demo, the tests) keep separate figures, and nothing
//! needs installing before a node starts. Workers built without a handle record into a detached
//! one that nobody reads. Every metric is a typed field with its label set; the names and help
//! texts are written once, in [`Metrics::register`].

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The replicable a sample is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicableLabel {
    replicable: &'static str,
}

/// A replicable and how something ended for it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    replicable: &'static str,
    outcome: &'static str,
}

/// A replicable and why a download failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    replicable: &'static str,
    reason: &'static str,
}

/// Why something failed, alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureReason {
    reason: &'static str,
}

fn download_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug)]
struct Families {
    sync_transfers: Family<OutcomeLabels, Counter>,
    sync_bytes: Family<ReplicableLabel, Counter>,
    sync_failures: Family<ReasonLabels, Counter>,
    download_duration: Family<ReplicableLabel, Histogram, fn() -> Histogram>,
    verification: Family<OutcomeLabels, Counter>,
    events_applied: Counter,
    gaps_abandoned: Counter,
    status_failed: Family<FailureReason, Counter>,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            sync_transfers: Family::default(),
            sync_bytes: Family::default(),
            sync_failures: Family::default(),
            download_duration: Family::new_with_constructor(download_histogram),
            verification: Family::default(),
            events_applied: Counter::default(),
            gaps_abandoned: Counter::default(),
            status_failed: Family::default(),
        }
    }
}

/// A node's counters and histograms.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Families>,
}

impl Metrics {
    /// A fresh, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Downloads of `replicable` finished with `outcome` (`synced`, `failed`, `superseded`).
    pub(crate) fn sync_transfers(&self, replicable: &'static str, outcome: &'static str, n: u64) {
        if n > 0 {
            let labels = OutcomeLabels {
                replicable,
                outcome,
            };
            self.inner.sync_transfers.get_or_create(&labels).inc_by(n);
        }
    }

    /// Bytes of `replicable`'s objects downloaded and made durable.
    pub(crate) fn sync_bytes(&self, replicable: &'static str, bytes: u64) {
        if bytes > 0 {
            let labels = ReplicableLabel { replicable };
            self.inner.sync_bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// A download of `replicable` failed for `reason` (the failure's kind).
    pub(crate) fn sync_failure(&self, replicable: &'static str, reason: &'static str) {
        let labels = ReasonLabels { replicable, reason };
        self.inner.sync_failures.get_or_create(&labels).inc();
    }

    /// A download of `replicable` took `seconds` from request to a checked, staged object.
    pub(crate) fn download_time(&self, replicable: &'static str, seconds: f64) {
        let labels = ReplicableLabel { replicable };
        self.inner
            .download_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Checksums of `replicable` computed (primary) or copies verified (secondary), by
    /// `outcome` (`succeeded`, `failed`).
    pub(crate) fn verifications(&self, replicable: &'static str, outcome: &'static str, n: u64) {
        if n > 0 {
            let labels = OutcomeLabels {
                replicable,
                outcome,
            };
            self.inner.verification.get_or_create(&labels).inc_by(n);
        }
    }

    /// Events the cursor applied to the registries.
    pub(crate) fn events_applied(&self, n: u64) {
        self.inner.events_applied.inc_by(n);
    }

    /// Event ids given up on after the gap timeout.
    pub(crate) fn gaps_abandoned(&self, n: u64) {
        self.inner.gaps_abandoned.inc_by(n);
    }

    /// A status collection could not get the primary's answer, for `reason` (`unreachable`, or
    /// the class of the primary's refusal).
    pub(crate) fn status_failed(&self, reason: &'static str) {
        let labels = FailureReason { reason };
        self.inner.status_failed.get_or_create(&labels).inc();
    }

    /// How many status collections failed to reach the primary for `reason` so far.
    pub fn status_failed_total(&self, reason: &'static str) -> u64 {
        let labels = FailureReason { reason };
        self.inner.status_failed.get(&labels).map_or(0, |c| c.get())
    }

    /// How many downloads of `replicable` finished with `outcome` so far.
    pub fn sync_transfers_total(&self, replicable: &'static str, outcome: &'static str) -> u64 {
        let labels = OutcomeLabels {
            replicable,
            outcome,
        };
        self.inner
            .sync_transfers
            .get(&labels)
            .map_or(0, |c| c.get())
    }

    /// How many verifications of `replicable` ended with `outcome` so far.
    pub fn verifications_total(&self, replicable: &'static str, outcome: &'static str) -> u64 {
        let labels = OutcomeLabels {
            replicable,
            outcome,
        };
        self.inner.verification.get(&labels).map_or(0, |c| c.get())
    }

    /// Registers every metric of this node in `registry` (the handles are shared: the registry
    /// reads the live values when it is encoded).
    pub fn register(&self, registry: &mut Registry) {
        let f = &self.inner;
        registry.register(
            "geo_sync_transfers",
            "Blob downloads finished, by replicable and outcome (synced, failed, superseded)",
            f.sync_transfers.clone(),
        );
        registry.register(
            "geo_sync_bytes",
            "Bytes of objects downloaded and made durable, by replicable",
            f.sync_bytes.clone(),
        );
        registry.register(
            "geo_sync_failures",
            "Failed blob downloads, by replicable and reason",
            f.sync_failures.clone(),
        );
        registry.register(
            "geo_sync_download_duration_seconds",
            "Time from request to a checked, staged object, by replicable",
            f.download_duration.clone(),
        );
        registry.register(
            "geo_verification",
            "Checksums computed, by replicable and outcome (succeeded, failed)",
            f.verification.clone(),
        );
        registry.register(
            "geo_cursor_events_applied",
            "Events applied to the registries by the event cursor",
            f.events_applied.clone(),
        );
        registry.register(
            "geo_status_failed",
            "Status collections that could not get the primary's answer, by reason (unreachable, authentication, clock_skew, disabled, wrong_endpoint, other)",
            f.status_failed.clone(),
        );
        registry.register(
            "geo_event_gaps_abandoned",
            "Event ids given up on after the gap timeout (the consistency pass repairs them)",
            f.gaps_abandoned.clone(),
        );
    }
}

/// A registry whose every sample carries `labels` (the node's `name` and `url`, as Geo labels
/// its gauges).
pub fn labelled_registry(labels: &[(&'static str, &str)]) -> Registry {
    Registry::with_labels(
        labels
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), Cow::Owned((*v).to_owned()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::new();
        m.sync_failure("widget", "http_status");
        m.sync_failure("widget", "http_status");
        m.sync_bytes("wid\"get", 10);
        m.download_time("widget", 0.3);
        m.sync_transfers("widget", "synced", 0);
        assert_eq!(m.sync_transfers_total("widget", "synced"), 0);
        let mut registry = labelled_registry(&[("name", "east")]);
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).expect("encode");
        assert!(out.contains(
            "geo_sync_failures_total{name=\"east\",replicable=\"widget\",reason=\"http_status\"} 2\n"
        ), "{out}");
        assert!(
            out.contains("geo_sync_bytes_total{name=\"east\",replicable=\"wid\\\"get\"} 10\n"),
            "{out}"
        );
        assert!(out.contains(
            "geo_sync_download_duration_seconds_bucket{name=\"east\",replicable=\"widget\",le=\"0.25\"} 0\n"
        ), "{out}");
        assert!(out.contains(
            "geo_sync_download_duration_seconds_bucket{name=\"east\",replicable=\"widget\",le=\"0.5\"} 1\n"
        ), "{out}");
        assert!(
            out.contains(
                "geo_sync_download_duration_seconds_count{name=\"east\",replicable=\"widget\"} 1\n"
            ),
            "{out}"
        );
        // Nothing transferred: no sample, not a zero one.
        assert!(!out.contains("geo_sync_transfers_total{"), "{out}");
    }
}
