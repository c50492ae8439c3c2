//! Prometheus metrics, each defined once here. Labels carry names from the config (source, flow,
//! destination), never values from events, so cardinality stays bounded and nothing secret is exported.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use renkei_store::QueueStats;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    kintone_requests: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    attempt_seconds: Family<Labels, Histogram>,
    queue_depth: Family<Labels, Gauge>,
    oldest_open_age: Gauge,
    subscriptions_disabled: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("renkei");
        let events = Family::<Labels, Counter>::default();
        registry.register("events_received", "Events received, by source and outcome", events.clone());
        let deliveries = Family::<Labels, Counter>::default();
        registry.register("deliveries", "Delivery results, by flow and outcome", deliveries.clone());
        let attempt_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register("attempt_duration_seconds", "HTTP attempt latency, by destination", attempt_seconds.clone());
        let queue_depth = Family::<Labels, Gauge>::default();
        registry.register("queue_depth", "Open deliveries, by status", queue_depth.clone());
        let oldest_open_age = Gauge::default();
        registry.register("queue_oldest_age_seconds", "Age of the oldest open delivery", oldest_open_age.clone());
        let kintone_requests = Family::<Labels, Counter>::default();
        registry.register(
            "kintone_requests",
            "Requests sent to kintone, by destination and app (kintone limits requests per app per day)",
            kintone_requests.clone(),
        );
        let subscriptions_disabled = Family::<Labels, Counter>::default();
        registry.register(
            "subscriptions_disabled",
            "Subscriptions disabled because their endpoint failed every try for disable_after",
            subscriptions_disabled.clone(),
        );
        Metrics {
            registry,
            kintone_requests,
            events,
            deliveries,
            attempt_seconds,
            queue_depth,
            oldest_open_age,
            subscriptions_disabled,
        }
    }

    /// `outcome`: accepted, duplicate, or the rejection code (unauthorized, malformed_body, ...).
    pub fn event(&self, source: &str, outcome: &str) {
        self.events.get_or_create(&vec![("source", source.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    /// `outcome`: succeeded, retrying, dead, skipped.
    pub fn delivery(&self, flow: &str, outcome: &str) {
        self.deliveries.get_or_create(&vec![("flow", flow.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    pub fn attempt(&self, destination: &str, seconds: f64) {
        self.attempt_seconds.get_or_create(&vec![("destination", destination.to_owned())]).observe(seconds);
    }

    pub fn subscription_disabled(&self, subscription: &str) {
        self.subscriptions_disabled.get_or_create(&vec![("subscription", subscription.to_owned())]).inc();
    }

    pub fn kintone_request(&self, destination: &str, app: u64) {
        self.kintone_requests
            .get_or_create(&vec![("destination", destination.to_owned()), ("app", app.to_string())])
            .inc();
    }

    /// The text exposition, with queue gauges set from `stats` first.
    pub fn render(&self, stats: &QueueStats, now: chrono::DateTime<chrono::Utc>) -> String {
        for (status, n) in [
            ("pending", stats.pending),
            ("retrying", stats.retrying),
            ("in_flight", stats.in_flight),
            ("dead", stats.dead),
        ] {
            self.queue_depth.get_or_create(&vec![("status", status.to_owned())]).set(n as i64);
        }
        let age = stats.oldest_open_at.map(|t| (now - t).num_seconds().max(0)).unwrap_or(0);
        self.oldest_open_age.set(age);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The calendar day in Japan, which is when kintone's daily counts reset.
pub fn jst_day(now: chrono::DateTime<chrono::Utc>) -> String {
    now.with_timezone(&renkei_core::dates::jst()).format("%Y-%m-%d").to_string()
}

/// The store counter of kintone requests per JST day, destination and app (`kintone:DAY:DEST:APP`).
pub fn kintone_counter(now: chrono::DateTime<chrono::Utc>, destination: &str, app: u64) -> String {
    format!("kintone:{}:{destination}:{app}", jst_day(now))
}
