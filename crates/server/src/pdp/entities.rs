//! Building the Cedar entities a decision needs: the subject and the resource from the
//! attribute store (by id or alias), with the request's properties filling attributes the
//! store lacks (stored attributes win, so a PEP cannot grant its user a role by claiming it),
//! and their ancestors.
//!
//! A stored entity is built once and reused while the store returns the same text (checked
//! on every use, so the cache needs no invalidation of its own), within a byte budget.
//! Limits fail closed: a hierarchy deeper than [`MAX_ANCESTORS`] is an error, never a
//! decision over part of it, and stored attributes that do not parse are corrupt data.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use remit_policy::Part;
use remit_store::StoredEntity;
use serde_json::{Map, Value, json};

use super::{Party, Pdp};
use crate::error::Error;

/// Most ancestors followed from one entity; more is an error (a `forbid` on a group past
/// the cap must never be skipped silently).
pub const MAX_ANCESTORS: usize = 64;

/// Entries in the built-entity cache before it is cleared (besides its byte budget).
const BUILT_ENTITIES_MAX: usize = 65_536;

/// Built entities by (type, id), with their approximate size.
#[derive(Default)]
pub struct BuiltCache {
    map: std::collections::HashMap<(String, String), Arc<BuiltEntity>>,
    bytes: usize,
}

/// A stored entity as Cedar needs it, with the stored text it was built from.
#[derive(Debug)]
pub struct BuiltEntity {
    stored: StoredEntity,
    part: Part,
    parents: Vec<(String, String)>,
}

/// Approximate memory of a built entity: its stored text, and Cedar's form of it (a few
/// times the text).
fn built_cost(key: &(String, String), s: &StoredEntity) -> usize {
    key.0.len() + key.1.len() + 4 * (s.attrs.len() + s.parents.len() + s.id.len()) + 256
}

pub(crate) fn type_and_id(v: &Value, what: &str) -> Result<(String, String), Error> {
    let t = v.get("type").and_then(Value::as_str).filter(|s| !s.is_empty());
    let i = v.get("id").and_then(Value::as_str);
    match (t, i) {
        (Some(t), Some(i)) => Ok((t.to_owned(), i.to_owned())),
        _ => Err(Error::Invalid(format!("{what} needs a string `type` and `id`"))),
    }
}

/// Action entities never enter a request's entity set, so there are no action groups at
/// decision time and the engine's slicing by action stays exact.
pub(crate) fn is_action_type(t: &str) -> bool {
    t == "Action" || t.ends_with("::Action")
}

fn corrupt(s: &StoredEntity, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored entity {}::{:?} has corrupt {what}: {e}", s.etype, s.id))
}

fn stored_attrs(s: &StoredEntity) -> Result<Map<String, Value>, Error> {
    serde_json::from_str(&s.attrs).map_err(|e| corrupt(s, "attributes", e))
}

/// An entity's parents as stored (JSON) and as (type, id) keys.
type Parents = (Vec<Value>, Vec<(String, String)>);

fn stored_parents(s: &StoredEntity) -> Result<Parents, Error> {
    let list: Vec<Value> = serde_json::from_str(&s.parents).map_err(|e| corrupt(s, "parents", e))?;
    let pairs = list
        .iter()
        .map(|p| type_and_id(p, "parent").map_err(|e| corrupt(s, "parents", e)))
        .collect::<Result<_, _>>()?;
    Ok((list, pairs))
}

