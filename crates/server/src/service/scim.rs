//! The SCIM 2.0 service provider (RFC 7644) an organisation's identity provider provisions
//! humans through: Users are humans (created active, updated, deactivated by `active: false`
//! or DELETE — sessions revoked and what they own orphaned, in the same transaction — and
//! brought back by `active: true`); Groups carry members, written into each member's groups.
//! The caller is the SCIM credential (checked by the handler); every write is audited as
//! `scim`.

use remit_core::audit::{AuditAction, AuditEvent};
use remit_core::human::{Human, HumanState, new_human};
use remit_core::ids::HumanId;
use remit_store::{HumanWrite, Membership, ScimKind, ScimResource, StoreError};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::scim::{self, Kind, LIST_SCHEMA, ScimError};

/// Most resources one page lists.
pub const MAX_RESULTS: u64 = 200;
/// The audit actor of every SCIM write.
const ACTOR: &str = "scim";

fn store_kind(k: Kind) -> ScimKind {
    match k {
        Kind::User => ScimKind::User,
        Kind::Group => ScimKind::Group,
    }
}

fn from_store(e: StoreError, if_match: bool) -> ScimError {
    match e {
        StoreError::NotFound { .. } => ScimError::status(404, "resource not found"),
        StoreError::Conflict(m) if m.contains("changed meanwhile") && if_match => {
            ScimError { status: 412, scim_type: None, detail: "the resource changed: read it again".into() }
        }
        StoreError::Conflict(m) => ScimError { status: 409, scim_type: Some("uniqueness"), detail: m },
        StoreError::Unavailable(m) => ScimError::status(503, m),
        e => {
            tracing::error!(error = %e, "scim: store failure");
            ScimError::status(500, "internal error")
        }
    }
}

/// A resource's JSON attributes as stored.
fn attrs_of(r: &ScimResource) -> Result<Map<String, Value>, ScimError> {
    match serde_json::from_str(&r.resource) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ScimError::status(500, "a stored SCIM resource is corrupt")),
    }
}

/// How a write changes a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Replace,
    Patch,
}

/// Parses `W/"<n>"` (or `"<n>"`).
pub fn etag_version(tag: &str) -> Option<u64> {
    tag.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}

impl App {
    fn scim_base(&self) -> String {
        format!("{}/scim/v2", self.cfg.public_url())
    }

    /// The resource for the wire, with `meta`.
    fn scim_out(&self, kind: Kind, r: &ScimResource, only: &[String], without: &[String]) -> Result<Value, ScimError> {
        let meta = json!({
            "resourceType": kind.as_str(),
            "created": r.created_at.to_rfc3339(),
            "lastModified": r.updated_at.to_rfc3339(),
            "location": format!("{}/{}/{}", self.scim_base(), kind.endpoint(), r.id),
            "version": format!("W/\"{}\"", r.version),
        });
        Ok(scim::render(kind, &attrs_of(r)?, &r.id, r.external_id.as_deref(), meta, only, without))
    }

    /// The discovery documents: `ServiceProviderConfig`, `ResourceTypes`, `Schemas` (and one of each).
    pub fn scim_discovery(&self, what: &str, id: Option<&str>) -> Result<Value, ScimError> {
        let base = self.scim_base();
        let kinds = [Kind::User, Kind::Group];
        let list = |items: Vec<Value>| json!({"schemas": [LIST_SCHEMA], "totalResults": items.len(), "startIndex": 1, "itemsPerPage": items.len(), "Resources": items});
        let found = |v: Option<Value>| v.ok_or_else(|| ScimError::status(404, "not found"));
        Ok(match (what, id) {
            ("ServiceProviderConfig", None) => scim::schema::service_provider_config(&base, MAX_RESULTS),
            ("ResourceTypes", None) => list(kinds.iter().map(|k| scim::schema::resource_type_doc(*k, &base)).collect()),
            ("ResourceTypes", Some(id)) => {
                found(kinds.iter().find(|k| k.as_str() == id).map(|k| scim::schema::resource_type_doc(*k, &base)))?
            }
            ("Schemas", None) => list(kinds.iter().map(|k| scim::schema::schema_doc(*k, &base)).collect()),
            ("Schemas", Some(id)) => {
                found(kinds.iter().find(|k| k.schema() == id).map(|k| scim::schema::schema_doc(*k, &base)))?
            }
            _ => return Err(ScimError::status(404, "not found")),
        })
    }

