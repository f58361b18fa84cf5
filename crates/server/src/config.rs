//! Configuration: one typed struct, read from `<data-dir>/remit.toml` (unknown keys are an
//! error), then overridden by `REMIT_*` environment variables, then by command-line flags.
//! Nothing reads configuration from anywhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Errors found while reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration in `{path}`: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value for {key}: {message}")]
    Value { key: &'static str, message: String },
}

fn dur<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Explicit limits on requests and issued credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Requests handled at once; further ones wait.
    pub max_in_flight: usize,
    /// No workflow may allow longer tasks than this.
    #[serde(deserialize_with = "dur")]
    pub hard_max_task_ttl: Duration,
    /// Longest a task may live from its start, renewals included.
    #[serde(deserialize_with = "dur")]
    pub max_task_lifetime: Duration,
    /// TTL of a task whose request names none.
    #[serde(deserialize_with = "dur")]
    pub default_task_ttl: Duration,
    /// Lifetime of an instance identity between renewals.
    #[serde(deserialize_with = "dur")]
    pub instance_ttl: Duration,
    /// Longest join token an admin may create.
    #[serde(deserialize_with = "dur")]
    pub max_join_token_ttl: Duration,
    /// Clock skew tolerated when checking `exp`/`iat`.
    #[serde(deserialize_with = "dur")]
    pub clock_skew: Duration,
    /// Open connections on the public listener (further clients wait in the kernel's
    /// backlog). Lowered at start to stay below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Open connections from one peer address; 0 = no per-peer cap (the default: behind a
    /// proxy every client shares the proxy's address).
    pub max_connections_per_peer: usize,
    /// Peer addresses exempt from the per-peer cap (your reverse proxies).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A client must send a request's whole head within this; also how long an idle
    /// keep-alive connection stays open.
    #[serde(deserialize_with = "dur")]
    pub header_read_timeout: Duration,
    /// A client must send a request's whole body within this.
    #[serde(deserialize_with = "dur")]
    pub body_read_timeout: Duration,
    /// A connection whose client stops reading for this long is closed.
    #[serde(deserialize_with = "dur")]
    pub write_timeout: Duration,
    /// Longest request target (path and query); longer is a JSON 414.
    pub max_uri_bytes: usize,
    /// Most bytes of request headers (names and values); more is a JSON 431.
    pub max_header_bytes: usize,
    /// Longest entity type or id in a decision request or an entity push (and so in the
    /// audit records and caches that hold them).
    pub max_entity_id_bytes: usize,
    /// Memory the attribute-store entity caches may hold, in bytes (both caches together).
    pub entity_cache_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 64 * 1024,
            max_in_flight: 4096,
            hard_max_task_ttl: Duration::from_secs(24 * 3600),
            max_task_lifetime: Duration::from_secs(24 * 3600),
            default_task_ttl: Duration::from_secs(300),
            instance_ttl: Duration::from_secs(3600),
            max_join_token_ttl: Duration::from_secs(24 * 3600),
            clock_skew: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_peer: 0,
            trusted_proxies: vec![],
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_entity_id_bytes: 1024,
            entity_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often the chain head is signed into a checkpoint (when it moved).
    #[serde(deserialize_with = "dur")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { checkpoint_interval: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long an approval request stays open, and an approval stays usable.
    #[serde(deserialize_with = "dur")]
    pub ttl: Duration,
    /// Humans (the `x-remit-operator` / `--operator` name) who may approve or deny any
    /// request. A request from an agent's task may also be decided by its workflow's owner
    /// and by that workflow's `workflow_approvers`. Empty: AuthZEN requests (which belong to
    /// no workflow) may be decided by any named operator holding the admin credential.
    pub approvers: Vec<String>,
    /// Per workflow, further humans who may decide its tasks' requests.
    pub workflow_approvers: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig { ttl: Duration::from_secs(15 * 60), approvers: vec![], workflow_approvers: Default::default() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache liveness reads (task snapshots, instances, agents), invalidated by the store's
    /// change feed (LISTEN/NOTIFY on PostgreSQL).
    pub enabled: bool,
    /// Longest any entry is trusted even without a change notification (defence in depth
    /// against a feed that died silently).
    #[serde(deserialize_with = "dur")]
    pub max_age: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { enabled: true, max_age: Duration::from_secs(10) }
    }
}

