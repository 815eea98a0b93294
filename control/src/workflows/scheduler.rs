//! Fires the loaded workflows' schedules: synced to the store when the worker (re)starts,
//! ticked about once a second. Each due slot is fired or skipped (its misfire policy) by the
//! replica whose compare-and-set moves the schedule on; the run's trigger key is the slot's
//! fire key, so a slot fires once across restarts and replicas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::clock::Clock;
use crate::store::{NewRun, Store, StoreError};
use crate::workflows::schedule::{self, Schedule};
use crate::workflows::worker::Found;

struct Entry {
    schedule: Schedule,
    hash: String,
    version: String,
}

/// The schedules of the loaded workflows.
#[derive(Default)]
pub struct Schedules {
    map: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules").finish_non_exhaustive()
    }
}

impl Schedules {
    /// Reads the workflows' `SCHEDULE`s (a bad one is logged and the workflow runs
    /// unscheduled) and records them in the store.
    pub async fn sync(
        &self,
        store: &Store,
        clock: &dyn Clock,
        workflows: &BTreeMap<String, Found>,
    ) -> Result<(), StoreError> {
        let now = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let mut map = HashMap::new();
        let mut rows = Vec::new();
        for (name, wf) in workflows {
            let Some(spec) = &wf.schedule else {
                continue;
            };
            match schedule::parse(spec) {
                Ok(s) => {
                    let hash = crate::store::request_hash(spec);
                    if let Some(next) = s.next_after(now) {
                        rows.push((name.clone(), hash.clone(), next));
                        tracing::info!("workflow {name}: scheduled, first slot at {next} ms");
                    }
                    map.insert(
                        name.clone(),
                        Entry {
                            schedule: s,
                            hash,
                            version: wf.version.clone(),
                        },
                    );
                }
                Err(e) => tracing::error!(
                    "workflow {name}: its SCHEDULE is not valid and it is not scheduled: {e}"
                ),
            }
        }
        store.sync_schedules(&rows).await?;
        *lock(&self.map) = map;
        Ok(())
    }

    /// Fires or skips every due slot; returns how many runs this call created.
    pub async fn tick(&self, store: &Store, clock: &dyn Clock) -> Result<usize, StoreError> {
        let now = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let mut fired = 0;
        // A round fires at most one slot per schedule; slots still due (a tick or a
        // takeover that came late) fire in the next round, the earliest first.
        for _ in 0..MAX_ROUNDS {
            let before = fired;
            fired += self.round(store, now).await?;
            if fired == before {
                break;
            }
        }
        Ok(fired)
    }

    /// One round of [`Schedules::tick`]: each due schedule fires or skips its next slot.
    async fn round(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let mut fired = 0;
        for due in store.due_schedules().await? {
            let plan = {
                let map = lock(&self.map);
                map.get(&due.workflow_name)
                    .filter(|e| e.hash == due.spec_hash)
                    .map(|e| {
                        let (slot, next) = e.schedule.fire(due.due, now);
                        let run = slot.map(|slot| {
                            (
                                slot,
                                NewRun {
                                    workflow_name: due.workflow_name.clone(),
                                    workflow_version: e.version.clone(),
                                    input: e.schedule.input.clone(),
                                    trigger_key: None,
                                    idempotency: None,
                                },
                            )
                        });
                        (next, run)
                    })
            };
            // Another version of the schedule (a replica with other files) moves it itself.
            let Some((next, run)) = plan else {
                continue;
            };
            let skipped = run.is_none();
            match store.advance_schedule(&due, next, run).await? {
                Some(id) => {
                    fired += 1;
                    tracing::info!("workflow {}: scheduled run {id}", due.workflow_name);
                }
                None if skipped => tracing::warn!(
                    "workflow {}: the slot at {} ms was missed by more than {} s and skipped (misfire: skip)",
                    due.workflow_name,
                    due.due,
                    schedule::GRACE_MS / 1000
                ),
                None => {}
            }
        }
        Ok(fired)
    }
}

/// How many slots of one schedule a tick fires at most (the rest wait for the next tick).
const MAX_ROUNDS: usize = 60;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
