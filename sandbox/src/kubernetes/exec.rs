//! A byte stream to a process in a sandbox pod, through the pod's `exec` subresource (a
//! WebSocket, `v5.channel.k8s.io` or `v4`): how the server reaches the supervisor in the
//! pod without any port of the pod open to it.

use std::pin::Pin;
use std::task::{Context, Poll};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, SimplexStream, WriteHalf};

use super::cluster::{Cluster, ClusterError};

/// A running exec: its stdout to read, its stdin to write. Dropping it ends the stream (the
/// process's stdin reaches its end).
pub struct ExecStream {
    stdout: ReadHalf<SimplexStream>,
    stdin: WriteHalf<SimplexStream>,
    /// Owns the WebSocket's task (dropping it aborts the task).
    _process: AttachedProcess,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Runs `command` in the first container of pod `pod` with stdin and stdout attached
    /// (its stderr is dropped).
    pub async fn exec(&self, pod: &str, command: &[&str]) -> Result<ExecStream, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client(), self.namespace());
        let params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut process = api
            .exec(pod, command.iter().copied(), &params)
            .await
            .map_err(|source| ClusterError::Api {
                what: format!("exec in Pod {pod}"),
                source,
            })?;
        let (Some(stdout), Some(stdin)) = (process.stdout(), process.stdin()) else {
            return Err(ClusterError::Answer(format!(
                "exec in Pod {pod}: no stdin or stdout"
            )));
        };
        Ok(ExecStream {
            stdout,
            stdin,
            _process: process,
        })
    }
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}
