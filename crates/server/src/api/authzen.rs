//! OpenID AuthZEN Authorization API 1.0: single and batched access evaluations and the PDP
//! metadata document. Callers authenticate like every non-discovery endpoint (the admin
//! credential or a live instance token: a PEP is a workload too).

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};

use super::schema::{
    ActionSearchResponse, AuthZenConfiguration, EntitySearchResponse, EvaluationContext, EvaluationRequestDoc,
    EvaluationResponse, EvaluationsBatch, EvaluationsRequestDoc, EvaluationsResponse, Explanation, SearchPage,
    SearchRequestDoc, TaskApproval, TaskDecision,
};
use super::wire::{Action, Entity, TaskDecisionRequest};
use super::{AppState, Auth, Body};
use crate::api::error::{ApiError, ErrorBody};
use crate::pdp::{Answer, Evaluation, MAX_BATCH, SearchKind, Verdict};

fn part<T: serde::de::DeserializeOwned + Default>(v: Option<&Value>, name: &str) -> Result<Option<T>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("`{name}` is malformed: {e}"))),
        Some(_) => Err(ApiError::BadRequest(format!("`{name}` must be an object"))),
    }
}

/// One evaluation from `item`, each missing part taken from `defaults`.
fn evaluation(item: &Map<String, Value>, defaults: &Map<String, Value>) -> Result<Evaluation, ApiError> {
    let pick = |k: &str| item.get(k).filter(|v| !v.is_null()).or_else(|| defaults.get(k));
    let ev = Evaluation {
        subject: part::<Entity>(pick("subject"), "subject")?.unwrap_or_default().into(),
        action: part::<Action>(pick("action"), "action")?.unwrap_or_default().into(),
        resource: part::<Entity>(pick("resource"), "resource")?.unwrap_or_default().into(),
        context: pick("context").cloned().unwrap_or(Value::Null),
    };
    ev.check()?;
    Ok(ev)
}

fn object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::BadRequest("the request body must be a JSON object".into())),
    }
}

fn answer(a: &Answer) -> EvaluationResponse {
    let d = &a.decision;
    let context = |required: bool| EvaluationContext {
        approval_required: required.then_some(true),
        approval_pending: (!required).then_some(true),
        approval_id: a.approval.as_ref().map(|r| r.id.clone()),
        expires_at: a.approval.as_ref().and_then(|r| r.expires_at).map(|t| t.to_rfc3339()),
        approval: d.approval.clone(),
        policy_version: d.policy_version,
    };
    match a.verdict() {
        Verdict::Allow => EvaluationResponse { decision: true, context: None },
        Verdict::Deny => EvaluationResponse { decision: false, context: None },
        // Not allowed yet: tell the PEP why and which approval to wait for; once a human
        // approved it, the PEP retries the same call with `context.remit_approval` = the id.
        Verdict::ApprovalRequired => EvaluationResponse { decision: false, context: Some(context(true)) },
        // The retry came before any human decided: ask again once one has.
        Verdict::Pending => EvaluationResponse { decision: false, context: Some(context(false)) },
    }
}

/// The first answer, or a deny.
fn first(answers: &[Answer]) -> EvaluationResponse {
    answers.first().map(answer).unwrap_or(EvaluationResponse { decision: false, context: None })
}

/// Access evaluation: `{"decision": true|false}`; a deny is a 200.
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "AuthZEN", operation_id = "access_evaluation",
    request_body(content = EvaluationRequestDoc, description = "AuthZEN evaluation request"),
    responses((status = 200, body = EvaluationResponse, description = "the decision (a deny is a 200)"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token (a task asks at `/v1/decisions`)")),
    security(("bearer" = [])))]
pub async fn evaluation_one(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<EvaluationResponse>, ApiError> {
    let ev = evaluation(&object(body)?, &Map::new())?;
    let d = app.pdp.evaluate(&caller, &[ev], None).await?;
    Ok(Json(first(&d)))
}

/// Batched access evaluations with top-level defaults and `options.evaluations_semantic`
/// (`execute_all`, `deny_on_first_deny`, `permit_on_first_permit`).
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "AuthZEN", operation_id = "access_evaluations",
    request_body(content = EvaluationsRequestDoc, description = "AuthZEN evaluations request"),
    responses((status = 200, body = EvaluationsResponse,
                  description = "one decision per evaluation, or a single decision when there was no `evaluations` array"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field); more than 1000 items"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token (a task asks at `/v1/decisions`)")),
    security(("bearer" = [])))]
