//! Prometheus metrics, exposed at `/metrics` (admin credential required).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabel, Histogram>,
    pub tokens_issued: Family<ResultLabel, Counter>,
    pub introspections: Family<ResultLabel, Counter>,
    pub decisions: Family<ResultLabel, Counter>,
    pub kills: Family<ResultLabel, Counter>,
    pub exchanges: Family<ResultLabel, Counter>,
    pub attestations: Family<ResultLabel, Counter>,
    pub leases: Family<ResultLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("remit");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let tokens_issued = Family::<ResultLabel, Counter>::default();
        let introspections = Family::<ResultLabel, Counter>::default();
        let decisions = Family::<ResultLabel, Counter>::default();
        let kills = Family::<ResultLabel, Counter>::default();
        let exchanges = Family::<ResultLabel, Counter>::default();
        let attestations = Family::<ResultLabel, Counter>::default();
        let leases = Family::<ResultLabel, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_seconds.clone());
        registry.register(
            "tokens_issued",
            "SVIDs issued, by kind (instance, task, tool, jwt-svid, x509-svid)",
            tokens_issued.clone(),
        );
        registry.register("introspections", "Introspection answers, by result", introspections.clone());
        registry.register("decisions", "Policy decisions, by outcome", decisions.clone());
        registry.register("kills", "Kill switches pulled, by target kind", kills.clone());
        registry.register("token_exchanges", "RFC 8693 token exchanges: issued, refused or error", exchanges.clone());
        registry.register("workload_attestations", "Workload API callers: attested or refused", attestations.clone());
        registry.register(
            "leases",
            "Dynamic credentials: issued, refused, revoked, and failed revocation attempts",
            leases.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_seconds,
            tokens_issued,
            introspections,
            decisions,
            kills,
            exchanges,
            attestations,
            leases,
        }
    }

    pub fn label(v: &str) -> ResultLabel {
        ResultLabel { result: v.to_owned() }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
