//! Could the wrapped command read the admin credential or the key-encryption key?
//!
//! A child running as the same Unix user as `remit exec` can read whatever its parent can:
//! files, and the environment of the shell that started `exec` (`/proc/<pid>/environ`). So the
//! boundary is the Unix user. `exec` refuses to start a command that could read either secret
//! unless told it is a local demo (`--local-demo`); running it as another user (`--user`)
//! whose permissions do not reach them is the production shape.
//!
//! Permission checks follow the POSIX owner/group/other classes along the whole path (each
//! directory needs search permission). ACLs and capabilities are not considered: a child with
//! `CAP_DAC_READ_SEARCH` is as good as root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whom the child runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// `mode` grants `bit` (4 read, 1 search) to `who` by the owner/group/other classes.
fn allows(meta: &std::fs::Metadata, who: RunAs, bit: u32) -> bool {
    let mode = meta.mode();
    if meta.uid() == who.uid {
        mode & (bit << 6) != 0
    } else if meta.gid() == who.gid {
        mode & (bit << 3) != 0
    } else {
        mode & bit != 0
    }
}

/// Whether `who` can read the file at `path`.
pub fn readable_by(path: &Path, who: RunAs) -> bool {
    let Ok(abs) = path.canonicalize() else { return false };
    if who.uid == 0 {
        return true;
    }
    for dir in abs.ancestors().skip(1) {
        match std::fs::metadata(dir) {
            Ok(m) if allows(&m, who, 1) => {}
            _ => return false,
        }
    }
    std::fs::metadata(&abs).is_ok_and(|m| m.is_file() && allows(&m, who, 4))
}

/// What the child could reach, each as a short phrase for the refusal message.
pub fn exposures(admin_token: &Path, kek: &Path, who: RunAs, same_user: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (what, path) in [("the admin credential", admin_token), ("the key-encryption key", kek)] {
        if readable_by(path, who) {
            out.push(format!("{what} at {}", path.display()));
        }
    }
    if same_user {
        // Inherited from the shell that started us, whose environment the child can read.
        for var in ["REMIT_ADMIN_TOKEN", "REMIT_KEK"] {
            if std::env::var_os(var).is_some() {
                out.push(format!("${var} in the environment of the shell that started `remit exec`"));
            }
        }
    }
    out
}

/// The KEK file the server configuration in `data_dir` names (default `<data_dir>/kek`).
pub fn kek_path(data_dir: &Path) -> PathBuf {
    remit_server::config::Config::load(data_dir, |k| std::env::var(k).ok())
        .map(|c| c.kek_path())
        .unwrap_or_else(|_| data_dir.join("kek"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn permission_classes_along_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "x").unwrap();
        let me = RunAs { uid: nix::unistd::getuid().as_raw(), gid: nix::unistd::getgid().as_raw() };
        let stranger = RunAs { uid: 65534, gid: 65534 };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(readable_by(&f, me));
        assert!(!readable_by(&f, stranger) || me.uid == 65534);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by(&f, stranger));
        // A closed directory on the way hides a world-readable file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!readable_by(&f, stranger) || me.uid == 65534);
        assert!(readable_by(&f, RunAs { uid: 0, gid: 0 }), "root reads everything");
        assert!(!readable_by(&dir.path().join("missing"), me));
    }
}
