//! Cold starts on Kubernetes (`kube.rs` makes the objects): the harness's spec for a
//! sandbox pod, what its gateway pod gets apart from it, and the home files.

use super::{Internal, Runtimes, SupervisorSpec, kube};
use crate::server::paths::private_dir;
use crate::store::{Assignment, Store};
use crate::supervisor::Client;

impl Runtimes {
    /// [`Runtimes::start`]'s cold start on Kubernetes: the marker directory first (so the
    /// reaper and the capacity count see the runtime), then the pods, then the harness.
    pub(super) async fn start_pod(
        &self,
        k: &kube::Kube,
        store: &Store,
        a: Assignment,
        resume: Option<String>,
    ) -> Result<(Client, Assignment, bool), String> {
        let inputs = self.pod_inputs(k, store, &a, resume).await?;
        private_dir(&self.dir, 0o711)?;
        let dir = self.dir.join(&a.runtime_id);
        private_dir(&dir, 0o700)?;
        let _capacity = match self.settings.max_running {
            Some(max) => Some(self.make_room(store, max, &a.runtime_id).await?),
            None => None,
        };
        let _permit = self.starts.acquire().await.map_err(|e| e.to_string())?;
        let home = self.home_files(&a)?;
        let fallback = inputs.fallback();
        match k
            .start(&dir, &a, &inputs.spec, fallback, &inputs.gateway, &home)
            .await
        {
            Ok((client, resumed)) => Ok((client, a, resumed)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// A warm pool member's claim on Kubernetes (the store's claim is made): the thread's
    /// policy and credentials to its gateway, then the harness. Whether it resumed.
    pub(super) async fn claim_pod(
        &self,
        k: &kube::Kube,
        store: &Store,
        a: &Assignment,
        resume: Option<String>,
    ) -> Result<(Client, bool), String> {
        let inputs = self.pod_inputs(k, store, a, resume).await?;
        let home = self.home_files(a)?;
        let dir = self.dir.join(&a.runtime_id);
        k.claim(
            &dir,
            a,
            &inputs.spec,
            inputs.fallback(),
            &inputs.gateway,
            &home,
        )
        .await
    }

    /// What a sandbox pod of `a` is started with: a new token when the API is routed, the
    /// harness's spec (and, with `resume`, the spec without the session, for a pod whose
    /// home does not have it) and its gateway's inputs.
    async fn pod_inputs(
        &self,
        k: &kube::Kube,
        store: &Store,
        a: &Assignment,
        resume: Option<String>,
    ) -> Result<PodInputs, String> {
        let token = if k.routes_api() {
            Some(self.sandbox_token(store, a).await?)
        } else {
            None
        };
        let without = match &resume {
            Some(_) => Some(self.pod_spec(a, None, token.clone())?.0),
            None => None,
        };
        let (spec, gateway) = self.pod_spec(a, resume.clone(), token)?;
        Ok(PodInputs {
            spec,
            without: resume.zip(without),
            gateway,
        })
    }

    /// The harness's `home_files`, read here for a sandbox pod: (path under the home, bytes).
    fn home_files(&self, a: &Assignment) -> Result<Vec<(String, Vec<u8>)>, String> {
        let Some(h) = self.settings.harnesses.get(&a.harness) else {
            return Ok(Vec::new());
        };
        h.home_files
            .iter()
            .map(|(inside, src)| {
                std::fs::read(src)
                    .map(|b| (inside.clone(), b))
                    .map_err(|e| format!("home_files: {}: {e}", src.display()))
            })
            .collect()
    }

    /// The harness's spec in a sandbox pod: the command, its environment and the pod's
    /// workspace (the image brings the programs and its `PATH`; no host path is mounted);
    /// and apart, what its gateway pod gets: the policy, the secrets and the thread's token.
    /// Nothing of the second goes into the pod (invariant 3).
    fn pod_spec(
        &self,
        a: &Assignment,
        resume: Option<String>,
        token: Option<String>,
    ) -> Result<(SupervisorSpec, kube::GatewayInputs), String> {
        // The API's address is the gateway's business (its --route); only the token and
        // the harness's switches for centaur.internal come from here.
        let internal = token.clone().map(|token| Internal {
            api: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            token,
        });
        let mut spec = self.spec(a, resume, internal)?;
        let gateway = kube::GatewayInputs {
            policy: spec.policy.take(),
            secrets_from: spec.secrets_from.take(),
            token,
        };
        spec.internal = None;
        spec.workdir = Some(sandbox::kubernetes::objects::WORKSPACE.into());
        spec.home = None;
        spec.mounts.clear();
        spec.env.retain(|(k, _)| k != "PATH");
        Ok((spec, gateway))
    }
}

/// See [`Runtimes::pod_inputs`].
struct PodInputs {
    spec: SupervisorSpec,
    /// The session to resume, and the spec to launch when the pod's home lacks it.
    without: Option<(String, SupervisorSpec)>,
    gateway: kube::GatewayInputs,
}

impl PodInputs {
    fn fallback(&self) -> Option<(&str, &SupervisorSpec)> {
        self.without.as_ref().map(|(id, s)| (id.as_str(), s))
    }
}