pub async fn evaluations(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<EvaluationsResponse>, ApiError> {
    let body = object(body)?;
    let items = match body.get("evaluations") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::BadRequest("`evaluations` must be an array".into())),
    };
    if items.is_empty() {
        // No array (or an empty one): a single evaluation from the top-level fields.
        let ev = evaluation(&Map::new(), &body)?;
        let d = app.pdp.evaluate(&caller, &[ev], None).await?;
        return Ok(Json(EvaluationsResponse::Single(first(&d))));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!("at most {MAX_BATCH} evaluations per request")));
    }
    let semantic = body
        .get("options")
        .and_then(|o| o.get("evaluations_semantic"))
        .and_then(Value::as_str)
        .unwrap_or("execute_all");
    let stop_on = match semantic {
        "execute_all" => None,
        "deny_on_first_deny" => Some(false),
        "permit_on_first_permit" => Some(true),
        other => return Err(ApiError::BadRequest(format!("unknown evaluations_semantic `{other}`"))),
    };
    let evs = items
        .iter()
        .map(|i| match i {
            Value::Object(m) => evaluation(m, &body),
            _ => Err(ApiError::BadRequest("each evaluation must be an object".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ds = app.pdp.evaluate(&caller, &evs, stop_on).await?;
    Ok(Json(EvaluationsResponse::Batch(EvaluationsBatch { evaluations: ds.iter().map(answer).collect() })))
}

/// PDP metadata (AuthZEN 1.0 discovery).
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "AuthZEN", operation_id = "authzen_configuration",
    responses((status = 200, body = AuthZenConfiguration, description = "PDP metadata")))]
pub async fn configuration(State(app): State<AppState>) -> Json<AuthZenConfiguration> {
    let base = app.issuer.clone();
    Json(AuthZenConfiguration {
        access_evaluation_endpoint: format!("{base}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{base}/access/v1/evaluations"),
        search_subject_endpoint: format!("{base}/access/v1/search/subject"),
        search_resource_endpoint: format!("{base}/access/v1/search/resource"),
        search_action_endpoint: format!("{base}/access/v1/search/action"),
        policy_decision_point: base,
    })
}

/// Decides one AuthZEN request and explains it: the outcome, the policy version, the policies
/// that decided (with their source, from that same version) and any evaluation errors. Admin
/// only. It changes nothing: no approval is opened or used; one `access.explain` record.
#[utoipa::path(post, path = "/v1/decisions/explain", tag = "decisions", operation_id = "explain_decision",
    request_body(content = EvaluationRequestDoc, description = "AuthZEN evaluation request"),
    responses((status = 200, body = Explanation, description = "the decision with its reasons and the deciding policies"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "not the admin")),
    security(("bearer" = [])))]
