//! Files the control plane puts into a sandbox's workspace (a message's attachments), on
//! this machine by the server or in a sandbox pod by its supervisor. The workspace belongs
//! to the sandbox user and its sandbox may be running: files are made relative to a handle
//! on the workspace, never through a link, and always anew (a name the sandbox left there is
//! removed first), owned by the sandbox user.

use std::io::Write as _;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

/// Writes `work/attachments/NAME` anew (NAME a plain file name), owned by `uid`:`gid`.
pub fn write_attachment(
    work: &Path,
    name: &str,
    bytes: &[u8],
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    write_under(work, &format!("attachments/{name}"), bytes, uid, gid)
}

/// Writes `root/path` anew (`path` relative, of plain components), making the folders on
/// the way (mode 0700) and never following a link, all owned by `uid`:`gid`: a harness's
/// `home_files` in a sandbox pod's home.
pub fn write_under(
    root: &Path,
    path: &str,
    bytes: &[u8],
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    let invalid = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{path:?} is not a plain relative path"),
        )
    };
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(invalid());
    }
    let Some((file, folders)) = parts.split_last() else {
        return Err(invalid());
    };
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    let mut dir = rustix::fs::openat(CWD, root, dir_flags, Mode::empty())?;
    for folder in folders {
        match rustix::fs::mkdirat(&dir, *folder, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let made = rustix::fs::openat(&dir, *folder, dir_flags, Mode::empty())?;
                rustix::fs::fchown(&made, owner.0, owner.1)?;
                dir = made;
            }
            Err(rustix::io::Errno::EXIST) => {
                dir = rustix::fs::openat(&dir, *folder, dir_flags, Mode::empty())?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match rustix::fs::unlinkat(&dir, *file, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        &dir,
        *file,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::fchown(&fd, owner.0, owner.1)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_files_are_made_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        write_under(d.path(), ".pi/agent/models.json", b"{}", uid, gid).unwrap();
        assert_eq!(
            std::fs::read(d.path().join(".pi/agent/models.json")).unwrap(),
            b"{}"
        );
        // Again: replaced, not appended.
        write_under(d.path(), ".pi/agent/models.json", b"[]", uid, gid).unwrap();
        assert_eq!(
            std::fs::read(d.path().join(".pi/agent/models.json")).unwrap(),
            b"[]"
        );
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        assert!(write_under(d.path(), "link/x", b"no", uid, gid).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(
                write_under(d.path(), bad, b"no", uid, gid).is_err(),
                "{bad}"
            );
        }
    }
}
