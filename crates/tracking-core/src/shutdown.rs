//! Durable work in flight, for an orderly exit on Ctrl-C / SIGTERM.
//!
//! Code that must not be abandoned half-way by a signal (a background checkpoint save, say) holds a
//! [`WorkGuard`] while it runs. The signal handler marks open runs killed, flushes them, then calls
//! [`wait_idle`] (bounded) before the process exits, so such work ends committed or not at all.
//!
//! ```
//! use std::time::Duration;
//!
//! let guard = exptrack_core::shutdown::begin_work("checkpoint save");
//! assert_eq!(exptrack_core::shutdown::in_flight(), 1);
//! drop(guard);
//! assert!(exptrack_core::shutdown::wait_idle(Duration::from_millis(10)));
//! ```

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Registry {
    count: usize,
    labels: Vec<(u64, &'static str)>,
    next_id: u64,
}

static STATE: Mutex<Registry> = Mutex::new(Registry {
    count: 0,
    labels: Vec::new(),
    next_id: 0,
});
static IDLE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, Registry> {
    // A poisoned lock only means a panic elsewhere; the counter stays meaningful.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks one piece of durable work as in flight until the guard is dropped.
#[must_use = "the work counts as in flight only while the guard lives"]
#[derive(Debug)]
pub struct WorkGuard {
    id: u64,
}

/// Starts a piece of durable work; `label` names it in the message printed when an exit has to wait
/// for it.
pub fn begin_work(label: &'static str) -> WorkGuard {
    let mut s = state();
    s.count += 1;
    s.next_id += 1;
    let id = s.next_id;
    s.labels.push((id, label));
    WorkGuard { id }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        let mut s = state();
        s.count = s.count.saturating_sub(1);
        s.labels.retain(|(id, _)| *id != self.id);
        if s.count == 0 {
            IDLE.notify_all();
        }
    }
}

/// How many pieces of durable work are in flight now.
pub fn in_flight() -> usize {
    state().count
}

/// The labels of the work in flight now (for messages).
pub fn in_flight_labels() -> Vec<&'static str> {
    state().labels.iter().map(|(_, l)| *l).collect()
}

/// Waits until no durable work is in flight, at most `timeout`; `true` when none is left.
pub fn wait_idle(timeout: Duration) -> bool {
    let deadline = Instant::now().checked_add(timeout);
    let mut s = state();
    while s.count > 0 {
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if left.is_zero() {
            return false;
        }
        s = IDLE
            .wait_timeout(s, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_idle_returns_when_the_last_guard_drops() {
        let g = begin_work("test work");
        assert!(in_flight_labels().contains(&"test work"));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(g);
        });
        assert!(wait_idle(Duration::from_secs(5)));
        assert!(!in_flight_labels().contains(&"test work"));
        t.join().unwrap();
    }

    #[test]
    fn wait_idle_times_out_while_work_is_held() {
        let g = begin_work("held");
        let start = Instant::now();
        assert!(!wait_idle(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(g);
        // a huge timeout does not overflow
        assert!(wait_idle(Duration::MAX));
    }
}