/// A Shared Signals transmitter whose SETs Remit accepts at `POST /ssf/receive`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmitterConfig {
    /// Its `iss`, exactly.
    pub issuer: String,
    /// Its JWK Set; unset: the `jwks_uri` of its `/.well-known/ssf-configuration`.
    pub jwks_uri: Option<String>,
    /// The `aud` its SETs must name; default: Remit's issuer.
    pub audience: Option<String>,
    /// Signature algorithms accepted (default RS256, PS256, ES256).
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// An organisation's OpenID provider that humans sign in through (`[[oidc]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// How the provider is named in URLs and in `remit login --provider` (`a-z`, `0-9`, `-`).
    pub name: String,
    /// The provider's issuer, exactly as its discovery document and ID tokens state it.
    pub issuer: String,
    /// Remit's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (a confidential client); or
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// the environment variable holding it. Neither: a public client (PKCE only).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// ID-token signature algorithms accepted from this provider (asymmetric only).
    #[serde(default = "default_id_token_algorithms")]
    pub algorithms: Vec<String>,
    /// Scopes asked for.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Only humans whose (verified) email is in one of these domains may sign in; empty: any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// The ID-token claim listing the human's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → Remit roles (`admin`, `operator`, `approver`, `auditor`), applied at every sign-in.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
}

fn default_id_token_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_oidc_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}

/// The SPIFFE Workload API and the X.509-SVIDs it hands out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// The Workload API's Unix socket: a path, or `off`. Default `<data_dir>/workload.sock`.
    /// Created world-connectable (0777): callers are told apart by attestation, not by who
    /// may open the socket; the directory around it decides who can reach it at all.
    pub socket: Option<String>,
    /// Lifetime of an X.509-SVID; it is rotated (and pushed down the stream) at half-life.
    #[serde(deserialize_with = "dur")]
    pub x509_svid_ttl: Duration,
    /// Lifetime of a JWT-SVID fetched from the socket.
    #[serde(deserialize_with = "dur")]
    pub jwt_svid_ttl: Duration,
    /// Lifetime of the trust domain's X.509 CA certificate (self-signed, or signed by the
    /// upstream CA and then never past the upstream's own expiry).
    #[serde(deserialize_with = "dur")]
    pub ca_ttl: Duration,
    /// An operator's upstream CA that signs the trust domain's CA as an intermediate; the
    /// bundle then holds the upstream root. Unset: a self-signed CA.
    pub upstream_ca: Option<UpstreamCaConfig>,
}

/// The files of an upstream CA (SPIRE's `disk` upstream authority); read at start and at
/// each CA rotation, on every replica that may rotate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCaConfig {
    /// PEM: the upstream CA's certificate, then its chain up to and including the
    /// self-signed root (just the root's certificate when the upstream CA is the root).
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, SEC1 or PKCS#1; P-256, P-384 or RSA, or
    /// Ed25519 when it is not the root); readable by its owner only.
    pub key_file: PathBuf,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            socket: None,
            x509_svid_ttl: Duration::from_secs(3600),
            jwt_svid_ttl: Duration::from_secs(300),
            ca_ttl: Duration::from_secs(365 * 86_400),
            upstream_ca: None,
        }
    }
}

/// A platform whose tokens attest workloads that do not share a host with Remit (Kubernetes
/// service-account tokens, a CI system's OIDC tokens), through the RFC 7523 `jwt-bearer`
/// grant at `/oauth2/token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIssuerConfig {
    /// The selectors' prefix: `oidc:<name>:<claim>:<value>` (`a-z`, `0-9`, `-`).
    pub name: String,
    /// The issuer, exactly as its tokens state it; its discovery document names the JWKS.
    pub issuer: String,
    /// The `aud` its tokens must carry for Remit (e.g. what the projected service-account
    /// token was requested for).
    pub audience: String,
    /// Signature algorithms accepted (asymmetric only).
    #[serde(default = "default_workload_algorithms")]
    pub algorithms: Vec<String>,
    /// The claims that become selectors (string, number or boolean values); `sub` always does.
    #[serde(default)]
    pub claims: Vec<String>,
}

