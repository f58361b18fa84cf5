//! RFC 8693 token exchange: a task trades its own token for a credential for one tool.
//!
//! The order of checks follows RFC 8693 §2.2.2: the request's form (`invalid_request`), the
//! subject (and actor) token (`invalid_request`), the target (`invalid_target`), the scopes
//! (`invalid_scope`). Then each scope is decided by the policy as the Cedar action of the same
//! name on `Tool::"<name>"`, with the task's full context, exactly as `/v1/decisions` would;
//! denied scopes are dropped (the response's `scope` says so), a scope asked for by name that
//! needs a human's approval stops the exchange with an error naming the approval request
//! (without a `scope` parameter every scope the tool accepts is considered, and those needing
//! approval are left out without opening a request). The credential
//! lives at most the tool's max TTL and never past its task; its row is written with its
//! audit record, and it is live only while its task is.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::ids::{CredentialId, SpiffeId, Subject, ToolName};
use remit_core::rules::{self, Liveness};
use remit_core::tool::{self, Allowance, Credential, ExchangeError, Tool};
use remit_store::{StoreError, TaskSnapshot};
use remit_token::{Actor, Claims, Confirmation, RemitClaims, SvidKind, jwt};
use serde_json::{Map, Value};

use crate::app::App;
use crate::caller::Caller;
use crate::error::{Error, OAuthError};
use crate::metrics::Metrics;
use crate::pdp::{ActionRef, Party, TaskCall, Verdict};

/// The grant type of RFC 8693.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token exchange request, as parsed from the form (repeated `audience`/`resource` kept).
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest {
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub audience: Vec<String>,
    pub resource: Vec<String>,
    pub scope: Option<String>,
    pub requested_token_type: Option<String>,
    /// Remit's extension: approval requests a human approved for scopes of this exchange.
    pub approvals: Vec<String>,
    /// The request's `DPoP` proof (RFC 9449), if any: the credential is bound to its key.
    pub dpop_proof: Option<String>,
}

/// What was issued.
#[derive(Debug, Clone)]
pub struct Exchanged {
    pub token: String,
    pub expires_in: i64,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// Whether the grant is narrower than the scopes asked for.
    pub narrowed: bool,
    /// Bound to a DPoP key (`token_type: DPoP`).
    pub bound: bool,
}

fn invalid_request(m: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_request", m)
}
fn invalid_target(m: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_target", m)
}
fn invalid_scope(m: impl Into<String>) -> OAuthError {
    OAuthError::new("invalid_scope", m)
}

impl App {
    /// Runs one token exchange.
    pub async fn exchange(&self, req: ExchangeRequest) -> Result<Exchanged, OAuthError> {
        let r = self.exchange_inner(req).await;
        let label = match &r {
            Ok(_) => "issued",
            Err(e) if e.service.is_some() => "error",
            Err(_) => "refused",
        };
        self.metrics.exchanges.get_or_create(&Metrics::label(label)).inc();
        r
    }

