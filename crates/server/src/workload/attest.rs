//! Unix attestation: who is on the other end of the Workload API socket, from the kernel.
//!
//! The socket's peer credentials (`SO_PEERCRED`: uid, gid and pid as of `connect`) come from
//! the kernel and cannot be forged by the caller. The executable is read through `/proc`:
//! - the process's start time (`/proc/<pid>/stat`, field 22) is read before and after, and
//!   must not change (the pid was not reused meanwhile) and must not be later than the
//!   connection's acceptance (the pid was not reused between `connect` and now);
//! - `/proc/<pid>/exe` is resolved before and after it is opened and hashed, and must name
//!   the same file both times (the process did not `exec` meanwhile); a deleted executable
//!   yields no `unix:path` selector, only its hash;
//! - a selector that cannot be read (another user's process without `CAP_SYS_PTRACE`, a
//!   process that exited) fails the attestation: it never matches by default.
//!
//! Executables are hashed once per (device, inode, size, mtime, ctime) and cached.
//! Limits, stated in the docs: every script run by one interpreter shares that interpreter's
//! hash and path, so interpreted agents are told apart by uid/gid or a launcher binary.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use remit_core::workload::Selector;
use sha2::{Digest, Sha256};

/// Clock ticks per second in `/proc` (`USER_HZ`, 100 on every Linux architecture's ABI).
const USER_HZ: u64 = 100;
/// Largest executable hashed.
const MAX_EXE_BYTES: u64 = 1 << 30;
/// Hashes cached before the cache is cleared.
const DIGEST_CACHE_MAX: usize = 1024;

/// Why a caller could not be attested (logged and audited; the caller is told nothing more
/// than that it was refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("the socket peer's credentials are unavailable")]
    NoPeer,
    #[error("the process is gone")]
    Gone,
    #[error("the process was replaced during attestation")]
    Replaced,
    #[error("cannot read {0}")]
    Unreadable(&'static str),
}

/// The kernel's view of the socket peer, and when its connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// `/proc/uptime` at accept, in clock ticks.
    pub accepted_ticks: u64,
}

/// A process, as long as it lives: its pid and its start time.
pub type ProcessKey = (i32, u64);

/// An attested process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    pub key: ProcessKey,
    pub selectors: BTreeSet<Selector>,
}

/// Ticks since boot now.
pub fn uptime_ticks() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|u| u.parse::<f64>().ok()))
        .map(|secs| (secs * USER_HZ as f64) as u64)
        .unwrap_or(u64::MAX)
}

/// A process's start time in ticks since boot; `None` if it is gone.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (field 2) may hold spaces and parentheses: fields resume after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)`: state is field 3, so starttime (field 22) is the 20th of these.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Hashes of executables by file identity.
#[derive(Default)]
pub struct Digests(Mutex<HashMap<FileId, [u8; 32]>>);

/// A file's identity and version: device, inode, size, mtime and ctime (with nanoseconds).
type FileId = (u64, u64, u64, i64, i64, i64, i64);

impl Digests {
    fn digest(&self, file: &mut std::fs::File) -> Result<[u8; 32], AttestError> {
        let m = file.metadata().map_err(|_| AttestError::Unreadable("the executable"))?;
        let id = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
        if let Some(d) = self.0.lock().ok().and_then(|c| c.get(&id).copied()) {
            return Ok(d);
        }
        if m.size() > MAX_EXE_BYTES {
            return Err(AttestError::Unreadable("the executable (too large to hash)"));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|_| AttestError::Unreadable("the executable"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d: [u8; 32] = h.finalize().into();
        if let Ok(mut c) = self.0.lock() {
            if c.len() >= DIGEST_CACHE_MAX {
                c.clear();
            }
            c.insert(id, d);
        }
        Ok(d)
    }
}

/// Attests `peer` (blocking: reads `/proc` and may hash a file; run it off the async runtime).
pub fn attest(peer: &Peer, digests: &Digests) -> Result<Attested, AttestError> {
    let pid = peer.pid;
    if pid <= 0 {
        return Err(AttestError::NoPeer);
    }
    let before = start_ticks(pid).ok_or(AttestError::Gone)?;
    // A process that started after the connection was accepted reuses the caller's pid.
    // (One tick of slack: the accept time is read from `/proc/uptime`, rounded down.)
    if before > peer.accepted_ticks.saturating_add(1) {
        return Err(AttestError::Replaced);
    }
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let link = || std::fs::read_link(&exe).map_err(|_| AttestError::Unreadable("/proc/<pid>/exe"));
    let path_before = link()?;
    let mut file = std::fs::File::open(&exe).map_err(|_| AttestError::Unreadable("the executable"))?;
    let digest = digests.digest(&mut file)?;
    let path_after = link()?;
    if path_before != path_after || start_ticks(pid) != Some(before) {
        return Err(AttestError::Replaced);
    }
    let mut selectors =
        BTreeSet::from([Selector::unix_uid(peer.uid), Selector::unix_gid(peer.gid), Selector::unix_sha256(&digest)]);
    let path = path_after.to_string_lossy();
    if !path.ends_with(" (deleted)")
        && let Some(s) = Selector::unix_path(&path)
    {
        selectors.insert(s);
    }
    Ok(Attested { key: (pid, before), selectors })
}

/// Whether the process `key` names is still running.
pub fn alive(key: ProcessKey) -> bool {
    start_ticks(key.0) == Some(key.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attests_this_very_process() {
        let me = Peer { uid: 0, gid: 0, pid: std::process::id() as i32, accepted_ticks: uptime_ticks() };
        let a = attest(&me, &Digests::default()).unwrap();
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let want = Selector::unix_sha256(&Sha256::digest(&exe).into());
        assert!(a.selectors.contains(&want), "{:?}", a.selectors);
        assert!(a.selectors.iter().any(|s| s.as_str().starts_with("unix:path:/")));
        assert!(alive(a.key));
        // A connection accepted long before this process started is not this process's.
        let early = Peer { accepted_ticks: 0, ..me };
        assert_eq!(attest(&early, &Digests::default()), Err(AttestError::Replaced));
        assert_eq!(attest(&Peer { pid: i32::MAX, ..me }, &Digests::default()), Err(AttestError::Gone));
    }
}
