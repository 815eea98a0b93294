//! The executor: claims due runs under a lease, replays each run's handler in the worker,
//! asks the core to decide each call the handler makes, commits the decision's effects
//! (fenced by the lease) and only then answers the handler. A heartbeat keeps the lease and
//! notices a cancel; a worker that dies gives its runs back, and the next claim replays them
//! from their last checkpoint.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, RwLock, Semaphore, watch};

use crate::clock::Clock;
use crate::store::{ClaimedRun, RunEnd, Store, StoreError};
use crate::workflows::core::{self, Answer, Checkpoint, Effect};
use crate::workflows::facts::{self, Agents};
use crate::workflows::worker::Worker;

/// How long a claim lasts without a heartbeat, unless `workflows.lease` says.
pub const LEASE_MS: i64 = 30_000;

/// How a new worker is started.
pub type StartWorker = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Worker, String>> + Send>>
        + Send
        + Sync,
>;

/// Looks up the value of a webhook's secret.
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The workflow engine of one server.
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    worker_id: String,
    start: StartWorker,
    agents: Agents,
    worker: RwLock<Option<Arc<Worker>>>,
    slots: Arc<Semaphore>,
    lease_ms: i64,
    concurrency: usize,
    dirs: Vec<std::path::PathBuf>,
    reload: std::sync::Mutex<crate::workflows::reload::Reload>,
    schedules: crate::workflows::scheduler::Schedules,
    /// The loaded workflows' webhooks.
    pub webhooks: crate::workflows::webhooks::Webhooks,
    /// The values of webhooks' secrets (none by default).
    pub webhook_secret: SecretLookup,
    /// Woken when a run may have become due (created, event posted).
    pub kick: Notify,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine driving at most `concurrency` runs at once.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        worker_id: String,
        concurrency: usize,
        start: StartWorker,
        agents: Agents,
    ) -> Self {
        Engine {
            store,
            clock,
            worker_id,
            start,
            agents,
            worker: RwLock::new(None),
            slots: Arc::new(Semaphore::new(concurrency)),
            lease_ms: LEASE_MS,
            concurrency,
            dirs: Vec::new(),
            reload: std::sync::Mutex::default(),
            schedules: crate::workflows::scheduler::Schedules::default(),
            webhooks: crate::workflows::webhooks::Webhooks::default(),
            webhook_secret: Arc::new(|_| None),
            kick: Notify::new(),
        }
    }

    /// How long a claim lasts without a heartbeat (heartbeats come three times as often).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease_ms = i64::try_from(lease.as_millis())
            .unwrap_or(LEASE_MS)
            .max(1_000);
        self
    }

    /// Watches these folders: a changed workflow file restarts the worker (see
    /// `workflows::reload`).
    pub fn with_reload(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.dirs = dirs;
        self
    }

    /// Where webhooks' secrets come from.
    pub fn with_webhook_secrets(mut self, lookup: SecretLookup) -> Self {
        self.webhook_secret = lookup;
        self
    }

    /// Starts the worker (if it is not running) and returns it.
    pub async fn ready_worker(&self) -> Result<Arc<Worker>, String> {
        if let Some(w) = self.worker.read().await.as_ref().filter(|w| w.alive()) {
            return Ok(w.clone());
        }
        let mut slot = self.worker.write().await;
        if let Some(w) = slot.as_ref().filter(|w| w.alive()) {
            return Ok(w.clone());
        }
        let fingerprint = crate::workflows::reload::fingerprint(&self.dirs);
        let w = Arc::new((self.start)().await?);
        *slot = Some(w.clone());
        *lock(&self.reload) = crate::workflows::reload::Reload {
            loaded: Some(fingerprint),
            pending: None,
        };
        self.webhooks.sync(&w.workflows);
        if let Err(e) = self
            .schedules
            .sync(&self.store, &*self.clock, &w.workflows)
            .await
        {
            tracing::warn!("workflows: recording the schedules: {e}");
        }
        Ok(w)
    }

    /// Claims and drives due runs until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticked: Option<std::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if ticked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                && self.worker.read().await.is_some()
            {
                ticked = Some(std::time::Instant::now());
                self.every_second().await;
            }
            if lock(&self.reload).pending.is_some() {
                // Draining for a reload: claim nothing new.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let worker = match self.ready_worker().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("workflows: {e}; retrying in 5s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                break;
            };
            match self.store.claim_run(&self.worker_id, self.lease_ms).await {
                Ok(Some(claimed)) => {
                    let engine = self.clone();
                    tokio::spawn(async move {
                        let id = claimed.run.run_id.clone();
                        if let Err(e) = engine.drive(&worker, claimed).await {
                            tracing::warn!("workflow run {id}: {e}; it is retried after its lease");
                        }
                        worker.detach(&id);
                        drop(permit);
                        engine.kick.notify_one();
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = self.kick.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!("workflows: claiming a run: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if let Some(w) = self.worker.read().await.as_ref() {
            w.stop();
        }
    }

    /// Fires due schedules; notices changed workflow files and, once the runs in flight
    /// pause, restarts the worker so that it loads them.
    async fn every_second(&self) {
        match self.schedules.tick(&self.store, &*self.clock).await {
            Ok(0) => {}
            Ok(_) => self.kick.notify_one(),
            Err(e) => tracing::warn!("workflows: firing schedules: {e}"),
        }
        let dirs = self.dirs.clone();
        let now = tokio::task::spawn_blocking(move || crate::workflows::reload::fingerprint(&dirs))
            .await
            .unwrap_or_default();
        let idle = self.slots.available_permits() == self.concurrency;
        let restart = {
            let mut r = lock(&self.reload);
            r.check(now) && r.due(idle)
        };
        if restart {
            if let Some(w) = self.worker.write().await.take() {
                w.stop();
            }
            lock(&self.reload).pending = None;
        }
    }

    /// Replays one claimed run until it suspends, ends, or is lost.
    async fn drive(&self, worker: &Worker, claimed: ClaimedRun) -> Result<(), StoreError> {
        let ClaimedRun {
            run,
            checkpoints,
            attempts,
        } = claimed;
        let id = run.run_id.clone();
        let mut state = core::Run {
            checkpoints,
            attempts,
        };
        if !worker.workflows.contains_key(&run.workflow_name) {
            let fail = Effect::Fail {
                code: "WORKFLOW_NOT_FOUND",
                message: format!(
                    "no workflow named {:?} is loaded (its file was removed or does not load; the server log says why)",
                    run.workflow_name
                ),
            };
            self.store
                .commit_run(&id, &self.worker_id, &[fail], self.lease_ms)
                .await?;
            return Ok(());
        }
        let mut rx = worker.attach(&id);
        let start = json!({
            "type": "start",
            "run": id,
            "workflow": run.workflow_name,
            "input": run.input,
            "checkpoints": state.checkpoints.iter().map(checkpoint_json).collect::<Vec<_>>(),
        });
        if !worker.send(&start).await {
            return self.give_back(&id).await;
        }
        let mut beat = tokio::time::interval(Duration::from_millis(
            u64::try_from(self.lease_ms / 3).unwrap_or(10_000),
        ));
        beat.tick().await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = beat.tick() => {
                    if !self.store.renew_run(&id, &self.worker_id, self.lease_ms).await? {
                        return self.lost(worker, &id).await;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else {
                return self.give_back(&id).await;
            };
            if self.on_message(worker, &run, &mut state, &msg).await? {
                return Ok(());
            }
        }
    }

    /// Handles one line of the run's handler; `true` when the drive is over.
    async fn on_message(
        &self,
        worker: &Worker,
        run: &crate::store::RunRecord,
        state: &mut core::Run,
        msg: &Value,
    ) -> Result<bool, StoreError> {
        let id = run.run_id.as_str();
        match msg["type"].as_str() {
            Some("call") => {
                let Some(answer) = self.call(worker, run, state, msg).await? else {
                    self.lost(worker, id).await?;
                    return Ok(true);
                };
                let stop = answer == Answer::Stop;
                let mut reply = answer_json(&answer);
                reply["type"] = "answer".into();
                reply["run"] = id.into();
                reply["id"] = msg["id"].clone();
                if !worker.send(&reply).await {
                    self.give_back(id).await?;
                    return Ok(true);
                }
                Ok(stop)
            }
            Some("return") => {
                let end = RunEnd::Completed(msg.get("value").cloned().unwrap_or(Value::Null));
                if !self.store.end_run(id, &self.worker_id, &end).await? {
                    self.lost(worker, id).await?;
                }
                Ok(true)
            }
            Some("raise") => {
                let fail = Effect::Fail {
                    code: "HANDLER_ERROR",
                    message: msg["message"]
                        .as_str()
                        .unwrap_or("the handler raised")
                        .into(),
                };
                if !self
                    .store
                    .commit_run(id, &self.worker_id, &[fail], self.lease_ms)
                    .await?
                {
                    self.lost(worker, id).await?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Decides one call and commits its effects; `None` if the run was lost or cancelled.
    async fn call(
        &self,
        worker: &Worker,
        run: &crate::store::RunRecord,
        state: &mut core::Run,
        msg: &Value,
    ) -> Result<Option<Answer>, StoreError> {
        let id = run.run_id.as_str();
        let seq = msg["seq"].as_i64().unwrap_or(-1);
        let recorded = usize::try_from(seq)
            .ok()
            .and_then(|i| state.checkpoints.get(i))
            .is_some_and(|c| c.done);
        let call = facts::gather(
            &self.store,
            &self.agents,
            run,
            &worker.workflows,
            msg,
            recorded,
        )
        .await?;
        if matches!(
            &call,
            Ok(core::Call::Start {
                kind: core::Kind::StartWorkflow,
                started: Ok(_),
                ..
            })
        ) && !recorded
        {
            self.kick.notify_one();
        }
        let decision = match call {
            Ok(call) => {
                let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
                core::decide(state, seq, &call, now)
            }
            Err(e) => core::Decision {
                answer: Answer::Stop,
                effects: vec![Effect::Fail {
                    code: "WORKER_PROTOCOL",
                    message: format!("the workflow worker sent a call the engine cannot read: {e}"),
                }],
            },
        };
        if !decision.effects.is_empty()
            && !self
                .store
                .commit_run(id, &self.worker_id, &decision.effects, self.lease_ms)
                .await?
        {
            return Ok(None);
        }
        for e in &decision.effects {
            match e {
                Effect::Record(c) => {
                    let i = usize::try_from(c.seq).unwrap_or(usize::MAX);
                    if i < state.checkpoints.len() {
                        state.checkpoints[i] = c.clone();
                    } else {
                        state.checkpoints.push(c.clone());
                    }
                    state.attempts = None;
                }
                Effect::RetryAt { attempts, .. } => state.attempts = Some(*attempts),
                Effect::Suspend { .. } | Effect::Fail { .. } => {}
            }
        }
        Ok(Some(decision.answer))
    }

    /// The worker is gone: the run is claimable again in a second.
    async fn give_back(&self, id: &str) -> Result<(), StoreError> {
        let at = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX) + 1_000;
        self.store.release_run(id, &self.worker_id, at).await
    }

    /// The run's lease was lost, or a cancel was asked for: stop its handler, and end it as
    /// cancelled if that is why.
    async fn lost(&self, worker: &Worker, id: &str) -> Result<(), StoreError> {
        worker.send(&json!({"type": "cancel", "run": id})).await;
        if let Some((r, _)) = self.store.get_run(id).await?
            && r.cancel_requested
        {
            self.store
                .end_run(id, &self.worker_id, &RunEnd::Cancelled)
                .await?;
        }
        Ok(())
    }
}

fn checkpoint_json(c: &Checkpoint) -> Value {
    json!({"seq": c.seq, "name": c.name, "kind": c.kind.as_str(), "done": c.done, "value": c.value})
}

fn answer_json(a: &Answer) -> Value {
    match a {
        Answer::Value(v) => json!({"value": v}),
        Answer::Raise { kind, message } => json!({"raise": {"kind": kind, "message": message}}),
        Answer::Run { attempt } => json!({"run_step": attempt}),
        Answer::Stop => json!({"stop": true}),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
