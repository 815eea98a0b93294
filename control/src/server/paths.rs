//! Directories of the data directory, and whether the sandbox user can reach them.

use std::path::Path;

/// The sandbox user binds its workdir from under the data directory, so every directory
/// above it must be traversable by others (`o+x`).
pub fn reachable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for d in dir.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "the sandbox user cannot reach the data directory {}: {} is mode {:o}; make it traversable (chmod o+x) or pick another --data-dir",
                dir.display(),
                d.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) with this mode: the data directory is traversable by the
/// sandbox user (to bind its workdir) but lists nothing.
pub fn private_dir(dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// A thread's name in files and labels: 24 hex digits of the SHA-256 of its key (a key is
/// any text).
pub fn thread_hash(thread_key: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thread_key.as_bytes());
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
