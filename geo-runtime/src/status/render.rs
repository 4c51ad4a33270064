//! Rendering a status: Prometheus gauges and the operator's table.

use chrono::{DateTime, Utc};

use crate::db::NodeRole;

use super::NodeStatus;

/// Geo's gauges for `status`: (`geo_<plural><field>` without a trailing `_count`, help,
/// value), those with a value only.
fn gauges(status: &NodeStatus) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    let mut gauge = |name: String, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push((name, help.trim_end_matches('.').to_owned(), v));
        }
    };
    for r in &status.replicables {
        for (suffix, v) in r.fields() {
            let field = suffix.strip_suffix("_count").unwrap_or(suffix);
            gauge(
                format!("geo_{}{field}", r.plural),
                &format!("Geo status field {}{suffix}.", r.plural),
                v,
            );
        }
    }
    let f = |v: Option<i64>| v.map(|v| v as f64);
    let ts = |v: Option<DateTime<Utc>>| v.map(|t| t.timestamp_micros() as f64 / 1e6);
    gauge(
        "geo_last_event_id".into(),
        "The newest event id on the primary.",
        f(status.last_event_id),
    );
    gauge(
        "geo_last_event_timestamp".into(),
        "When the newest event was written.",
        ts(status.last_event_date),
    );
    gauge(
        "geo_cursor_last_event_id".into(),
        "Every event up to this id is applied here.",
        f(status.cursor_last_event_id),
    );
    gauge(
        "geo_cursor_last_event_timestamp".into(),
        "When the event at the cursor's position was written on the primary.",
        ts(status.cursor_last_event_date),
    );
    gauge(
        "geo_cursor_events_behind".into(),
        "Events on the primary not applied here yet.",
        f(status.cursor_events_behind),
    );
    gauge(
        "geo_removals_pending".into(),
        "Local copies of deleted records waiting to be removed.",
        f(status.removals_pending),
    );
    gauge(
        "geo_cursor_gaps".into(),
        "Event ids below the cursor still missing (waited for up to the gap timeout).",
        f(status.cursor_gaps_count),
    );
    gauge(
        "geo_cursor_oldest_gap_age_seconds".into(),
        "How long the oldest missing event id has been waited for.",
        status
            .cursor_oldest_gap_at
            .map(|t| (status.collected_at - t).num_milliseconds() as f64 / 1e3),
    );
    gauge(
        "geo_store_extra_files".into(),
        "Files in the store no registry row accounts for, at the last geo check.",
        f(status.extra_files),
    );
    gauge(
        "geo_last_successful_status_check_timestamp".into(),
        "When this status was collected.",
        ts(Some(status.collected_at)),
    );
    gauge(
        "geo_status_healthy".into(),
        "1 when the node is healthy.",
        Some(if status.healthy() { 1.0 } else { 0.0 }),
    );
    out
}

/// A status snapshot as Prometheus gauges, encoded when the registry it is registered in is
/// (the admin endpoint registers the latest snapshot on each scrape).
#[derive(Debug)]
pub struct StatusGauges(pub std::sync::Arc<NodeStatus>);

impl prometheus_client::collector::Collector for StatusGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        for (name, help, value) in gauges(&self.0) {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(&name, &help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

impl NodeStatus {
    /// The status as a table for a terminal: one line per replicable, then the node's health.
    pub fn render_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let health = if self.healthy() {
            "healthy".to_owned()
        } else {
            format!("UNHEALTHY: {}", self.status_message)
        };
        let _ = writeln!(
            out,
            "node {} ({}) · {health} · collected {} in {} ms",
            self.name,
            self.role.as_str(),
            self.collected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.collection_ms
        );
        match self.role {
            NodeRole::Primary => self.primary_table(&mut out),
            NodeRole::Secondary => self.secondary_table(&mut out),
        }
        out
    }

    /// A primary's lines: checksums per replicable, the event log, the secondaries' reports.
    fn primary_table(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>10} {:>12} {:>16}",
            "replicable", "enabled", "records", "checksummed", "checksum failed"
        );
        for r in &self.replicables {
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>10} {:>12} {:>16}",
                r.name,
                if r.enabled { "yes" } else { "no" },
                r.count,
                n(r.checksummed_count),
                n(r.checksum_failed_count)
            );
        }
        let _ = writeln!(
            out,
            "last event: {}{}",
            n(self.last_event_id),
            when(self.last_event_date, self.collected_at)
        );
        for s in &self.secondaries {
            let behind = self.last_event_id.map(|l| (l - s.last_event_id).max(0));
            let _ = writeln!(
                out,
                "secondary {}: applied up to event {}{} ({} behind), as it reported {} ago",
                s.name,
                s.last_event_id,
                when(s.last_event_date, self.collected_at),
                n(behind),
                age(self.collected_at - s.updated_at)
            );
        }
    }

    /// A secondary's lines: sync and verification per replicable, the cursor, the store.
    fn secondary_table(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>12} {:>11} {:>8}",
            "replicable",
            "enabled",
            "registry",
            "synced",
            "failed",
            "pending",
            "verified",
            "verif.failed",
            "mismatched",
            "synced%"
        );
        for r in &self.replicables {
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>12} {:>11} {:>8}",
                r.name,
                if r.enabled { "yes" } else { "no" },
                n(r.registry_count),
                n(r.synced_count),
                n(r.failed_count),
                n(r.pending_count.zip(r.started_count).map(|(p, s)| p + s)),
                n(r.verified_count),
                n(r.verification_failed_count),
                n(r.checksum_mismatch_count),
                r.synced_in_percentage()
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"))
            );
        }
        let gaps = match (self.cursor_gaps_count, self.cursor_oldest_gap_at) {
            (Some(g), Some(oldest)) if g > 0 => format!(
                "{g} (oldest waited for {})",
                age(self.collected_at - oldest)
            ),
            (g, _) => n(g),
        };
        let _ = writeln!(
            out,
            "cursor: event {}{} of {}{} ({} behind) · gaps: {gaps} · removals pending: {}",
            n(self.cursor_last_event_id),
            when(self.cursor_last_event_date, self.collected_at),
            n(self.last_event_id),
            when(self.last_event_date, self.collected_at),
            n(self.cursor_events_behind),
            n(self.removals_pending)
        );
        let _ = match (self.extra_files, self.store_checked_at) {
            (Some(extra), Some(at)) => writeln!(
                out,
                "store: {extra} files no row accounts for at the last check ({}){}",
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                if extra > 0 {
                    "; `geo check --delete-extra` lists them"
                } else {
                    ""
                }
            ),
            _ => writeln!(out, "store: not checked yet for extra files (`geo check`)"),
        };
    }
}

/// A count, or `-` when it was not collected.
fn n(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// ` (written 3 s ago)` for an event's time, or nothing when it is not known.
fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    at.map_or_else(String::new, |t| format!(" (written {} ago)", age(now - t)))
}

/// `3 s`, `12 min`, `5 h`, `2 d`.
fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
