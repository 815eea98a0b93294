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
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    let dir = rustix::fs::openat(CWD, work, dir_flags, Mode::empty())?;
    match rustix::fs::mkdirat(&dir, "attachments", Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    // A link in its place makes this fail (NOFOLLOW), never write elsewhere.
    let sub = rustix::fs::openat(&dir, "attachments", dir_flags, Mode::empty())?;
    rustix::fs::fchown(&sub, owner.0, owner.1)?;
    match rustix::fs::unlinkat(&sub, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        &sub,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::fchown(&fd, owner.0, owner.1)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    f.sync_data()
}
