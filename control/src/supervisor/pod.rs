//! The supervisor in a Kubernetes sandbox pod, reached through the pod's exec API: each
//! request is one `centaur sandbox relay SOCKET` in the pod, its stdin and stdout the
//! request's stream. No port of the sandbox pod is open to anyone, the server included.

use sandbox::kubernetes::cluster::Cluster;

use super::{Dialer, Dialing, Duplex};

/// Where the sandbox pod's supervisor keeps its directory (an emptyDir of its own).
pub const AGENT_DIR: &str = sandbox::kubernetes::objects::AGENT_DIR;

/// The sandbox image's `centaur`.
pub const CENTAUR: &str = "centaur";

/// The command of a sandbox pod: the supervisor, waiting for its `launch`.
pub fn command() -> Vec<String> {
    [CENTAUR, "sandbox", "supervise", "--pod", AGENT_DIR]
        .map(String::from)
        .to_vec()
}

/// Opens exec streams to one pod's supervisor.
#[derive(Debug, Clone)]
pub struct PodDialer {
    cluster: Cluster,
    pod: String,
}

impl PodDialer {
    /// The supervisor of sandbox pod `pod`.
    pub fn new(cluster: Cluster, pod: impl Into<String>) -> Self {
        PodDialer {
            cluster,
            pod: pod.into(),
        }
    }
}

impl Dialer for PodDialer {
    fn dial(&self) -> Dialing<'_> {
        Box::pin(async move {
            let sock = super::socket(std::path::Path::new(AGENT_DIR));
            let sock = sock.to_string_lossy();
            let stream = self
                .cluster
                .exec(&self.pod, &[CENTAUR, "sandbox", "relay", &sock])
                .await
                .map_err(std::io::Error::other)?;
            Ok(Box::new(stream) as Box<dyn Duplex>)
        })
    }
}