fn default_workload_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

/// A federated trust domain: its SPIFFE bundle is fetched from its bundle endpoint (the
/// `https_web` profile) and trusted for its SVIDs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The foreign trust domain (`partner.example`).
    pub trust_domain: String,
    /// Its bundle endpoint, `https://…` (`http://` on loopback only).
    pub bundle_endpoint: String,
    /// A PEM CA file to verify the endpoint's TLS certificate with, instead of the system's
    /// roots (a private web PKI).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Native TLS on the public listener (both files, or neither: plain HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (relative paths are under the data directory);
    /// re-read when it changes.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1); re-read when it changes.
    pub key: Option<PathBuf>,
}

/// The Workload API socket's default name inside the data directory.
pub const WORKLOAD_SOCKET_FILE: &str = "workload.sock";

/// Humans' sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Lifetime of a session's access token (a refresh issues a new one).
    #[serde(deserialize_with = "dur")]
    pub access_ttl: Duration,
    /// A session ends this long after sign-in, however often it is refreshed.
    #[serde(deserialize_with = "dur")]
    pub max_age: Duration,
    /// A sign-in at the provider must finish within this.
    #[serde(deserialize_with = "dur")]
    pub sign_in_timeout: Duration,
    /// How often every live session kept with a provider refresh token (`offline_access`) is
    /// renewed at its provider, deactivating whoever it no longer vouches for; `0s`: never.
    #[serde(deserialize_with = "dur")]
    pub reconcile_interval: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            access_ttl: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(12 * 3600),
            sign_in_timeout: Duration::from_secs(10 * 60),
            reconcile_interval: Duration::from_secs(3600),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where state lives: the SQLite file, the key-encryption key, the admin credential.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The admin listener: the same API on a loopback address (`127.0.0.1:7879`) or a Unix
    /// socket (`unix:PATH`, created 0600), outside the public listener's connection cap, so
    /// kill switches keep working while the public listener is flooded. `off` disables it.
    /// Default: `unix:<data_dir>/admin.sock`.
    pub admin_listen: Option<String>,
    /// `sqlite` (the file `remit.db` in the data dir), `sqlite:PATH`, or a PostgreSQL URL
    /// `postgres://user[:password]@host[:port]/database` shared by every replica.
    pub store: String,
    /// Trust domain used when initializing (later it is read from the store).
    pub trust_domain: String,
    /// `iss` of issued tokens and the OIDC issuer; defaults to `http://<listen>`.
    pub issuer: Option<String>,
    /// The audience Remit's own API accepts on instance tokens.
    pub audience: String,
    /// File holding the base64 key-encryption key; `REMIT_KEK` overrides it.
    pub kek_file: Option<PathBuf>,
    /// `auto` (default: `text` when stderr is a terminal, else `json`), `json` or `text`.
    pub log_format: String,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub cache: CacheConfig,
    pub approvals: ApprovalsConfig,
    /// The URL browsers reach Remit at (the OpenID redirect URI is built from it); defaults
    /// to the issuer.
    pub public_url: Option<String>,
    /// OpenID providers humans sign in through.
    pub oidc: Vec<OidcProviderConfig>,
    pub sessions: SessionsConfig,
    /// The organisation's `forbid` policies narrowing Remit's built-in admin roles: a
    /// `.cedar` file or a directory of them (validated at start; an invalid set refuses to start).
    pub admin_policies: Option<PathBuf>,
    pub workload: WorkloadConfig,
    pub tls: TlsConfig,
    /// Platforms whose tokens attest workloads (`[[workload_issuers]]`).
    pub workload_issuers: Vec<WorkloadIssuerConfig>,
    /// Federated trust domains (`[[federation]]`).
    pub federation: Vec<FederationConfig>,
    /// Shared Signals transmitters Remit receives CAEP/RISC events from
    /// (`[[ssf_transmitters]]`): an identity provider saying a human's sessions were revoked or
    /// credentials compromised.
    pub ssf_transmitters: Vec<TransmitterConfig>,
    /// Separate trust domains for per-tool credentials, by tool class (`[trust_domains]`).
    pub trust_domains: ClassTrustDomains,
    /// The injecting tool proxy (`[proxy]`).
    pub proxy: ProxyListenConfig,
    /// Background revocation of dynamic credentials (`[leases]`).
    pub leases: LeasesConfig,
    /// Governance: recertification defaults, notifications, external risk signals
    /// (`[governance]`).
    pub governance: GovernanceConfig,
}