impl Pdp {
    /// Builds the Cedar entity for a subject or resource of `cedar_type` into `into`, with its
    /// ancestors. Returns its canonical uid.
    pub(crate) async fn load_entity(
        &self,
        cedar_type: &str,
        e: &Party,
        into: &mut BTreeMap<(String, String), Part>,
    ) -> Result<remit_policy::EntityRef, Error> {
        if is_action_type(cedar_type) {
            return Err(Error::Invalid("a subject or resource cannot be an action".into()));
        }
        let id = e.id.clone().unwrap_or_default();
        let stored = self.store.policy().entity(cedar_type, &id).await?;
        let props = remit_policy::strip_nulls_map(e.properties.clone());
        let (canonical, parents) = match stored {
            // Nothing to merge: the stored entity as built before, if it has not changed.
            Some(s) if props.is_empty() => {
                let built = self.built_entity(cedar_type, s)?;
                let canonical = built.stored.id.clone();
                into.insert((cedar_type.to_owned(), canonical.clone()), built.part.clone());
                (canonical, built.parents.clone())
            }
            Some(s) => {
                let mut attrs = props;
                attrs.extend(stored_attrs(&s)?);
                let (list, parents) = stored_parents(&s)?;
                into.insert(
                    (cedar_type.to_owned(), s.id.clone()),
                    Part::Json(json!({"uid": {"type": cedar_type, "id": s.id}, "attrs": attrs, "parents": list})),
                );
                (s.id, parents)
            }
            None => {
                into.insert(
                    (cedar_type.to_owned(), id.clone()),
                    Part::Json(json!({"uid": {"type": cedar_type, "id": id}, "attrs": props, "parents": []})),
                );
                (id, vec![])
            }
        };
        let uid = remit_policy::uid(cedar_type, &canonical).map_err(Error::from)?;
        // Ancestors, each loaded once; past the cap, refuse rather than decide on a part.
        let mut queue: Vec<(String, String)> = parents;
        let mut seen: HashSet<(String, String)> = HashSet::new();
        while let Some(key) = queue.pop() {
            if seen.contains(&key) || into.contains_key(&key) {
                continue;
            }
            if seen.len() >= MAX_ANCESTORS {
                return Err(Error::Invalid(format!(
                    "`{cedar_type}::{canonical:?}` has more than {MAX_ANCESTORS} ancestors; Remit does not decide \
                     over part of a hierarchy"
                )));
            }
            seen.insert(key.clone());
            let (t, i) = &key;
            match self.store.policy().entity(t, i).await? {
                Some(s) => {
                    let built = self.built_entity(t, s)?;
                    queue.extend(built.parents.iter().cloned());
                    into.insert(key.clone(), built.part.clone());
                }
                None => {
                    into.insert(
                        key.clone(),
                        Part::Json(json!({"uid": {"type": t, "id": i}, "attrs": {}, "parents": []})),
                    );
                }
            }
        }
        Ok(uid)
    }

    /// The Cedar entity for a stored entity, built once and reused while the stored text is
    /// unchanged.
    fn built_entity(&self, cedar_type: &str, s: StoredEntity) -> Result<Arc<BuiltEntity>, Error> {
        let key = (cedar_type.to_owned(), s.id.clone());
        let hit = self.built.lock().ok().and_then(|m| m.map.get(&key).cloned());
        if let Some(b) = hit
            && b.stored.attrs == s.attrs
            && b.stored.parents == s.parents
        {
            return Ok(b);
        }
        let attrs = stored_attrs(&s)?;
        let (parents_json, parents) = stored_parents(&s)?;
        let v = json!({"uid": {"type": cedar_type, "id": s.id}, "attrs": attrs, "parents": parents_json});
        let part = remit_policy::direct::entity(&v).map_or(Part::Json(v), Part::Built);
        let b = Arc::new(BuiltEntity { stored: s, part, parents });
        let budget = self.limits.built_cache_bytes;
        let cost = built_cost(&key, &b.stored);
        if cost <= budget
            && let Ok(mut m) = self.built.lock()
        {
            if m.bytes + cost > budget || m.map.len() >= BUILT_ENTITIES_MAX {
                m.map.clear();
                m.bytes = 0;
            }
            if let Some(old) = m.map.insert(key.clone(), b.clone()) {
                m.bytes = m.bytes.saturating_sub(built_cost(&key, &old.stored));
            }
            m.bytes += cost;
        }
        Ok(b)
    }
}
