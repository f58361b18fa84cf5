//! The wrapped command's process: signals forwarded to it, and stopping it (with whatever it
//! started) when its task ends.
//!
//! Without a terminal the child gets a process group of its own, so signals and a stop reach
//! everything it started; with a terminal it stays in ours (so it keeps the terminal), and a
//! stop walks its descendants instead. A stop is SIGTERM to all of them, then SIGKILL to
//! whatever is left after the grace period. A process that double-forks out of both the group
//! and the tree escapes; a cgroup is the tool for that and is not used here.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::CliError;

/// The termination signals `remit exec` forwards to its child.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |k| signal(k).map_err(|e| CliError::Failed(format!("cannot install signal handler: {e}")));
        Ok(Signals {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
        })
    }
}

/// A running child and how to reach all of it.
pub struct Child {
    proc: tokio::process::Child,
    /// Its pid, kept after it is reaped (to clear its process group).
    pid: Option<Pid>,
    /// The child leads its own process group (no terminal).
    own_group: bool,
}

/// How supervision ended.
pub enum Ended {
    /// The child exited by itself (or after a forwarded signal): its exit code.
    Exited(u8),
    /// The task ended first (the reason); the child was stopped.
    TaskEnded(String),
}

impl Child {
    pub fn new(proc: tokio::process::Child, own_group: bool) -> Self {
        let pid = proc.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        Child { proc, pid, own_group }
    }

    fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// Sends `sig` to the child and everything it started that we can find.
    fn signal_all(&self, sig: Signal) {
        let Some(pid) = self.pid() else { return };
        let tree = descendants(pid.as_raw());
        if self.own_group {
            let _ = killpg(pid, sig);
        }
        let _ = kill(pid, sig);
        for p in tree {
            let _ = kill(Pid::from_raw(p), sig);
        }
    }

    /// Stops the child: SIGTERM everywhere, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        self.signal_all(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.proc.wait()).await.is_err() {
            self.signal_all(Signal::SIGKILL);
            let _ = self.proc.wait().await;
        } else {
            // The child is gone; anything it left in its group gets the same end.
            if self.own_group
                && let Some(pid) = self.pid()
            {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Every process whose parent chain leads to `root`, from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Waits for the child, forwarding termination signals (a second one kills it), and stops it
/// when `task_ended` resolves first.
pub async fn supervise(
    mut child: Child,
    mut s: Signals,
    task_ended: impl std::future::Future<Output = String>,
    grace: Duration,
) -> Result<Ended, CliError> {
    // With a terminal, Ctrl-C already reaches the child (same process group); forwarding
    // SIGINT as well would deliver it twice.
    let forward_int = child.own_group;
    let mut signalled = 0;
    tokio::pin!(task_ended);
    loop {
        let forward = tokio::select! {
            status = child.proc.wait() => {
                let status = status.map_err(|e| CliError::Failed(format!("waiting for child: {e}")))?;
                return Ok(Ended::Exited(exit_code(status)));
            }
            why = &mut task_ended => {
                child.stop(grace).await;
                return Ok(Ended::TaskEnded(why));
            }
            _ = s.int.recv() => forward_int.then_some(Signal::SIGINT),
            _ = s.term.recv() => Some(Signal::SIGTERM),
            _ = s.hup.recv() => Some(Signal::SIGHUP),
        };
        signalled += 1;
        if signalled > 1 {
            child.signal_all(Signal::SIGKILL);
        } else if let (Some(sig), Some(pid)) = (forward, child.pid()) {
            if child.own_group {
                let _ = killpg(pid, sig);
            } else {
                let _ = kill(pid, sig);
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = status.code() {
        u8::try_from(c & 0xff).unwrap_or(1)
    } else if let Some(s) = status.signal() {
        u8::try_from(128 + (s & 0x7f)).unwrap_or(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_its_own_children() {
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id() as i32;
        assert!(super::descendants(me).contains(&(c.id() as i32)));
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