/// Governance defaults and channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// Days between recertifications of agents, workflows and standing grants, unless a
    /// workflow sets its own (1-730).
    pub recert_period_days: u32,
    /// Days past due before a past-due object is suspended (0-90).
    pub recert_grace_days: u32,
    /// How often overdue objects are looked for (at least 100ms).
    #[serde(deserialize_with = "dur")]
    pub recert_check: Duration,
    /// Where notifications for humans are POSTed (JSON, signed with `Remit-Signature`); unset:
    /// none are sent.
    pub webhook_url: Option<String>,
    /// File holding the notifications' signing secret (required with `webhook_url`);
    /// `REMIT_WEBHOOK_SECRET` overrides it.
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding the secret external risk detectors sign their signals with
    /// (`POST /v1/signals/risk`, `Remit-Signature`); `REMIT_RISK_SECRET` overrides it. Unset: only
    /// administrators may send risk signals.
    pub risk_secret_file: Option<PathBuf>,
    /// Hosts a tool's Shared Signals push stream may deliver to (`receiver.example.com`,
    /// `*.example.com`, an IP address). Empty (the default): tools receive by poll only, so a
    /// tool's credential cannot make Remit POST to arbitrary hosts. Administrators' streams
    /// may push anywhere (https, or http on loopback).
    pub push_allow: Vec<String>,
    /// Most SETs a stream may have waiting; past it the stream is disabled (audited) and its
    /// queue dropped, rather than growing without bound (at least 10).
    pub max_outbox: u64,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            recert_period_days: 90,
            recert_grace_days: 7,
            recert_check: Duration::from_secs(60),
            webhook_url: None,
            webhook_secret_file: None,
            risk_secret_file: None,
            push_allow: vec![],
            max_outbox: 100_000,
        }
    }
}

impl GovernanceConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |message: &str| Err(ConfigError::Value { key: "governance", message: message.into() });
        if !(1..=730).contains(&self.recert_period_days) || self.recert_grace_days > 90 {
            return bad("`recert_period_days` is 1-730 and `recert_grace_days` 0-90");
        }
        if self.max_outbox < 10 {
            return bad("`max_outbox` is at least 10");
        }
        if self.recert_check < Duration::from_millis(100) {
            return bad("`recert_check` is at least 100ms");
        }
        if let Some(u) = &self.webhook_url {
            let ok = url::Url::parse(u).is_ok_and(|x| {
                x.scheme() == "https"
                    || (x.scheme() == "http"
                        && matches!(x.host_str(), Some("127.0.0.1") | Some("localhost") | Some("[::1]")))
            });
            if !ok {
                return bad("`webhook_url` must be an https:// URL (http:// only on loopback)");
            }
        }
        Ok(())
    }
}

/// How dynamic credentials (leases) are revoked in the background: bounded batches, a claim
/// that lapses if this replica dies mid-batch, and a pause between full batches so a big kill
/// never floods the upstream database or stalls the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesConfig {
    /// Most leases one batch revokes.
    pub batch: u32,
    /// How often due work (expiries, retries) is looked for when nothing wakes the revoker.
    #[serde(deserialize_with = "dur")]
    pub interval: Duration,
    /// Pause between two full batches.
    #[serde(deserialize_with = "dur")]
    pub batch_pause: Duration,
    /// How long a claimed batch is hidden from other replicas (and, after a crash, from this
    /// one) before it is due again; also how long a login being made is held from revocation
    /// (making it is cut off at half of this).
    #[serde(deserialize_with = "dur")]
    pub claim: Duration,
    /// The wait after a lease's first failed revocation; it doubles with each failure, up to
    /// five minutes.
    #[serde(deserialize_with = "dur")]
    pub backoff: Duration,
    /// How long an engine waits for a connection to its database before the attempt fails.
    #[serde(deserialize_with = "dur")]
    pub connect_timeout: Duration,
    /// How long revoked leases are kept before their rows are pruned (the audit log keeps
    /// their history).
    #[serde(deserialize_with = "dur")]
    pub retention: Duration,
}

