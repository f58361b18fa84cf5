//! The `SpiffeWorkloadAPI` gRPC service.
//!
//! Every call must carry the metadata `workload.spiffe.io: true` (else `InvalidArgument`,
//! checked by [`require_header`] before anything else) and come from an attested process
//! that matches a registration entry (else `PermissionDenied`, the same answer whatever the
//! reason). Streams send the full current state at once and again on every change: a
//! rotation at half an X.509-SVID's life, a key or CA rotation (bundles), and end with
//! `PermissionDenied` when the caller's instance ends (killed, its agent disabled). X.509
//! material is DER; bundles are keyed by trust-domain ID (`spiffe://<td>`). The WIT-SVID
//! profile is optional and answers `Unimplemented`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use remit_core::time::UnixMillis;
use remit_store::Change;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::PeerInfo;
use super::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use super::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, WitsvidRequest, WitsvidResponse,
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use super::sessions::{REFUSED, Session, Sessions};
use crate::app::App;
use crate::metrics::Metrics;

/// The security header every call carries.
const HEADER: &str = "workload.spiffe.io";
/// Most audiences one JWT-SVID request names, and the longest one.
const MAX_AUDIENCES: usize = 16;
const MAX_AUDIENCE_LEN: usize = 1024;
/// Longest JWT-SVID accepted for validation.
const MAX_SVID_LEN: usize = 16 * 1024;
/// While the change feed is down, how often a stream re-checks its caller.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Refuses calls without `workload.spiffe.io: true`.
#[allow(clippy::result_large_err)]
pub fn require_header(req: Request<()>) -> Result<Request<()>, Status> {
    match req.metadata().get(HEADER).and_then(|v| v.to_str().ok()) {
        Some("true") => Ok(req),
        _ => Err(Status::invalid_argument("security header missing from request")),
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct WorkloadApi {
    app: Arc<App>,
    sessions: Arc<Sessions>,
}

impl WorkloadApi {
    pub fn new(app: Arc<App>, sessions: Arc<Sessions>) -> Self {
        WorkloadApi { app, sessions }
    }

    async fn session<T>(&self, req: &Request<T>) -> Result<Arc<Session>, Status> {
        let info = req.extensions().get::<PeerInfo>().cloned().ok_or_else(|| Status::permission_denied(REFUSED))?;
        let r = self.sessions.identify(&self.app, &info).await.map_err(|_| Status::permission_denied(REFUSED));
        let label = if r.is_ok() { "attested" } else { "refused" };
        self.app.metrics.attestations.get_or_create(&Metrics::label(label)).inc();
        r
    }

    /// Streams `build`'s message now and whenever it may have changed, until the caller goes
    /// away, its instance ends (`PermissionDenied`) or the server stops.
    fn stream<T, F>(&self, s: Arc<Session>, build: F) -> Streamed<T>
    where
        T: Send + 'static,
        F: FnMut(&App, &Session) -> Result<(T, Option<UnixMillis>), Status> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(2);
        let (app, sessions) = (self.app.clone(), self.sessions.clone());
        tokio::spawn(drive(app, sessions, s, tx, build));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

async fn drive<T, F>(
    app: Arc<App>,
    sessions: Arc<Sessions>,
    s: Arc<Session>,
    tx: mpsc::Sender<Result<T, Status>>,
    mut build: F,
) where
    F: FnMut(&App, &Session) -> Result<(T, Option<UnixMillis>), Status>,
{
    let mut changes = app.store.subscribe();
    let mut stopping = app.stopping.subscribe();
    let mut federated = app.bundles.version();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.reset();
    // While the change feed is down (or we fell behind it), re-check on a timer.
    let mut polling = false;
    let mut send = true;
    let mut refresh_at: Option<UnixMillis> = None;
    loop {
        if send {
            let (msg, next) = match build(&app, &s) {
                Ok(m) => m,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            refresh_at = next;
            send = false;
        }
        let until_refresh =
            refresh_at.map(|t| Duration::from_millis(u64::try_from(t.0 - app.clock.now().0).unwrap_or(0)));
        let check = tokio::select! {
            c = changes.recv() => match c {
                Ok(Change::Keys) => { send = true; false }
                Ok(Change::Instance(i)) => i == s.instance,
                Ok(Change::Agent(a)) => a == s.agent,
                Ok(Change::FeedLost) => { polling = true; true }
                Ok(Change::Resync) => { polling = false; send = true; true }
                Err(RecvError::Lagged(_)) => { send = true; true }
                Ok(_) => false,
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(until_refresh.unwrap_or(Duration::MAX)), if until_refresh.is_some() => {
                send = true;
                true
            }
            _ = recheck.tick() => polling,
            r = federated.changed() => {
                // A federated bundle changed (the follower never stops while we run).
                send = r.is_ok();
                false
            }
            r = stopping.changed() => {
                let stop = r.is_err() || *stopping.borrow();
                if stop {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
                false
            }
            _ = tx.closed() => return,
        };
        if check && sessions.keep_alive(&app, &s).await.is_err() {
            let _ = tx.send(Err(Status::permission_denied(REFUSED))).await;
            return;
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "workload API");
    Status::internal("internal error")
}

/// Federated trust domains' X.509 bundles (concatenated DER), by trust-domain ID.
fn federated_x509(app: &App) -> HashMap<String, Vec<u8>> {
    app.bundles.all().into_iter().map(|(td, b)| (format!("spiffe://{td}"), b.x509.concat())).collect()
}

/// The X.509 bundles: this trust domain's CA certificates and every federated domain's.
fn x509_bundles(app: &App) -> Result<HashMap<String, Vec<u8>>, Status> {
    let ca = app.x509_authority().map_err(internal)?;
    let mut all = federated_x509(app);
    all.insert(format!("spiffe://{}", app.trust_domain), ca.roots.concat());
    Ok(all)
}

/// The JWT bundles: this trust domain's JWK Set (`use: jwt-svid`), each tool class's own
/// trust domain's, and every federated one.
fn jwt_bundles(app: &App) -> Result<HashMap<String, Vec<u8>>, Status> {
    let jwks = |ring: &remit_token::Keyring| {
        let doc = ring.spiffe_bundle(0, crate::api::discovery::BUNDLE_REFRESH_HINT_SECS);
        serde_json::to_vec(&serde_json::json!({ "keys": doc["keys"] })).map_err(internal)
    };
    let mut all: HashMap<String, Vec<u8>> =
        app.bundles.all().into_iter().map(|(td, b)| (format!("spiffe://{td}"), b.jwks_json.clone())).collect();
    all.insert(format!("spiffe://{}", app.trust_domain), jwks(&app.keyring())?);
    for (class, ring) in app.class_keys().iter() {
        all.insert(format!("spiffe://{}", app.class_trust_domain(*class)), jwks(ring)?);
    }
    Ok(all)
}

/// Soonest a stream re-issues an X.509-SVID (however short-lived the last one was).
const MIN_ROTATION: Duration = Duration::from_secs(1);

/// A fresh X.509-SVID message, and when to rotate it (half its life).
fn x509_message(app: &App, s: &Session) -> Result<(X509svidResponse, Option<UnixMillis>), Status> {
    let not_after = s.expires_at.lock().map(|e| *e).map_err(internal)?;
    let leaf =
        app.issue_x509_svid(s.spiffe_id.as_str(), not_after.max(app.clock.now().plus_secs(60))).map_err(internal)?;
    let now = app.clock.now();
    if leaf.not_after <= now {
        // The CA itself has expired: nothing valid can be handed out.
        tracing::error!("the X.509 CA has expired; rotate it (`remit keys rotate --x509`)");
        return Err(Status::unavailable("no valid X.509-SVID can be issued now"));
    }
    let min = now.0 + MIN_ROTATION.as_millis() as i64;
    let rotate = UnixMillis((now.0 + (leaf.not_after.0 - now.0) / 2).max(min));
    let ca = app.x509_authority().map_err(internal)?;
    let svid = X509svid {
        spiffe_id: s.spiffe_id.to_string(),
        x509_svid: leaf.chain.concat(),
        x509_svid_key: leaf.key_pkcs8,
        bundle: ca.roots.concat(),
        hint: s.hint.clone().unwrap_or_default(),
    };
    let federated_bundles = federated_x509(app);
    Ok((X509svidResponse { svids: vec![svid], crl: vec![], federated_bundles }, Some(rotate)))
}

/// The trust domain of a JWT's `sub`, read before any verification (only to pick the keys).
fn token_trust_domain(token: &str) -> Option<String> {
    let v = remit_token::jwt::unverified_claims(token)?;
    let id = remit_core::ids::SpiffeId::parse(v.get("sub")?.as_str()?).ok()?;
    Some(id.trust_domain().to_owned())
}

/// Struct form of JSON claims for `ValidateJWTSVIDResponse`.
fn to_struct(v: serde_json::Value) -> prost_types::Struct {
    fn value(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => {
                Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(value).collect() })
            }
            serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match v {
        serde_json::Value::Object(m) => {
            prost_types::Struct { fields: m.into_iter().map(|(k, v)| (k, value(v))).collect() }
        }
        _ => prost_types::Struct::default(),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;
    type FetchWITSVIDStream = Streamed<WitsvidResponse>;
    type FetchWITBundlesStream = Streamed<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let s = self.session(&req).await?;
        Ok(Response::new(self.stream(s, x509_message)))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let s = self.session(&req).await?;
        Ok(Response::new(
            self.stream(s, |app, _| Ok((X509BundlesResponse { crl: vec![], bundles: x509_bundles(app)? }, None))),
        ))
    }

    async fn fetch_jwtsvid(&self, req: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        let s = self.session(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.audience.len() > MAX_AUDIENCES || r.audience.iter().any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN) {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_AUDIENCES} audiences of 1-{MAX_AUDIENCE_LEN} bytes"
            )));
        }
        if !r.spiffe_id.is_empty() && r.spiffe_id != s.spiffe_id.as_str() {
            return Err(Status::permission_denied(REFUSED));
        }
        // A tool gets a credential by token exchange (decided, scoped, on record), never a
        // JWT-SVID minted for its audience.
        for a in &r.audience {
            if remit_core::tool::is_tool_audience(a)
                && self.app.store.tools().tool_by_audience(a).await.map_err(internal)?.is_some()
            {
                return Err(Status::invalid_argument(format!(
                    "`{a}` is a registered tool's audience: get its credential by token exchange"
                )));
            }
        }
        let now = self.app.clock.now();
        let inst_end = s.expires_at.lock().map(|e| *e).map_err(internal)?;
        let exp = now.plus_secs(self.app.cfg.workload.jwt_svid_ttl.as_secs()).min(inst_end);
        self.app.metrics.tokens_issued.get_or_create(&Metrics::label("jwt-svid")).inc();
        let svid = self.app.mint_instance_svid(&s.agent, &s.instance, &s.spiffe_id, r.audience, exp);
        let hint = s.hint.clone().unwrap_or_default();
        Ok(Response::new(JwtsvidResponse { svids: vec![Jwtsvid { spiffe_id: s.spiffe_id.to_string(), svid, hint }] }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let s = self.session(&req).await?;
        Ok(Response::new(self.stream(s, |app, _| Ok((JwtBundlesResponse { bundles: jwt_bundles(app)? }, None)))))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.session(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() || r.svid.len() > MAX_SVID_LEN {
            return Err(Status::invalid_argument("svid must be specified (at most 16 KiB)"));
        }
        let invalid = || Status::invalid_argument("the JWT-SVID is not valid for this audience");
        // Its (unverified) trust domain says whose keys verify it: ours, a federated
        // domain's, or nobody's.
        let td = token_trust_domain(&r.svid).ok_or_else(invalid)?;
        if td != self.app.trust_domain.as_str() {
            let fed = self.app.bundles.get(&td).ok_or_else(invalid)?;
            let now = self.app.clock.now().secs();
            let leeway = self.app.cfg.limits.clock_skew.as_secs();
            let (id, claims) = remit_token::oidc::verify_jwt_svid(&r.svid, &fed.jwks, &td, &r.audience, now, leeway)
                .map_err(|_| invalid())?;
            return Ok(Response::new(ValidateJwtsvidResponse {
                spiffe_id: id,
                claims: Some(to_struct(serde_json::Value::Object(claims))),
            }));
        }
        let i = self.app.introspect(&r.svid, None).await.map_err(internal)?;
        let claims = i.claims.ok_or_else(invalid)?;
        // An instance's or a task's bearer JWT-SVID; not a tool's credential (its tool
        // introspects it) and not a DPoP-bound token (its holder must prove its key).
        let bearer_svid = matches!(claims.remit.kind, remit_token::SvidKind::Instance | remit_token::SvidKind::Task);
        if !bearer_svid || claims.cnf.is_some() || !claims.aud.contains(&r.audience) {
            return Err(invalid());
        }
        let json = serde_json::to_value(&claims).map_err(internal)?;
        Ok(Response::new(ValidateJwtsvidResponse { spiffe_id: claims.sub, claims: Some(to_struct(json)) }))
    }

    async fn fetch_witsvid(&self, _: Request<WitsvidRequest>) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("the WIT-SVID profile is not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("the WIT-SVID profile is not supported"))
    }
}
