//! The warm pool on Kubernetes: a member is a sandbox made for no thread (a neutral policy
//! that denies everything), handed to a thread by a claim.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use sandbox::kubernetes::objects::{GatewayFiles, MANAGEMENT_PORT};
use serde_json::{Value, json};

use super::{GatewayInputs, Kube, MANAGEMENT_KEY_VAR, Rendered};
use crate::store::Assignment;
use crate::supervisor::{Client, SupervisorSpec};

impl Kube {
    /// Makes warm pool member `runtime_id`: its objects, with a neutral policy and no
    /// thread; returns once its supervisor is warm. On failure everything made is deleted.
    pub(in crate::server::runtime) async fn make_warm(
        &self,
        dir: &Path,
        runtime_id: &str,
    ) -> Result<(), String> {
        let member = Assignment {
            thread_key: String::new(),
            generation: 0,
            runtime_id: runtime_id.to_string(),
            harness: String::new(),
            persona_id: None,
            spool_seq: 0,
        };
        let made = match self
            .create(dir, &member, &GatewayInputs::default(), true)
            .await
        {
            Ok(()) => self.wait_warm(&self.client(dir, runtime_id)).await,
            Err(e) => Err(e),
        };
        if made.is_err() {
            self.delete(runtime_id).await;
        }
        made
    }

    /// Hands warm member `a.runtime_id` to `a`'s thread: its gateway's objects take the
    /// thread's policy and credentials (what a restarted gateway pod starts from), the
    /// running gateway takes them through its management API (`PUT /v1/policy`, sent by
    /// `centaur-gateway put-policy` run in the gateway pod through exec: the credentials
    /// travel inside the API server's TLS, and no port of the pod is opened to the server),
    /// then the harness launches as on a cold start. Returns whether it resumed a session.
    pub(in crate::server::runtime) async fn claim(
        &self,
        dir: &Path,
        a: &Assignment,
        launch: &SupervisorSpec,
        resume: Option<(&str, &SupervisorSpec)>,
        g: &GatewayInputs,
        home: &[(String, Vec<u8>)],
    ) -> Result<(Client, bool), String> {
        let Rendered {
            mut doc,
            config,
            env,
        } = self.render(a, g)?;
        let spec = self.spec(a, &config, false);
        let files = |ip: Ipv4Addr| GatewayFiles {
            policy: {
                let mut d = doc.clone();
                d["dns"]["proxy_ip"] = json!(ip.to_string());
                d.to_string()
            },
            ca_cert: String::new(),
            ca_key: String::new(),
            env: env.clone(),
        };
        let ip = self
            .cluster
            .retarget(&spec, files)
            .await
            .map_err(|e| format!("handing the warm sandbox over: {e}"))?;
        doc["dns"]["proxy_ip"] = json!(ip.to_string());
        self.put_policy(&spec.gateway_name(), &doc, &env).await?;
        // The pod was made with no placeholders in its environment: the harness gets its
        // thread's.
        let placed = |s: &SupervisorSpec| {
            let mut s = s.clone();
            s.env.extend(spec.env.iter().cloned());
            s
        };
        let launch = placed(launch);
        let without = resume.map(|(id, w)| (id, placed(w)));
        let client = self.client(dir, &a.runtime_id);
        let resumed = self
            .launch(
                &client,
                &launch,
                without.as_ref().map(|(id, w)| (*id, w)),
                home,
            )
            .await?;
        Ok((client, resumed))
    }

    /// Sends the running gateway of pod `gateway` its new policy and variables.
    async fn put_policy(
        &self,
        gateway: &str,
        doc: &Value,
        env: &[(String, String)],
    ) -> Result<(), String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let management = format!("127.0.0.1:{MANAGEMENT_PORT}");
        let command = [
            "centaur-gateway",
            "put-policy",
            "--management",
            &management,
            "--key-env",
            MANAGEMENT_KEY_VAR,
            "--with-env",
        ];
        let env: serde_json::Map<String, Value> =
            env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let body = json!({"policy": doc.to_string(), "env": env}).to_string();
        let said = async {
            let mut exec = self
                .cluster
                .exec(gateway, &command)
                .await
                .map_err(|e| e.to_string())?;
            exec.write_all(body.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            exec.shutdown().await.map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            (&mut exec)
                .take(1 << 20)
                .read_to_end(&mut out)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(out)
        };
        let out = tokio::time::timeout(Duration::from_secs(60), said)
            .await
            .map_err(|_| "no answer within 60 s".to_string())
            .and_then(|r| r)
            .map_err(|e| format!("the sandbox's gateway ({gateway}): {e}"))?;
        let answer: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        if answer["status"] == "ok" {
            return Ok(());
        }
        Err(format!(
            "the sandbox's gateway ({gateway}) refused its thread's policy: {}",
            String::from_utf8_lossy(&out).trim()
        ))
    }
}