    async fn exchange_inner(&self, req: ExchangeRequest) -> Result<Exchanged, OAuthError> {
        // The form.
        let subject = req.subject_token.as_deref().ok_or_else(|| invalid_request("`subject_token` is required"))?;
        let st =
            req.subject_token_type.as_deref().ok_or_else(|| invalid_request("`subject_token_type` is required"))?;
        if st != TOKEN_TYPE_JWT && st != TOKEN_TYPE_ACCESS {
            return Err(invalid_request(format!(
                "`subject_token_type` must be `{TOKEN_TYPE_JWT}` or `{TOKEN_TYPE_ACCESS}` (a Remit task token)"
            )));
        }
        match (&req.actor_token, &req.actor_token_type) {
            (None, Some(_)) => return Err(invalid_request("`actor_token_type` is only allowed with `actor_token`")),
            (Some(_), None) => return Err(invalid_request("`actor_token_type` is required with `actor_token`")),
            (Some(_), Some(t)) if t != TOKEN_TYPE_JWT && t != TOKEN_TYPE_ACCESS => {
                return Err(invalid_request(format!("`actor_token_type` must be `{TOKEN_TYPE_JWT}`")));
            }
            _ => {}
        }
        if let Some(t) = &req.requested_token_type
            && t != TOKEN_TYPE_ACCESS
            && t != TOKEN_TYPE_JWT
        {
            return Err(invalid_request(format!(
                "`requested_token_type` must be `{TOKEN_TYPE_ACCESS}` or `{TOKEN_TYPE_JWT}`"
            )));
        }
        // The subject: a live task's own token, meant for Remit. A per-tool credential is of
        // another kind and is refused here, so a credential never buys another one.
        let (claims, snap) = self.subject_task(subject).await?;
        // DPoP: a proof binds the credential to its key; a bound subject token needs a proof
        // from its own key.
        let bad_proof = |e: String| OAuthError::new("invalid_dpop_proof", e);
        let proof = match &req.dpop_proof {
            Some(p) => {
                Some(self.dpop_proof(p, "POST", "/oauth2/token", None).await.map_err(|e| bad_proof(e.to_string()))?)
            }
            None => None,
        };
        if let Some(cnf) = &claims.cnf {
            let p = proof.as_ref().ok_or_else(|| {
                bad_proof("the subject token is DPoP-bound: a DPoP proof from its key is required".into())
            })?;
            let b = crate::service::dpop::Bound {
                jti: &claims.jti,
                jkt: &cnf.jkt,
                audience: "token-endpoint",
                subject: &claims.sub,
            };
            self.check_binding(&b, p).await.map_err(|e| match e {
                Error::Unauthenticated(m) => bad_proof(m),
                other => other.into(),
            })?;
        }
        let dpop_jkt = proof.map(|p| p.jkt);
        if let Some(actor) = &req.actor_token {
            self.check_actor(actor, &snap).await?;
        }
        // The target: exactly one tool.
        let tool = self.target_tool(&req.audience, &req.resource).await?;
        // The scopes.
        let requested = match req.scope.as_deref() {
            None => None,
            Some(s) => {
                let v = tool::parse_scope_param(s).map_err(|e| invalid_scope(e.to_string()))?;
                if v.is_empty() { None } else { Some(v) }
            }
        };
        let now = self.clock.now();
        let authority = &snap.task.delegation.authority;
        let allowance = Allowance {
            workflow_tools: &snap.workflow.allowed_tools,
            tools: authority.tools.as_ref(),
            scopes: authority.scopes.as_ref(),
        };
        let (scopes, exp) =
            tool::exchange(&snap.task, &tool, requested.as_deref(), &allowance, now).map_err(|e| match e {
                ExchangeError::UnknownScope { .. } | ExchangeError::ScopeNotDelegated(_) => {
                    invalid_scope(e.to_string())
                }
                ExchangeError::ToolDisabled(_)
                | ExchangeError::ToolNotAllowed(_)
                | ExchangeError::Classification { .. } => invalid_target(e.to_string()),
            })?;
        let explicit = requested.is_some();
        let granted = self.decide_scopes(&snap, &claims.sub, &tool, &scopes, &req.approvals, explicit).await?;
        let narrowed = granted.len() < scopes.len();
        self.issue(&snap, &claims, &tool, granted, narrowed, exp, dpop_jkt).await
    }

