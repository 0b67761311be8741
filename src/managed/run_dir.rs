//! The managed php-fpm's run directory: its pool config, socket and pid file.
//!
//! The daemon is often root, and php-fpm reads its whole configuration from
//! this directory, so nobody else may write there:
//!
//! - A directory that is given (`fpm.managed.run_dir`, `$RUNTIME_DIRECTORY`,
//!   `$XDG_RUNTIME_DIR/ws2fcgi`) is created with mode 0700 when missing, and
//!   refused when it is a symbolic link, is not a directory, is owned by
//!   another user than the daemon's effective one, or is writable by its
//!   group or others.
//! - Without one, a fresh directory is made under the temp dir
//!   (`ws2fcgi-XXXXXX`, mkdtemp: a new name, mode 0700) and removed when
//!   php-fpm stops (when the [`RunDir`] is dropped). A predictable name there could be created first by
//!   anyone.
//! - Files are written under a temporary name that is created exclusively
//!   (never through an existing file or link) and renamed into place.
//!
//! A directory ws2fcgi creates gets mode 0710 and `fpm.managed.socket_group`
//! as its group when that is set, so that group (nginx's) can reach the
//! socket; it still cannot list or write.

use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why the run directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The path is a symbolic link (it could point anywhere).
    #[error(
        "the php-fpm run directory {path} is a symbolic link; set fpm.managed.run_dir (--fpm-run-dir) to a real directory"
    )]
    Symlink {
        /// The directory.
        path: PathBuf,
    },
    /// The path exists and is not a directory.
    #[error(
        "the php-fpm run directory {path} is not a directory; remove it or set fpm.managed.run_dir (--fpm-run-dir)"
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another user owns the directory.
    #[error(
        "the php-fpm run directory {path} is owned by {owner}, not by {me}, the user ws2fcgi runs as; remove it, or set fpm.managed.run_dir (--fpm-run-dir) to a directory that user owns"
    )]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its owner, `name (uid N)`.
        owner: String,
        /// The daemon's effective user, `name (uid N)`.
        me: String,
    },
    /// The directory's group or others may write to it.
    #[error(
        "the php-fpm run directory {path} is writable by its group or others (mode {mode:04o}); run `chmod go-w {path}`, or set fpm.managed.run_dir (--fpm-run-dir) to a private directory"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `fpm.managed.socket_group` names no group.
    #[error("invalid setting `fpm.managed.socket_group`: {0}")]
    Group(String),
    /// Creating, inspecting or writing failed.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// What was being done (`create the php-fpm run directory`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause (kept out of `source` so a chain prints it once).
        cause: io::Error,
    },
}

/// A run directory that passed the checks.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Made for this run (mkdtemp): removed with everything in it at stop.
    fresh: bool,
}