impl LeasesConfig {
    /// Refuses settings that would busy-loop, fail every attempt or let a claim lapse while
    /// its batch is still being worked on.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |message: &str| Err(ConfigError::Value { key: "leases", message: message.into() });
        if !(1..=1000).contains(&self.batch) {
            return bad("`batch` is 1-1000");
        }
        if self.interval < Duration::from_millis(100) {
            return bad("`interval` is at least 100ms");
        }
        if self.connect_timeout.is_zero() || self.backoff.is_zero() {
            return bad("`connect_timeout` and `backoff` must be above zero");
        }
        if self.claim < Duration::from_secs(5) || self.claim < self.connect_timeout * 4 {
            return bad("`claim` is at least 5s and four times `connect_timeout`");
        }
        Ok(())
    }
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            batch: 100,
            interval: Duration::from_secs(1),
            batch_pause: Duration::from_millis(0),
            claim: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The injecting tool proxy's listener (`/tools/<tool>/<path>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyListenConfig {
    /// Where it listens (`127.0.0.1:7880`); unset: no proxy.
    pub listen: Option<SocketAddr>,
    /// How long an upstream may take to send anything.
    #[serde(deserialize_with = "dur")]
    pub upstream_timeout: Duration,
    /// A PEM CA file to verify upstreams' TLS certificates with instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The URL agents reach the proxy at (`http://10.0.0.5:7880`): the `htu` their DPoP proofs
    /// name. Unset: DPoP-bound tokens are refused at the proxy.
    pub public_url: Option<String>,
}

impl Default for ProxyListenConfig {
    fn default() -> Self {
        ProxyListenConfig { listen: None, upstream_timeout: Duration::from_secs(30), ca_file: None, public_url: None }
    }
}

/// A trust domain per tool class: a class given one has its tools' credentials signed by
/// that trust domain's own keys (published at `/trust-domains/<td>/jwks.json`), so a
/// credential taken from one path verifies nowhere else. A class without one uses the
/// installation's trust domain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassTrustDomains {
    pub model: Option<String>,
    pub tool: Option<String>,
    pub data: Option<String>,
}

impl ClassTrustDomains {
    /// The configured ones, by class.
    pub fn configured(&self) -> Vec<(remit_core::tool::ToolClass, &str)> {
        use remit_core::tool::ToolClass;
        [(ToolClass::Model, &self.model), (ToolClass::Tool, &self.tool), (ToolClass::Data, &self.data)]
            .into_iter()
            .filter_map(|(c, td)| td.as_deref().map(|td| (c, td)))
            .collect()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("remit-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            admin_listen: None,
            store: "sqlite".into(),
            trust_domain: "remit.local".into(),
            issuer: None,
            audience: "remit".into(),
            kek_file: None,
            log_format: "auto".into(),
            limits: LimitsConfig::default(),
            audit: AuditConfig::default(),
            cache: CacheConfig::default(),
            approvals: ApprovalsConfig::default(),
            public_url: None,
            oidc: vec![],
            sessions: SessionsConfig::default(),
            admin_policies: None,
            workload: WorkloadConfig::default(),
            tls: TlsConfig::default(),
            workload_issuers: vec![],
            trust_domains: ClassTrustDomains::default(),
            proxy: ProxyListenConfig::default(),
            leases: LeasesConfig::default(),
            governance: GovernanceConfig::default(),
            federation: vec![],
            ssf_transmitters: vec![],
        }
    }
}

/// The configured backend.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite(PathBuf),
    /// The connection URL (may hold a password: never log it, use [`Config::store_display`]).
    Postgres(String),
}

impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            StoreKind::Postgres(u) => write!(f, "Postgres({})", remit_store::postgres::redact_url(u)),
        }
    }
}

/// Where the admin listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The default admin socket's name inside the data directory.
pub const ADMIN_SOCKET_FILE: &str = "admin.sock";

/// The config file's name inside the data directory.
pub const CONFIG_FILE: &str = "remit.toml";

impl Config {
    /// Reads `<data_dir>/remit.toml` if it exists, then applies `REMIT_*` overrides from `env`.
    pub fn load(data_dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: path.display().to_string(), source }),
        };
        cfg.data_dir = data_dir.to_path_buf();
        if let Some(v) = env("REMIT_LISTEN") {
            cfg.listen = v.parse().map_err(|e| ConfigError::Value { key: "REMIT_LISTEN", message: format!("{e}") })?;
        }
        if let Some(v) = env("REMIT_STORE") {
            cfg.store = v;
        }
        if let Some(v) = env("REMIT_TRUST_DOMAIN") {
            cfg.trust_domain = v;
        }
        if let Some(v) = env("REMIT_ISSUER") {
            cfg.issuer = Some(v);
        }
        if let Some(v) = env("REMIT_ADMIN_LISTEN") {
            cfg.admin_listen = Some(v);
        }
        if let Some(v) = env("REMIT_PROXY_LISTEN") {
            cfg.proxy.listen =
                Some(v.parse().map_err(|e| ConfigError::Value { key: "REMIT_PROXY_LISTEN", message: format!("{e}") })?);
        }
        if let Some(v) = env("REMIT_TLS_CERT") {
            cfg.tls.cert = Some(PathBuf::from(v));
        }
        if let Some(v) = env("REMIT_TLS_KEY") {
            cfg.tls.key = Some(PathBuf::from(v));
        }
        if let Some(v) = env("REMIT_WORKLOAD_SOCKET") {
            cfg.workload.socket = Some(v);
        }
        if let Some(v) = env("REMIT_LOG_FORMAT") {
            cfg.log_format = v;
        }
        cfg.leases.check()?;
        cfg.governance.check()?;
        if let Some(u) = &cfg.proxy.public_url
            && remit_core::proxy::split_upstream(u).is_err()
        {
            return Err(ConfigError::Value {
                key: "proxy.public_url",
                message: "an absolute http(s) URL without query or fragment".into(),
            });
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })
    }

    pub fn issuer(&self) -> String {
        self.issuer.clone().unwrap_or_else(|| format!("{}://{}", self.scheme(), self.listen))
    }

    /// `https` when the public listener speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.cert.is_some() || self.tls.key.is_some() { "https" } else { "http" }
    }

    /// The TLS certificate and key files (relative paths under the data directory), if TLS is
    /// configured; one without the other is an error.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let under = |p: &PathBuf| if p.is_absolute() { p.clone() } else { self.data_dir.join(p) };
        match (&self.tls.cert, &self.tls.key) {
            (None, None) => Ok(None),
            (Some(c), Some(k)) => Ok(Some((under(c), under(k)))),
            _ => Err(ConfigError::Value {
                key: "tls",
                message: "set both `cert` and `key` (or neither, for plain HTTP)".into(),
            }),
        }
    }

    /// Where browsers reach Remit, without a trailing `/`.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| self.issuer()).trim_end_matches('/').to_owned()
    }

    pub fn kek_path(&self) -> PathBuf {
        self.kek_file.clone().unwrap_or_else(|| self.data_dir.join("kek"))
    }

    /// Where the admin listener binds, if anywhere; refuses a non-loopback address.
    pub fn admin_listen_kind(&self) -> Result<Option<AdminListen>, ConfigError> {
        let bad = |message: String| ConfigError::Value { key: "admin_listen", message };
        let v = match self.admin_listen.as_deref() {
            None => return Ok(Some(AdminListen::Unix(self.data_dir.join(ADMIN_SOCKET_FILE)))),
            Some("off") => return Ok(None),
            Some(v) => v,
        };
        if let Some(p) = v.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(bad("`unix:` needs a path".into()));
            }
            return Ok(Some(AdminListen::Unix(PathBuf::from(p))));
        }
        let addr: SocketAddr = v.parse().map_err(|_| bad(format!("`{v}` is not `IP:PORT`, `unix:PATH` or `off`")))?;
        if !addr.ip().is_loopback() {
            return Err(bad(format!("`{v}` is not a loopback address; the admin listener is for this machine only")));
        }
        Ok(Some(AdminListen::Tcp(addr)))
    }

    /// Where the Workload API listens, if anywhere.
    pub fn workload_socket(&self) -> Option<PathBuf> {
        match self.workload.socket.as_deref() {
            None => Some(self.data_dir.join(WORKLOAD_SOCKET_FILE)),
            Some("off") => None,
            Some(p) => Some(PathBuf::from(p.strip_prefix("unix://").unwrap_or(p))),
        }
    }

    /// Which backend `store` names.
    pub fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        let s = self.store.as_str();
        if s == "sqlite" {
            return Ok(StoreKind::Sqlite(self.data_dir.join("remit.db")));
        }
        if let Some(p) = s.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            return Ok(StoreKind::Sqlite(PathBuf::from(p)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreKind::Postgres(s.to_owned()));
        }
        Err(ConfigError::Value {
            key: "store",
            message: format!(
                "`{}` is not supported (use `sqlite`, `sqlite:PATH` or `postgres://…`)",
                remit_store::postgres::redact_url(s)
            ),
        })
    }

    /// `store` with any password removed, for logs.
    pub fn store_display(&self) -> String {
        remit_store::postgres::redact_url(&self.store)
    }

    pub fn core_limits(&self) -> remit_core::rules::Limits {
        remit_core::rules::Limits {
            hard_max_task_ttl_secs: self.limits.hard_max_task_ttl.as_secs(),
            default_task_ttl_secs: self.limits.default_task_ttl.as_secs(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n", "t").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err = Config::parse("[limits]\nmax_bodybytes = 3\n", "t").unwrap_err();
        assert!(err.to_string().contains("max_bodybytes"), "{err}");
    }

    #[test]
    fn durations_and_overrides() {
        let c = Config::parse("[limits]\ninstance_ttl = \"10m\"\n", "t").unwrap();
        assert_eq!(c.limits.instance_ttl, Duration::from_secs(600));
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(dir.path(), |k| (k == "REMIT_LISTEN").then(|| "127.0.0.1:9999".into())).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.issuer(), "http://127.0.0.1:9999");
        assert!(Config::load(dir.path(), |k| (k == "REMIT_LISTEN").then(|| "nope".into())).is_err());
    }

    #[test]
    fn admin_listener_is_local_only() {
        let mut c = Config::default();
        assert_eq!(c.admin_listen_kind().unwrap(), Some(AdminListen::Unix(c.data_dir.join(ADMIN_SOCKET_FILE))));
        c.admin_listen = Some("off".into());
        assert_eq!(c.admin_listen_kind().unwrap(), None);
        c.admin_listen = Some("127.0.0.1:7879".into());
        assert!(matches!(c.admin_listen_kind().unwrap(), Some(AdminListen::Tcp(_))));
        c.admin_listen = Some("0.0.0.0:7879".into());
        assert!(c.admin_listen_kind().unwrap_err().to_string().contains("loopback"));
        c.admin_listen = Some("unix:/tmp/x.sock".into());
        assert_eq!(c.admin_listen_kind().unwrap(), Some(AdminListen::Unix("/tmp/x.sock".into())));
    }

    #[test]
    fn store_kinds_and_redaction() {
        let mut c = Config::default();
        assert!(matches!(c.store_kind().unwrap(), StoreKind::Sqlite(_)));
        c.store = "postgres://remit:s3cret@db:5432/remit".into();
        assert_eq!(c.store_kind().unwrap(), StoreKind::Postgres(c.store.clone()));
        assert!(!format!("{:?} {}", c.store_kind().unwrap(), c.store_display()).contains("s3cret"));
        c.store = "mysql://u:s3cret@h/db".into();
        let e = c.store_kind().unwrap_err().to_string();
        assert!(e.contains("not supported") && !e.contains("s3cret"), "{e}");
    }
}
