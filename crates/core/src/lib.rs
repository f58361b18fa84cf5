//! Remit's domain core.
//!
//! Everything here is pure: no tokio, no SQL, no HTTP. Functions take snapshots of state
//! (a workflow, an agent, a task) plus the current time and return a decision, a new value
//! or an error. The IO crates (`remit-store`, `remit-server`) call into this crate and carry
//! out what it decides.
//!
//! - [`ids`]: validated newtypes for every identifier (names, task ids, SPIFFE ids).
//! - [`time`]: the injected clock and the millisecond timestamp type.
//! - [`model`]: workflows, agents, instances, join tokens, tasks and their states.
//! - [`rules`]: the lifecycle rules (starting a task, legal transitions, token liveness).
//! - [`audit`]: audit events, the canonical encoding and the hash chain verifier.

pub mod audit;
pub mod error;
pub mod ids;
pub mod model;
pub mod rules;
pub mod time;

pub use error::DomainError;
