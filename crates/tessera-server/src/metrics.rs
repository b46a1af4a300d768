//! Prometheus metrics (text format 0.0.4): requests by protocol, route and
//! status, request latency by protocol and route, requests in flight, and
//! per-collection gauges (documents, tokens, segments, bytes, quarantine files)
//! and counters (WAL tails cut) read from the engine at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tessera::Database;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    protocol: &'static str,
    route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Reads collection counts (and the live recall tallies) at scrape time.
#[derive(Debug)]
struct Collections(Arc<Database>, Arc<crate::live::LiveRecall>);

impl Collector for Collections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut names = self.0.list_collections();
        names.sort();
        let stats: Vec<_> = names.iter().filter_map(|n| self.0.collection(n).ok()).map(|c| c.stats()).collect();
        type Row = (&'static str, &'static str, fn(&tessera::CollectionStats) -> i64);
        let gauges: [Row; 6] = [
            ("tessera_collection_documents", "Live documents", |s| s.documents as i64),
            ("tessera_collection_tokens", "Token embeddings of live documents", |s| s.tokens as i64),
            ("tessera_collection_segments", "Immutable segments", |s| s.segments as i64),
            ("tessera_collection_memtable_documents", "Documents not yet sealed into a segment", |s| {
                s.memtable_documents as i64
            }),
            ("tessera_collection_disk_bytes", "Bytes on disk (segments, indexes, WAL, manifest)", |s| {
                s.bytes_on_disk as i64
            }),
            ("tessera_collection_quarantine_files", "Files keeping bytes cut from a WAL's torn tail", |s| {
                s.quarantine.len() as i64
            }),
        ];
        for (name, help, get) in gauges {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for s in &stats {
                let labels = [("collection", s.name.as_str())];
                ConstGauge::new(get(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = "Torn WAL tails cut when the collection was opened (their bytes are kept in quarantine files)";
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor("tessera_wal_tails_cut", help, None, counter.metric_type())?;
        for s in &stats {
            let labels = [("collection", s.name.as_str())];
            ConstCounter::new(s.wal_tails_cut).encode(family.encode_family(&labels)?)?;
        }
        // Live recall (`serve --live-recall-rate`): mean = sum / queries.
        let tallies = self.1.tallies();
        if !tallies.is_empty() {
            type Live = (&'static str, &'static str, fn(&crate::live::Tally) -> f64);
            let counters: [Live; 3] = [
                ("tessera_live_recall_queries", "Answered two-stage searches searched again exactly", |t| {
                    t.queries as f64
                }),
                ("tessera_live_recall_sum", "The sum of their recall@k of the exact top-k", |t| t.recall_sum),
                ("tessera_live_recall_skipped", "Searches sampled but not checked (the checker was busy)", |t| {
                    t.skipped as f64
                }),
            ];
            for (name, help, get) in counters {
                let counter = ConstCounter::new(0.0f64);
                let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                for (collection, t) in &tallies {
                    let labels = [("collection", collection.as_str())];
                    ConstCounter::new(get(t)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// `tessera_build_info{version, kernel, chosen_by, int8_kernel} 1`.
#[derive(Debug)]
struct BuildInfo(tessera::KernelInfo);

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(1i64);
        let help = "The build and the MaxSim kernels this process scores with";
        let mut family = encoder.encode_descriptor("tessera_build_info", help, None, gauge.metric_type())?;
        let k = &self.0;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("kernel", k.kernel),
            ("chosen_by", k.chosen_by),
            ("int8_kernel", k.int8_kernel),
        ];
        gauge.encode(family.encode_family(&labels)?)
    }
}

impl Metrics {
    pub fn new(db: Arc<Database>, live: Arc<crate::live::LiveRecall>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("tessera_requests", "Requests served", requests.clone());
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)));
        registry.register("tessera_request_duration_seconds", "Request latency", latency.clone());
        let in_flight = Gauge::default();
        registry.register("tessera_requests_in_flight", "Requests being served", in_flight.clone());
        registry.register_collector(Box::new(Collections(db, live)));
        registry.register_collector(Box::new(BuildInfo(tessera::kernel_info())));
        Self { registry, requests, latency, in_flight }
    }

    /// Counts a request that started; the guard's drop counts it finished.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn observe(&self, protocol: &'static str, route: &str, status: &str, elapsed: Duration) {
        let route = route.to_string();
        self.requests.get_or_create(&RequestLabels { protocol, route: route.clone(), status: status.into() }).inc();
        self.latency.get_or_create(&RouteLabels { protocol, route }).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