    pub async fn scim_get(
        &self,
        kind: Kind,
        id: &str,
        only: &[String],
        without: &[String],
    ) -> Result<(Value, u64), ScimError> {
        let r =
            self.store.scim().get(store_kind(kind), id).await.map_err(|e| from_store(e, false))?.ok_or_else(|| {
                ScimError::status(
                    404,
                    format!("{} `{}` not found", kind.as_str(), remit_core::ids::truncate_for_error(id)),
                )
            })?;
        Ok((self.scim_out(kind, &r, only, without)?, r.version))
    }

    pub async fn scim_list(
        &self,
        kind: Kind,
        filter: Option<&str>,
        start: Option<u64>,
        count: Option<u64>,
        only: &[String],
        without: &[String],
    ) -> Result<Value, ScimError> {
        let name = filter.map(|f| scim::parse_filter(kind, f)).transpose()?;
        let start = start.unwrap_or(1).max(1);
        let count = count.unwrap_or(100).min(MAX_RESULTS);
        let (total, list) =
            self.store.scim().list(store_kind(kind), name, start, count).await.map_err(|e| from_store(e, false))?;
        let items = list.iter().map(|r| self.scim_out(kind, r, only, without)).collect::<Result<Vec<_>, _>>()?;
        Ok(
            json!({"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start, "itemsPerPage": items.len(), "Resources": items}),
        )
    }

    /// POST: a new User (a human) or Group.
    pub async fn scim_create(&self, kind: Kind, body: &Value) -> Result<(Value, u64), ScimError> {
        let (attrs, external) = scim::read_body(kind, body)?;
        let id = match kind {
            Kind::User => self.scim_write_user(None, attrs.clone(), external.clone()).await?,
            Kind::Group => {
                let id = format!("g-{}", hex::encode(self.random.bytes16()));
                self.scim_write_group(None, &id, attrs.clone(), external.clone(), Vec::new()).await?;
                id
            }
        };
        self.scim_get(kind, &id, &[], &[]).await
    }

    /// PUT (`Update::Replace`: the body is the new attributes) or PATCH (`Update::Patch`:
    /// operations on the current ones, RFC 7644 §3.5.2); compare-and-set on `If-Match` when given.
    pub async fn scim_update(
        &self,
        kind: Kind,
        id: &str,
        body: &Value,
        if_match: Option<u64>,
        how: Update,
    ) -> Result<(Value, u64), ScimError> {
        let cur = self.scim_current(kind, id, if_match).await?;
        let (attrs, external) = match how {
            Update::Replace => scim::read_body(kind, body)?,
            Update::Patch => {
                let (mut attrs, mut external) = (attrs_of(&cur)?, cur.external_id.clone());
                scim::patch::apply(kind, &mut attrs, &mut external, body)?;
                (attrs, external)
            }
        };
        self.scim_write(kind, cur, attrs, external, if_match.is_some()).await?;
        self.scim_get(kind, id, &[], &[]).await
    }

    /// DELETE: a User's human is deactivated and kept; a Group's members lose it.
    pub async fn scim_delete(&self, kind: Kind, id: &str) -> Result<(), ScimError> {
        let cur = self.scim_current(kind, id, None).await?;
        let now = self.clock.now();
        let (action, members) = match kind {
            Kind::User => (AuditAction::HumanDeactivate, vec![]),
            Kind::Group => (AuditAction::GroupDelete, members_of(&attrs_of(&cur)?)),
        };
        let audit = AuditEvent::new(now, ACTOR, action)
            .reason("deleted by the identity provider (SCIM)")
            .detail([("scim_id", id.into()), ("name", cur.name.clone().into())]);
        self.store.scim().delete(store_kind(kind), id, members, now, audit).await.map_err(|e| from_store(e, false))?;
        Ok(())
    }

    async fn scim_current(&self, kind: Kind, id: &str, if_match: Option<u64>) -> Result<ScimResource, ScimError> {
        let cur = self
            .store
            .scim()
            .get(store_kind(kind), id)
            .await
            .map_err(|e| from_store(e, false))?
            .ok_or_else(|| ScimError::status(404, format!("{} not found", kind.as_str())))?;
        if if_match.is_some_and(|v| v != cur.version) {
            return Err(ScimError::status(412, "the resource changed: read it again"));
        }
        Ok(cur)
    }

    async fn scim_write(
        &self,
        kind: Kind,
        cur: ScimResource,
        attrs: Map<String, Value>,
        external: Option<String>,
        if_match: bool,
    ) -> Result<(), ScimError> {
        match kind {
            Kind::User => {
                self.scim_write_user(Some(cur), attrs, external).await.map(|_| ()).map_err(|e| match e.status {
                    409 if if_match => ScimError::status(412, "the resource changed: read it again"),
                    _ => e,
                })
            }
            Kind::Group => {
                let old = members_of(&attrs_of(&cur)?);
                let id = cur.id.clone();
                self.scim_write_group(Some(cur), &id, attrs, external, old).await
            }
        }
    }

    /// Creates (`cur` `None`) or replaces a User and its human; returns the User's id.
    async fn scim_write_user(
        &self,
        cur: Option<ScimResource>,
        attrs: Map<String, Value>,
        external: Option<String>,
    ) -> Result<String, ScimError> {
        let now = self.clock.now();
        let user_name = attrs["userName"].as_str().unwrap_or_default().to_owned();
        let email = scim::primary_email(&attrs)
            .or_else(|| user_name.contains('@').then(|| user_name.clone()))
            .map(|e| remit_core::rules::human_identity(&e));
        let display = scim::display_name(&attrs);
        let active = scim::active(&attrs);
        let invalid = |e: remit_core::DomainError| ScimError::bad("invalidValue", e.to_string());
        let taken = |detail: String| ScimError { status: 409, scim_type: Some("uniqueness"), detail };
        let later = |h: &Human| now.after(h.updated_at);
        // The human this User is (found or new), and what the write does to them.
        let (human, existing) = match &cur {
            None => {
                let email = email.clone().ok_or_else(|| {
                    ScimError::bad(
                        "invalidValue",
                        "a User needs an email: `emails`, or a `userName` that is an address",
                    )
                })?;
                match self.store.humans().by_email(&email).await.map_err(|e| from_store(e, false))? {
                    // An owner placeholder (or a human who signed in) becomes this User.
                    Some(h) if h.state != HumanState::Deactivated => {
                        let linked = self.store.scim().get(ScimKind::User, h.id.as_str()).await;
                        if linked.map_err(|e| from_store(e, false))?.is_some() {
                            return Err(taken(format!("a User with the email `{email}` exists")));
                        }
                        (h, true)
                    }
                    Some(_) => return Err(taken(format!("`{email}` belongs to a deactivated human"))),
                    None => {
                        let id = HumanId::from_random(self.random.bytes16());
                        let h = new_human(id, &email, &display, HumanState::Active, vec![], vec![], now)
                            .map_err(invalid)?;
                        (h, false)
                    }
                }
            }
            Some(c) => {
                let hid = HumanId::parse(&c.id).map_err(|_| ScimError::status(500, "a stored User id is corrupt"))?;
                let h = self.store.humans().get(&hid).await.map_err(|e| from_store(e, false))?;
                (h.ok_or_else(|| ScimError::status(500, "a User has no human"))?, true)
            }
        };
        let next = |state: HumanState| -> Result<Human, ScimError> {
            let email = email.clone().unwrap_or_else(|| human.email.clone());
            remit_core::rules::check_owner(&email, &remit_core::rules::Limits::default()).map_err(invalid)?;
            let display_name = if display.is_empty() { human.display_name.clone() } else { display.clone() };
            Ok(Human { email, display_name, state, deactivated_at: None, updated_at: later(&human), ..human.clone() })
        };
        let deactivated = human.state == HumanState::Deactivated;
        let write = match (existing, deactivated, active) {
            (false, _, true) => HumanWrite::Insert(human.clone()),
            (false, _, false) => {
                HumanWrite::Insert(Human { state: HumanState::Deactivated, deactivated_at: Some(now), ..human.clone() })
            }
            (true, false, true) => HumanWrite::Update { human: next(HumanState::Active)?, read_at: human.updated_at },
            (true, false, false) => {
                HumanWrite::Deactivate { reason: "deactivated by the identity provider (SCIM)".into() }
            }
            (true, true, true) => HumanWrite::Reactivate { human: next(HumanState::Active)? },
            (true, true, false) => HumanWrite::Keep,
        };
        let id = human.id.to_string();
        let r = ScimResource {
            id: id.clone(),
            kind: ScimKind::User,
            name: user_name,
            external_id: external,
            resource: Value::Object(attrs).to_string(),
            version: cur.as_ref().map_or(1, |c| c.version + 1),
            created_at: cur.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        let action = match (&cur, &write) {
            (_, HumanWrite::Deactivate { .. }) => AuditAction::HumanDeactivate,
            (None, _) => AuditAction::HumanCreate,
            _ => AuditAction::HumanUpdate,
        };
        let audit = AuditEvent::new(now, ACTOR, action).detail([
            ("human", id.clone().into()),
            ("email", human.email.clone().into()),
            ("active", active.into()),
        ]);
        let prev = cur.as_ref().map(|c| c.version);
        self.store.scim().write_user(r, prev, write, audit).await.map_err(|e| from_store(e, false))?;
        Ok(id)
    }

    /// Creates (`cur` `None`) or replaces a Group; its members must be humans Remit knows.
    async fn scim_write_group(
        &self,
        cur: Option<ScimResource>,
        id: &str,
        attrs: Map<String, Value>,
        external: Option<String>,
        old_members: Vec<HumanId>,
    ) -> Result<(), ScimError> {
        let now = self.clock.now();
        let name = attrs["displayName"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = remit_core::human::check_groups(vec![name.clone()]) {
            return Err(ScimError::bad("invalidValue", e.to_string()));
        }
        let mut members = Vec::new();
        for v in attrs.get("members").and_then(Value::as_array).into_iter().flatten() {
            let raw = v["value"].as_str().unwrap_or_default();
            let unknown = || {
                ScimError::bad(
                    "invalidValue",
                    format!("member `{}` is not a User", remit_core::ids::truncate_for_error(raw)),
                )
            };
            let hid = HumanId::parse(raw).map_err(|_| unknown())?;
            self.store.humans().get(&hid).await.map_err(|e| from_store(e, false))?.ok_or_else(unknown)?;
            if !members.contains(&hid) {
                members.push(hid);
            }
        }
        let renamed = cur.as_ref().is_some_and(|c| c.name != name);
        let m = Membership {
            // A renamed group is re-added to everyone still in it.
            add: members.iter().filter(|h| renamed || !old_members.contains(h)).cloned().collect(),
            remove: old_members.iter().filter(|h| !members.contains(h)).cloned().collect(),
            old_name: cur.as_ref().filter(|_| renamed).map(|c| c.name.clone()),
        };
        let r = ScimResource {
            id: id.to_owned(),
            kind: ScimKind::Group,
            name: name.clone(),
            external_id: external,
            resource: Value::Object(attrs).to_string(),
            version: cur.as_ref().map_or(1, |c| c.version + 1),
            created_at: cur.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        let audit = AuditEvent::new(now, ACTOR, AuditAction::GroupWrite).detail([
            ("scim_id", id.into()),
            ("group", name.into()),
            ("members", members.iter().map(ToString::to_string).collect::<Vec<_>>().into()),
        ]);
        let prev = cur.as_ref().map(|c| c.version);
        self.store.scim().write_group(r, prev, m, audit).await.map_err(|e| from_store(e, false))
    }
}

/// The member ids a Group's attributes list.
fn members_of(attrs: &Map<String, Value>) -> Vec<HumanId> {
    attrs
        .get("members")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(|x| x["value"].as_str()).filter_map(|v| HumanId::parse(v).ok()).collect())
        .unwrap_or_default()
}