impl RunDir {
    /// The configured directory, else `$RUNTIME_DIRECTORY` (its first entry),
    /// else `$XDG_RUNTIME_DIR/ws2fcgi`, checked (and created when missing);
    /// else a fresh private directory under the temp dir. A directory made
    /// here is given `socket_group`, if any (a name or a gid).
    pub fn prepare(
        configured: Option<&Path>,
        socket_group: Option<&str>,
    ) -> Result<Self, RunDirError> {
        let gid = socket_group
            .map(crate::listen::lookup_group)
            .transpose()
            .map_err(RunDirError::Group)?;
        let (path, fresh, created) =
            match configured.map(Path::to_owned).or_else(given_by_environment) {
                Some(path) => {
                    let created = ensure_private(&path)?;
                    (path, false, created)
                }
                None => {
                    let template = std::env::temp_dir().join("ws2fcgi-XXXXXX");
                    let path = nix::unistd::mkdtemp(&template).map_err(|e| RunDirError::Io {
                        action: "create a php-fpm run directory like",
                        path: template,
                        cause: e.into(),
                    })?;
                    (path, true, true)
                }
            };
        let dir = Self { path, fresh };
        if let (true, Some(gid)) = (created, gid) {
            use std::os::unix::fs::PermissionsExt as _;
            std::os::unix::fs::lchown(&dir.path, None, Some(gid))
                .and_then(|()| {
                    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o710))
                })
                .map_err(|cause| RunDirError::Io {
                    action: "give fpm.managed.socket_group to",
                    path: dir.path.clone(),
                    cause,
                })?;
        }
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` in the directory: a new temporary file (O_EXCL, never
    /// through a link), then renamed over `name`.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf, RunDirError> {
        let target = self.path.join(name);
        let temporary = self
            .path
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let io_error = |action, cause| RunDirError::Io {
            action,
            path: target.clone(),
            cause,
        };
        // A leftover of a crash of a process with our pid; unlink never follows a link.
        match std::fs::remove_file(&temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error("write", e)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&temporary)
            .map_err(|e| io_error("write", e))?;
        let written = file.write_all(contents).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, &target)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_error("write", e));
        }
        Ok(target)
    }
}

impl Drop for RunDir {
    /// Removes the directory if it was made for this run.
    fn drop(&mut self) {
        if self.fresh
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the php-fpm run directory");
        }
    }
}

/// `$RUNTIME_DIRECTORY` (systemd; colon-separated when there are several),
/// else `$XDG_RUNTIME_DIR/ws2fcgi`; absolute paths only.
fn given_by_environment() -> Option<PathBuf> {
    if let Some(dirs) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = std::env::split_paths(&dirs)
            .next()
            .filter(|p| p.is_absolute());
        if first.is_some() {
            return first;
        }
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|p| p.join("ws2fcgi"))
}

/// Creates `path` (mode 0700) when missing, then checks that it is a
/// directory of ours that nobody else may write to; says if it created it.
fn ensure_private(path: &Path) -> Result<bool, RunDirError> {
    let mut created = false;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            created = true;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|cause| RunDirError::Io {
                    action: "create the php-fpm run directory",
                    path: path.to_owned(),
                    cause,
                })?;
            // Checked again: someone may have made it in the meantime.
            std::fs::symlink_metadata(path).map_err(|cause| RunDirError::Io {
                action: "inspect the php-fpm run directory",
                path: path.to_owned(),
                cause,
            })?
        }
        Err(cause) => {
            return Err(RunDirError::Io {
                action: "inspect the php-fpm run directory",
                path: path.to_owned(),
                cause,
            });
        }
    };
    check(path, &meta, nix::unistd::Uid::effective().as_raw())?;
    Ok(created)
}

/// The checks on an existing run directory, for the daemon's uid `me`.
fn check(path: &Path, meta: &std::fs::Metadata, me: u32) -> Result<(), RunDirError> {
    let path = path.to_owned();
    if meta.file_type().is_symlink() {
        return Err(RunDirError::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(RunDirError::NotADirectory { path });
    }
    if meta.uid() != me {
        return Err(RunDirError::NotOurs {
            path,
            owner: describe_user(meta.uid()),
            me: describe_user(me),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RunDirError::Writable { path, mode });
    }
    Ok(())
}

/// `nobody (uid 65534)`, or `uid 1234` when the uid has no name.
fn describe_user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn me() -> u32 {
        nix::unistd::Uid::effective().as_raw()
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/run");
        let dir = RunDir::prepare(Some(&path), None).expect("created");
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        drop(dir);
        assert!(path.exists(), "a given directory is kept");
    }

    #[test]
    fn a_directory_made_for_a_socket_group_lets_that_group_in() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run");
        let gid = nix::unistd::getegid().as_raw();
        let dir = RunDir::prepare(Some(&path), Some(&gid.to_string())).expect("created");
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o710, gid));
        // An existing directory is not changed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        RunDir::prepare(Some(&path), Some(&gid.to_string())).expect("accepted");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        let err = RunDir::prepare(Some(&path), Some("no-such-group-ws2fcgi")).unwrap_err();
        assert!(
            err.to_string().contains("fpm.managed.socket_group"),
            "{err}"
        );
    }

    #[test]
    fn a_writable_or_linked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = RunDir::prepare(Some(&open), None).unwrap_err();
        assert!(
            matches!(err, RunDirError::Writable { mode: 0o777, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let err = RunDir::prepare(Some(&link), None).unwrap_err();
        assert!(matches!(err, RunDirError::Symlink { .. }), "{err}");
    }

    #[test]
    fn another_users_directory_is_refused_naming_the_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(tmp.path()).unwrap();
        let err = check(tmp.path(), &meta, me() + 1).unwrap_err();
        assert!(matches!(err, RunDirError::NotOurs { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("uid {}", me())), "{text}");
        assert!(text.contains(&tmp.path().display().to_string()), "{text}");
    }

    #[test]
    fn write_replaces_a_link_instead_of_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, "original").unwrap();
        let run = tmp.path().join("run");
        let dir = RunDir::prepare(Some(&run), None).unwrap();
        std::os::unix::fs::symlink(&target, run.join("php-fpm.conf")).unwrap();
        let written = dir.write("php-fpm.conf", b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
        assert!(
            !std::fs::symlink_metadata(&written)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(&run).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