pub async fn explain(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<Explanation>, ApiError> {
    let ev = evaluation(&object(body)?, &Map::new())?;
    app.allow(
        &caller,
        remit_policy::admin::AdminAction::DecisionExplain,
        remit_policy::admin::AdminTarget::Installation,
    )
    .await?;
    let (d, engine) = app.pdp.explain(&caller, &ev).await?;
    let policies = d
        .reasons
        .iter()
        .filter_map(|id| remit_policy::policy_source(&engine, id).map(|src| (id.clone(), src)))
        .collect();
    Ok(Json(Explanation {
        outcome: d.outcome,
        decision: d.allowed(),
        policy_version: d.policy_version,
        reasons: d.reasons,
        errors: d.errors,
        approval: d.approval,
        policies,
    }))
}

/// Default and largest page of search results.
const SEARCH_PAGE_DEFAULT: usize = 1000;
const SEARCH_PAGE_MAX: usize = 10_000;

/// What a search found: the results and, for a paginated sequence, where it goes on.
type Found = (Vec<Value>, Option<SearchPage>);

async fn search(
    app: AppState,
    caller: crate::service::Caller,
    kind: SearchKind,
    body: Value,
) -> Result<Found, ApiError> {
    let body = object(body)?;
    let get = |k: &str| body.get(k).filter(|v| !v.is_null());
    let template = Evaluation {
        subject: part::<Entity>(get("subject"), "subject")?.unwrap_or_default().into(),
        action: part::<Action>(get("action"), "action")?.unwrap_or_default().into(),
        resource: part::<Entity>(get("resource"), "resource")?.unwrap_or_default().into(),
        context: get("context").cloned().unwrap_or(Value::Null),
    };
    // The searched entity's id is ignored; everything else the search needs is required.
    let need =
        |ok: bool, what: &str| if ok { Ok(()) } else { Err(ApiError::BadRequest(format!("`{what}` is required"))) };
    let has = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    need(has(&template.subject.etype), "subject.type")?;
    need(has(&template.resource.etype), "resource.type")?;
    if kind != SearchKind::Subject {
        need(has(&template.subject.id), "subject.id")?;
    }
    if kind != SearchKind::Resource {
        need(has(&template.resource.id), "resource.id")?;
    }
    if kind != SearchKind::Action {
        need(has(&template.action.name), "action.name")?;
    }
    let page = get("page");
    let token = page.and_then(|p| p.get("token")).and_then(Value::as_str).map(str::to_owned);
    let limit = page
        .and_then(|p| p.get("limit"))
        .and_then(Value::as_u64)
        .map(|l| (l as usize).clamp(1, SEARCH_PAGE_MAX))
        .unwrap_or(SEARCH_PAGE_DEFAULT);
    let paginated = token.as_deref().is_some_and(|t| !t.is_empty());
    let (results, next) = app.pdp.search(&caller, kind, template, token, limit).await?;
    // `page` marks a paginated sequence: present while there is more, and on the last page
    // of one; absent when the request carried no token and everything fit.
    if next.is_empty() && !paginated {
        return Ok((results, None));
    }
    Ok((results, Some(SearchPage { next_token: next })))
}

/// Subject search: which subjects (of `subject.type`) may do `action` on `resource`.
#[utoipa::path(post, path = "/access/v1/search/subject", tag = "AuthZEN",
    request_body(content = SearchRequestDoc, description = "AuthZEN subject search: `subject.type`, `action`, `resource`"),
    responses((status = 200, body = EntitySearchResponse, description = "the subjects found, and the page"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token (a task asks at `/v1/decisions`)")),
    security(("bearer" = [])))]
pub async fn search_subject(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<EntitySearchResponse>, ApiError> {
    let (results, page) = search(app, caller, SearchKind::Subject, body).await?;
    Ok(Json(EntitySearchResponse { results, page }))
}

/// Resource search: which resources (of `resource.type`) `subject` may do `action` on.
#[utoipa::path(post, path = "/access/v1/search/resource", tag = "AuthZEN",
    request_body(content = SearchRequestDoc, description = "AuthZEN resource search: `subject`, `action`, `resource.type`"),
    responses((status = 200, body = EntitySearchResponse, description = "the resources found, and the page"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token (a task asks at `/v1/decisions`)")),
    security(("bearer" = [])))]
pub async fn search_resource(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<EntitySearchResponse>, ApiError> {
    let (results, page) = search(app, caller, SearchKind::Resource, body).await?;
    Ok(Json(EntitySearchResponse { results, page }))
}

/// Action search: which actions `subject` may take on `resource`.
#[utoipa::path(post, path = "/access/v1/search/action", tag = "AuthZEN",
    request_body(content = SearchRequestDoc, description = "AuthZEN action search: `subject`, `resource` (no `action`)"),
    responses((status = 200, body = ActionSearchResponse, description = "the actions found, and the page"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task token (a task asks at `/v1/decisions`)")),
    security(("bearer" = [])))]
pub async fn search_action(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<Value>,
) -> Result<Json<ActionSearchResponse>, ApiError> {
    let (results, page) = search(app, caller, SearchKind::Action, body).await?;
    Ok(Json(ActionSearchResponse { results, page }))
}

/// Decides an agent's action with its task token as the principal and Remit's request-time
/// context (workflow, intent, data sensitivity and ceiling, time left, agent, instance,
/// delegation depth and chain, the tool and the tools already used) merged over the PEP's.
/// A token that is invalid, expired, revoked or under a kill switch is a deny. A call that
/// needs approval answers `outcome: approval_required` with `approval.id`; the retry with
/// `approval` set to that id, once a human approved it, is allowed exactly once.
#[utoipa::path(post, path = "/v1/decisions", tag = "decisions", request_body = TaskDecisionRequest,
    responses((status = 200, body = TaskDecision, description = "the decision (a deny, including an invalid task token, is a 200)"),
              (status = 400, body = ErrorBody, description = "invalid request (the message names the field)"),
              (status = 401, body = ErrorBody, description = "no valid bearer credential"),
              (status = 403, body = ErrorBody, description = "a task asking about another task's actions")),
    security(("bearer" = [])))]
pub async fn decide_task(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Body(req): Body<TaskDecisionRequest>,
) -> Result<Json<TaskDecision>, ApiError> {
    let (token, call) = req.into_call();
    let a = app.decide_task(&caller, token.as_deref(), call).await?;
    let outcome = a.verdict();
    let d = a.decision;
    let approval = a.approval.map(|r| TaskApproval {
        id: r.id,
        expires_at: r.expires_at.map(|t| t.to_rfc3339()),
        reasons: d.approval.clone(),
    });
    Ok(Json(TaskDecision {
        decision: d.allowed(),
        outcome,
        policy_version: d.policy_version,
        reasons: d.reasons,
        errors: d.errors,
        task: a.task,
        tool: a.tool,
        approval,
    }))
}
