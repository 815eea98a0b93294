//! Time as the control plane sees it, injected. Leases, deadlines and workflow sleeps read a
//! [`Clock`] instead of the system's, so a test moves time by hand ([`ManualClock::advance`])
//! instead of sleeping, and a lease that expires in an hour is tested in a millisecond.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A future the clock resolves.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of wall-clock time in milliseconds since the Unix epoch: what leases, deadlines
/// and checkpoints store.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now_ms(&self) -> u64;

    /// Resolves once [`Clock::now_ms`] has reached `at_ms` (at once if it has).
    fn sleep_until(&self, at_ms: u64) -> Sleep<'_>;

    /// Resolves after `d` of this clock's time.
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.sleep_until(self.now_ms().saturating_add(ms))
    }
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep<'_> {
        let wait = Duration::from_millis(at_ms.saturating_sub(self.now_ms()));
        Box::pin(tokio::time::sleep(wait))
    }

    /// A plain timer: through [`Clock::sleep_until`], the wall time that passes between
    /// reading the clock twice (a loaded machine) would shorten the sleep.
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
    moved: Notify,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(now_ms),
            moved: Notify::new(),
        }
    }

    /// Moves the clock forward by `d` and wakes every sleeper whose time has come.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                // Registered before the check, so an advance in between is not missed.
                let moved = self.moved.notified();
                if self.now_ms() >= at_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_when_its_time_comes_and_not_before() {
        let clock = Arc::new(ManualClock::new(1_000));
        let c = clock.clone();
        // The deadline is taken now, not when the task first runs.
        let wake = clock.now_ms() + 3_600_000;
        let sleeper = tokio::spawn(async move { c.sleep_until(wake).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke half an hour early");
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper did not wake")
            .unwrap();
        assert_eq!(clock.now_ms(), 1_000 + 3_600_000);
    }

    #[tokio::test]
    async fn sleep_is_relative_to_the_clock_when_it_is_called() {
        let clock = ManualClock::new(0);
        let sleep = clock.sleep(Duration::from_millis(500));
        clock.advance(Duration::from_millis(500));
        tokio::time::timeout(Duration::from_secs(1), sleep)
            .await
            .expect("a sleep whose time has come waited");
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_resolves_at_once() {
        let clock = ManualClock::new(5_000);
        tokio::time::timeout(Duration::from_secs(1), clock.sleep_until(4_000))
            .await
            .expect("a past deadline waited");
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_sleeps_on_tokio_time() {
        let clock = SystemClock;
        let before = tokio::time::Instant::now();
        clock.sleep(Duration::from_secs(60)).await;
        assert!(before.elapsed() >= Duration::from_secs(60));
        assert!(
            clock.now_ms() > 1_600_000_000_000,
            "wall time is since the epoch"
        );
    }
}
