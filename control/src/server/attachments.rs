//! Attachments: a turn's base64 `image` and `document` blocks become files in the thread's
//! workspace (`attachments/<n>-<name>`, written by [`crate::workspace`]), and the blocks a
//! line of text that names the file, so every CLI gets them the same way.

use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

/// A base64 attachment block's bytes: `Some(Err)` when its data is not base64, `None` when
/// the block is not one.
pub fn decode(block: &Value) -> Option<Result<Vec<u8>, String>> {
    if !matches!(block["type"].as_str(), Some("image" | "document"))
        || block["source"]["type"] != "base64"
    {
        return None;
    }
    let data = block["source"]["data"].as_str().unwrap_or("");
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("an attachment's source.data is not base64: {e}")),
    )
}

/// A safe file name for block `n`: its own name's letters, digits, `.`, `-` and `_`, else
/// `attachment` with an extension from its media type.
fn file_name(n: usize, block: &Value) -> String {
    let given = block["name"]
        .as_str()
        .or(block["source"]["filename"].as_str())
        .or(block["title"].as_str())
        .unwrap_or("");
    let base = given.rsplit('/').next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.is_empty() {
        let media = block["source"]["media_type"].as_str().unwrap_or("");
        let ext = media.rsplit('/').next().filter(|e| {
            !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric())
        });
        format!("{n}-attachment.{}", ext.unwrap_or("bin"))
    } else {
        format!("{n}-{clean}")
    }
}

/// Writes the content's attachments into `work/attachments/` and replaces each with a text
/// block naming its file.
pub fn materialize(content: &mut [Value], work: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for (name, bytes) in extract(content)? {
        crate::workspace::write_attachment(work, &name, &bytes, uid, gid)
            .map_err(|e| format!("cannot write the attachment {name}: {e}"))?;
    }
    Ok(())
}

/// Replaces each of the content's attachments with a text block naming its file
/// (`attachments/<name>`); returns the files to write, `(name, bytes)`, for a workspace that
/// is not on this machine (a sandbox pod's: [`crate::supervisor::Client::put`]).
pub fn extract(content: &mut [Value]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for (n, block) in content.iter_mut().enumerate() {
        let Some(bytes) = decode(block) else { continue };
        let bytes = bytes?;
        let name = file_name(n, block);
        let media = block["source"]["media_type"]
            .as_str()
            .unwrap_or("unknown type");
        *block = json!({
            "type": "text",
            "text": format!(
                "[Attachment: attachments/{name} in your working directory ({media}, {} bytes)]",
                bytes.len()
            ),
        });
        files.push((name, bytes));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, data: &str) -> Value {
        json!({"type": "document", "name": name,
               "source": {"type": "base64", "media_type": "text/plain", "data": data}})
    }

    #[test]
    fn attachments_become_files_and_a_line_of_text() {
        let d = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let mut content = vec![
            json!({"type": "text", "text": "read it"}),
            block("../../etc/notes.txt", "aGVsbG8="),
            block("", "aGk="),
        ];
        materialize(&mut content, d.path(), uid, gid).unwrap();
        assert_eq!(content[0]["text"], "read it");
        assert!(
            content[1]["text"]
                .as_str()
                .unwrap()
                .contains("attachments/1-notes.txt")
        );
        let got = std::fs::read(d.path().join("attachments/1-notes.txt")).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(
            std::fs::read(d.path().join("attachments/2-attachment.plain")).unwrap(),
            b"hi"
        );
        // Again (a re-sent turn): the same files, rewritten.
        let mut again = vec![block("notes.txt", "aGVsbG8=")];
        materialize(&mut again, d.path(), uid, gid).unwrap();
        assert!(decode(&block("x", "not base64!")).unwrap().is_err());
        assert!(decode(&json!({"type": "text", "text": "x"})).is_none());
    }

    #[test]
    fn a_link_planted_in_the_workspace_is_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        std::os::unix::fs::symlink(outside.path(), d.path().join("attachments")).unwrap();
        let mut content = vec![block("a.txt", "aGVsbG8=")];
        assert!(materialize(&mut content, d.path(), uid, gid).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // A link in place of the file is replaced, its target untouched.
        std::fs::remove_file(d.path().join("attachments")).unwrap();
        std::fs::create_dir(d.path().join("attachments")).unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("attachments/0-a.txt")).unwrap();
        let mut content = vec![block("a.txt", "aGVsbG8=")];
        materialize(&mut content, d.path(), uid, gid).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(
            std::fs::read(d.path().join("attachments/0-a.txt")).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn extract_names_the_files_and_writes_nothing() {
        let mut content = vec![
            json!({"type": "text", "text": "see"}),
            block("notes.txt", "aGVsbG8="),
        ];
        let files = extract(&mut content).unwrap();
        assert_eq!(files, [("1-notes.txt".to_string(), b"hello".to_vec())]);
        assert!(
            content[1]["text"]
                .as_str()
                .unwrap()
                .starts_with("[Attachment: attachments/1-notes.txt")
        );
        assert!(extract(&mut [block("x", "!!")]).is_err());
    }
}
