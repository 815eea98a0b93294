//! What a tool's worker runs in: its sandbox spec (the generated policy, only its own
//! secrets' values, its folder and the SDK mounted read-only, placeholders in its
//! environment) and the SDK files the server writes for it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use gateway::credential::store::{SecretEnv, SecretValue};
use policy::Config;
use sandbox::local::{Limits, Mount};

use crate::runner::{SandboxSpec, Stdio};
use crate::server::paths::private_dir;
use crate::tools::config::ToolSettings;
use crate::tools::manifest::{Manifest, Mode};
use crate::tools::policy::placeholder;

/// Where a tool's folder appears in its sandbox.
pub const TOOL_INSIDE: &str = "/run/centaur/tool";
/// Where the SDK appears.
pub const SDK_INSIDE: &str = "/run/centaur/sdk";

/// The SDK, embedded so the worker always matches the server.
const SDK: [(&str, &str); 4] = [
    (
        "__init__.py",
        include_str!("../../../tools/sdk/centaur_sdk/__init__.py"),
    ),
    (
        "context.py",
        include_str!("../../../tools/sdk/centaur_sdk/context.py"),
    ),
    (
        "worker.py",
        include_str!("../../../tools/sdk/centaur_sdk/worker.py"),
    ),
    (
        "workflow.py",
        include_str!("../../../tools/sdk/centaur_sdk/workflow.py"),
    ),
];

/// Writes the SDK under `DATA/tools/sdk` (readable by the sandbox user) and returns the
/// folder to mount.
pub fn write_sdk(data_dir: &Path) -> Result<PathBuf, String> {
    let tools = data_dir.join("tools");
    private_dir(&tools, 0o711)?;
    let root = tools.join("sdk");
    let pkg = root.join("centaur_sdk");
    private_dir(&root, 0o755)?;
    private_dir(&pkg, 0o755)?;
    for (name, text) in SDK {
        let p = pkg.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(root)
}

/// Everything a tool's sandbox needs besides its declaration.
#[derive(Debug)]
pub struct Context<'a> {
    /// The `tools:` section.
    pub settings: &'a ToolSettings,
    /// The data directory.
    pub data_dir: &'a Path,
    /// The written SDK.
    pub sdk: &'a Path,
    /// The sandbox user.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

/// The worker's sandbox spec. `values` are the real values from `tools.secrets_from`;
/// only the tool's own reach its gateway.
pub fn worker_spec(
    m: &Manifest,
    policy: Config,
    values: &HashMap<String, SecretValue>,
    cx: &Context<'_>,
) -> Result<SandboxSpec, String> {
    let dir = cx.data_dir.join("tools").join(&m.name);
    private_dir(&dir, 0o711)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    std::os::unix::fs::chown(&work, Some(cx.uid), Some(cx.gid))
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let audit = cx.data_dir.join("audit");
    private_dir(&audit, 0o700)?;
    let own: HashMap<String, SecretValue> = m
        .secrets
        .iter()
        .filter_map(|s| values.get(&s.name).map(|v| (s.name.clone(), v.clone())))
        .collect();
    let replaced: serde_json::Map<String, serde_json::Value> = m
        .secrets
        .iter()
        .filter(|s| matches!(s.mode, Mode::Replace { .. }))
        .map(|s| (s.name.clone(), placeholder(&m.name, &s.name).into()))
        .collect();
    let env = vec![
        ("PYTHONPATH".into(), format!("{SDK_INSIDE}:{TOOL_INSIDE}")),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("CENTAUR_TOOL_NAME".into(), m.name.clone()),
        ("CENTAUR_TOOL_MODULE".into(), m.module.clone()),
        (
            "CENTAUR_TOOL_SECRETS".into(),
            serde_json::Value::Object(replaced).to_string(),
        ),
    ];
    Ok(SandboxSpec {
        command: vec![
            cx.settings.python.clone().into(),
            "-m".into(),
            "centaur_sdk.worker".into(),
        ],
        policy,
        policy_name: format!("generated for tool {}", m.name),
        secrets: SecretEnv::new(own),
        uid: cx.uid,
        gid: cx.gid,
        workdir: work,
        mounts: vec![
            Mount {
                src: m.dir.clone(),
                dest: TOOL_INSIDE.into(),
                rw: false,
            },
            Mount {
                src: cx.sdk.to_path_buf(),
                dest: SDK_INSIDE.into(),
                rw: false,
            },
        ],
        env,
        limits: Limits {
            memory: Some(cx.settings.memory),
            pids: Some(512),
            cpus: None,
        },
        audit: Some(audit.join(format!("tool-{}.jsonl", m.name))),
        labels: BTreeMap::from([("tool".to_string(), m.name.clone())]),
        stdio: Stdio::Piped,
    })
}
