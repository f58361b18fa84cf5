//! Remit's domain core.
//!
//! Everything here is pure: no tokio, no SQL, no HTTP. Functions take snapshots of state
//! (a workflow, an agent, a task) plus the current time and return a decision, a new value
//! or an error. The IO crates (`remit-store`, `remit-server`) call into this crate and carry
//! out what it decides.
//!
//! - [`ids`]: validated newtypes for every identifier (names, task ids, SPIFFE ids).
//! - [`time`]: the injected clock and the millisecond timestamp type.
//! - [`random`]: injected randomness (the OS CSPRNG in production, seeded in tests).
//! - [`model`]: workflows, agents, instances, join tokens, tasks and their states.
//! - [`rules`]: the lifecycle rules (starting a task, legal transitions, token liveness).
//! - [`audit`]: audit events, the canonical encoding and the hash chain verifier.
//! - [`approval`]: the approval lifecycle and the proof a used approval yields.
//! - [`cascade`]: what a kill switch revokes, and the records that say so.
//! - [`containment`]: rules that pull a kill switch by themselves, and their incremental evaluator.
//! - [`delegation`]: supervisor → worker delegation that only narrows, and the workflow's trust rules.
//! - [`human`]: humans, their roles and sessions, and the sign-in and refresh rules.
//! - [`grant`]: human → agent grants, confirmed in a second step, ended with their human.
//! - [`recert`]: when agents, workflows and standing grants are due for recertification.
//! - [`lease`]: logins a dynamic engine makes for one task, and the rules of their revocation.
//! - [`tool`]: registered tools and the per-tool credentials tasks obtain by token exchange.
//! - [`workload`]: workload attestation selectors and registration entries (which agent a
//!   process or an external platform token is).

pub mod approval;
pub mod audit;
pub mod cascade;
pub mod containment;
pub mod delegation;
pub mod error;
pub mod grant;
pub mod human;
pub mod ids;
pub mod lease;
pub mod model;
pub mod proxy;
pub mod random;
pub mod recert;
pub mod rules;
pub mod secret;
pub mod time;
pub mod tool;
pub mod workload;

pub use error::DomainError;