    /// The live task behind a subject token.
    async fn subject_task(&self, token: &str) -> Result<(Claims, TaskSnapshot), OAuthError> {
        let bad = |why: &str| invalid_request(format!("`subject_token` is not acceptable: {why}"));
        let claims = self
            .verify_jwt(token, Some(&self.cfg.audience), Some(SvidKind::Task))
            .await
            .map_err(|e| bad(&e.to_string()))?;
        let Some(Subject::Task { task, .. }) = self.subject_of(&claims) else {
            return Err(bad("it is not a task token of this trust domain"));
        };
        if claims.remit.task.as_deref() != Some(task.as_str()) {
            return Err(bad("its claims do not match its task"));
        }
        let snap = self
            .store
            .identity()
            .task_snapshot(&task)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| bad("unknown task"))?;
        match rules::task_liveness(&snap.task, &snap.workflow, &snap.agent, snap.instance.as_ref(), self.clock.now()) {
            Liveness::Active => Ok((claims, snap)),
            Liveness::Inactive(why) => Err(bad(why)),
        }
    }

    /// An actor token must be the live instance token of the instance that runs the task.
    async fn check_actor(&self, token: &str, snap: &TaskSnapshot) -> Result<(), OAuthError> {
        let bad = |why: &str| invalid_request(format!("`actor_token` is not acceptable: {why}"));
        let claims = self
            .verify_jwt(token, Some(&self.cfg.audience), Some(SvidKind::Instance))
            .await
            .map_err(|e| bad(&e.to_string()))?;
        let Some(Subject::Instance { instance, .. }) = self.subject_of(&claims) else {
            return Err(bad("it is not an instance token of this trust domain"));
        };
        if snap.task.instance.as_ref() != Some(&instance) {
            return Err(bad("it is not the instance running the subject's task"));
        }
        let inst = self.store.identity().instance(&instance).await.map_err(Error::from)?;
        match inst.map(|i| rules::instance_liveness(&i, &snap.agent, self.clock.now())) {
            Some(Liveness::Active) => Ok(()),
            _ => Err(bad("the instance is no longer active")),
        }
    }

    /// The one tool that `audience` (a tool name or audience URI) and `resource` (its
    /// audience URI) name.
    async fn target_tool(&self, audience: &[String], resource: &[String]) -> Result<Tool, OAuthError> {
        if audience.is_empty() && resource.is_empty() {
            return Err(invalid_target("name the tool with `audience` or `resource`"));
        }
        let mut found: Option<Tool> = None;
        for (v, by_name) in audience.iter().map(|a| (a, true)).chain(resource.iter().map(|r| (r, false))) {
            let unknown =
                || invalid_target(format!("`{}` is not a registered tool", remit_core::ids::truncate_for_error(v)));
            let t = match self.store.tools().tool_by_audience(v).await.map_err(Error::from)? {
                Some(t) => t,
                None if by_name => {
                    let name = ToolName::parse(v).map_err(|_| unknown())?;
                    self.store.tools().tool(&name).await.map_err(Error::from)?.ok_or_else(unknown)?
                }
                None => return Err(unknown()),
            };
            match &found {
                Some(f) if f.name != t.name => {
                    return Err(invalid_target("one exchange yields a credential for exactly one tool"));
                }
                _ => found = Some(t),
            }
        }
        found.ok_or_else(|| invalid_target("no tool named"))
    }

    /// Asks the policy about each scope; returns the granted ones (sorted), or the approval
    /// requests that must be decided first.
    async fn decide_scopes(
        &self,
        snap: &TaskSnapshot,
        spiffe_id: &str,
        tool: &Tool,
        scopes: &[String],
        approvals: &[String],
        explicit: bool,
    ) -> Result<Vec<String>, OAuthError> {
        let caller = Caller::Task {
            id: snap.task.id.clone(),
            spiffe_id: spiffe_id.to_owned(),
            snapshot: Box::new(snap.clone()),
            binding: None,
        };
        let mut granted = Vec::new();
        let mut pending = Vec::new();
        let mut refused = Vec::new();
        // A task held to a resource prefix gets a credential for what lies under it: the
        // policy is asked about that (the prefix as the call's `target`), and the credential
        // carries it for the tool to enforce.
        let context = match &snap.task.delegation.authority.resource_prefix {
            Some(p) => serde_json::json!({ "target": p }),
            None => Value::Null,
        };
        for scope in scopes {
            let approval = self.approval_for(approvals, snap, tool, scope).await?;
            let call = TaskCall {
                action: ActionRef { name: Some(scope.clone()), properties: None },
                resource: Party { etype: Some("Tool".into()), id: Some(tool.name.to_string()), properties: Map::new() },
                context: context.clone(),
                approval,
                // Asked for by name: a scope that needs approval opens a request. Not asked
                // for (the default of every scope): it is left out without paging anyone.
                no_approval_request: !explicit,
                issuing: Some((tool.class, self.class_trust_domain(tool.class).to_string())),
                bind: None,
            };
            let answer = self.pdp.decide_task(&caller, call, Some((snap.clone(), spiffe_id.to_owned()))).await?;
            match answer.verdict() {
                Verdict::Allow => granted.push(scope.clone()),
                Verdict::ApprovalRequired if !explicit => {}
                Verdict::ApprovalRequired | Verdict::Pending => {
                    pending.push((scope.clone(), answer.approval.map(|a| a.id).unwrap_or_default()));
                }
                Verdict::Deny => {
                    let why = answer.decision.errors.first().cloned().unwrap_or_else(|| "denied by policy".into());
                    refused.push(format!("`{scope}`: {why}"));
                }
            }
        }
        if !pending.is_empty() {
            let list: Vec<String> = pending.iter().map(|(s, id)| format!("`{s}` (approval `{id}`)")).collect();
            let mut e = invalid_scope(format!(
                "a human must approve {} first; retry with `approval` set to the approved request's id",
                list.join(", ")
            ));
            e.approvals = pending.into_iter().map(|(_, id)| id).collect();
            return Err(e);
        }
        if granted.is_empty() {
            return Err(invalid_scope(format!(
                "the policy grants none of the scopes asked for ({})",
                refused.join("; ")
            )));
        }
        Ok(granted)
    }

    /// Of the approvals presented, the one whose call is this scope of this tool for this task.
    async fn approval_for(
        &self,
        presented: &[String],
        snap: &TaskSnapshot,
        tool: &Tool,
        scope: &str,
    ) -> Result<Option<String>, OAuthError> {
        for id in presented {
            let Ok(aid) = remit_core::ids::ApprovalId::parse(id) else {
                return Err(invalid_request(format!(
                    "`{}` is not an approval id",
                    remit_core::ids::truncate_for_error(id)
                )));
            };
            let Some(a) = self.store.approvals().get(&aid).await.map_err(Error::from)? else { continue };
            let call: Value = serde_json::from_str(&a.request).unwrap_or(Value::Null);
            if a.task.as_ref() == Some(&snap.task.id)
                && call["action"]["name"] == scope
                && call["resource"]["type"] == "Tool"
                && call["resource"]["id"] == tool.name.as_str()
            {
                return Ok(Some(id.clone()));
            }
        }
        Ok(None)
    }

    /// RFC 8693 §4.1: `sub` is where the authority comes from — the root task of the
    /// delegation chain — and `act` the acting chain, outermost the current task, each prior
    /// hop nested inside (absent for a root task acting on its own authority).
    fn principal_and_actors(&self, t: &remit_core::model::Task, own: &str) -> (String, Option<Actor>) {
        let spiffe = |id: &remit_core::ids::TaskId| SpiffeId::task(&self.trust_domain, &t.workflow, id).to_string();
        let chain = &t.delegation.chain;
        // Under a human's grant the authority is theirs: `sub` is the human, and every task
        // of the chain, the root included, is an actor.
        if let Some(h) = &t.delegation.on_behalf_of {
            let actors: Vec<String> =
                std::iter::once(own.to_owned()).chain(chain.iter().rev().map(|h| spiffe(&h.task))).collect();
            return (h.to_string(), Actor::nest(&actors));
        }
        let Some(root) = chain.first() else { return (own.to_owned(), None) };
        // Outermost first: this task, then its ancestors from the nearest up to the root's child.
        let actors: Vec<String> =
            std::iter::once(own.to_owned()).chain(chain.iter().skip(1).rev().map(|h| spiffe(&h.task))).collect();
        (spiffe(&root.task), Actor::nest(&actors))
    }

    /// Mints the credential and records it with its audit record.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        snap: &TaskSnapshot,
        subject: &Claims,
        tool: &Tool,
        scopes: Vec<String>,
        narrowed: bool,
        exp: remit_core::time::UnixMillis,
        jkt: Option<String>,
    ) -> Result<Exchanged, OAuthError> {
        let now = self.clock.now();
        let t = &snap.task;
        let id = CredentialId::from_random(self.random.bytes16());
        let scope = scopes.join(" ");
        let (sub, act) = self.principal_and_actors(t, &subject.sub);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub,
            aud: vec![tool.audience.clone()],
            exp: exp.secs(),
            iat: now.secs(),
            jti: id.to_string(),
            scope: Some(scope.clone()),
            act,
            cnf: jkt.clone().map(|jkt| Confirmation { jkt }),
            remit: RemitClaims {
                kind: SvidKind::Tool,
                agent: t.agent.to_string(),
                instance: t.instance.as_ref().map(ToString::to_string),
                workflow: Some(t.workflow.to_string()),
                task: Some(t.id.to_string()),
                intent_hash: Some(t.intent_hash.clone()),
                sensitivity: Some(t.sensitivity.as_str().to_owned()),
                tool: Some(tool.name.to_string()),
                on_behalf_of: t.delegation.on_behalf_of.as_ref().map(ToString::to_string),
                resource_prefix: t.delegation.authority.resource_prefix.clone(),
                trust_domain: Some(self.class_trust_domain(tool.class).to_string()),
            },
        };
        // Signed in the tool class's trust domain (its own keys when it has one).
        let token = jwt::mint(self.credential_keyring(tool.class)?.signer(), &claims);
        let cred = Credential {
            id: id.clone(),
            task: t.id.clone(),
            tool: tool.name.clone(),
            scopes,
            jkt: jkt.clone(),
            issued_at: now,
            expires_at: exp,
            revoked_at: None,
        };
        let audit = AuditEvent::new(now, subject.sub.clone(), AuditAction::TokenExchange)
            .workflow(&t.workflow)
            .task(&t.id)
            .agent(&t.agent)
            .detail([
                ("jti", id.as_str().into()),
                ("tool", tool.name.as_str().into()),
                ("audience", tool.audience.clone().into()),
                ("scope", scope.clone().into()),
                ("narrowed", narrowed.into()),
                ("expires_at_ms", exp.0.into()),
                ("jkt", jkt.clone().into()),
                ("trust_domain", self.class_trust_domain(tool.class).as_str().into()),
            ]);
        match self.store.tools().issue_credential(cred, audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(m)) => {
                return Err(invalid_request(format!("`subject_token` is not acceptable: {m}")));
            }
            Err(e) => return Err(Error::from(e).into()),
        }
        self.metrics.tokens_issued.get_or_create(&Metrics::label("tool")).inc();
        Ok(Exchanged {
            token,
            expires_in: (exp.0 - now.0).div_euclid(1000).max(0),
            scope,
            narrowed,
            bound: jkt.is_some(),
        })
    }
}
