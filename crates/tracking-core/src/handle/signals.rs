//! Ctrl-C / SIGTERM: every open run is finished as killed, durable work in flight is waited for
//! (bounded), then the process exits with 130.

#[cfg(feature = "signals")]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
#[cfg(feature = "signals")]
use std::time::{Duration, Instant};

#[cfg(feature = "signals")]
use crate::metadata::RunStatus;

use super::experiment::Inner;

static REGISTRY: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
/// The longest finish timeout of any run registered: how long an exit on a signal waits for
/// durable work ([`crate::shutdown`]) after the runs are finished.
#[cfg(feature = "signals")]
static WAIT_MS: AtomicU64 = AtomicU64::new(0);

pub(super) fn register(inner: &Arc<Inner>) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|w| w.strong_count() > 0);
        r.push(Arc::downgrade(inner));
    }
    #[cfg(feature = "signals")]
    {
        let ms = u64::try_from(inner.finish_timeout.as_millis()).unwrap_or(u64::MAX);
        WAIT_MS.fetch_max(ms, Ordering::SeqCst);
    }
    install();
}

/// The orderly exit: every open run is finished as killed (which flushes it), then the exit
/// waits, at most the finish timeout, for durable work in flight (background checkpoint saves
/// hold a [`crate::shutdown::WorkGuard`]), says what it waited for, and exits with 130.
#[cfg(feature = "signals")]
fn shut_down() -> ! {
    let live: Vec<Arc<Inner>> = REGISTRY
        .lock()
        .map(|r| r.iter().filter_map(|w| w.upgrade()).collect())
        .unwrap_or_default();
    for inner in live {
        match inner.finish(RunStatus::Killed) {
            Ok(r) => {
                eprintln!(
                    "exptrack: interrupted; run marked killed: {}",
                    r.run_dir.display()
                );
                for line in r.problem_lines() {
                    eprintln!("exptrack: warning: {line}");
                }
            }
            Err(e) => eprintln!(
                "exptrack: interrupted; could not finish the run {}: {e}",
                inner.run_dir.display()
            ),
        }
    }
    let wait = Duration::from_millis(WAIT_MS.load(Ordering::SeqCst));
    let labels = crate::shutdown::in_flight_labels();
    if !labels.is_empty() {
        eprintln!(
            "exptrack: waiting up to {:.0} s for {} to finish ({}); press Ctrl-C again to exit now",
            wait.as_secs_f64(),
            labels.len(),
            labels.join(", ")
        );
        let started = Instant::now();
        if crate::shutdown::wait_idle(wait) {
            eprintln!(
                "exptrack: {} finished after {:.1} s",
                labels.join(", "),
                started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!(
                "exptrack: gave up waiting after {:.0} s; still unfinished: {} (an unfinished \
                 checkpoint is never committed: the rerun resumes from the last committed one)",
                wait.as_secs_f64(),
                crate::shutdown::in_flight_labels().join(", ")
            );
        }
    }
    std::process::exit(130);
}

#[cfg(feature = "signals")]
fn install() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    static SIGNALLED: AtomicBool = AtomicBool::new(false);
    ONCE.call_once(|| {
        let res = ctrlc::set_handler(|| {
            if SIGNALLED.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C / SIGTERM while the first is finishing up: exit now.
                eprintln!("exptrack: interrupted again; exiting without waiting");
                std::process::exit(130);
            }
            // On its own thread, so that the handler returns and a second signal reaches it.
            let spawned = std::thread::Builder::new()
                .name("exptrack-shutdown".to_owned())
                .spawn(|| shut_down());
            if spawned.is_err() {
                shut_down();
            }
        });
        if let Err(e) = res {
            tracing::debug!("not installing exptrack's signal handler: {e}");
        }
    });
}

#[cfg(not(feature = "signals"))]
fn install() {}
