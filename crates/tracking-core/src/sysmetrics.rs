//! The optional system-metrics sampler (`system/cpu_percent`, `system/memory_percent`,
//! `system/process_rss_mb`).

use std::time::Duration;

use crate::dispatch::Queue;
use crate::handle::Sampler;

/// The shortest sampling interval (shorter ones are raised to it).
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The key whose steps a resumed run's sampler continues after (every sample logs it).
pub(crate) const STEP_KEY: &str = "system/cpu_percent";

/// Starts sampling every `interval`; the samples' steps count up from `start_step` (after the
/// samples of a resumed run's earlier processes).
#[cfg(feature = "system-metrics")]
pub(crate) fn spawn(tx: Queue, interval: Duration, start_step: u64) -> Option<Sampler> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

    use crate::dispatch::Msg;
    use crate::event::{Event, Metric, now_ms};

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let join = std::thread::Builder::new()
        .name("exptrack-sysmetrics".to_owned())
        .spawn(move || {
            let mut sys = System::new();
            let pid = Pid::from_u32(std::process::id());
            sys.refresh_cpu_usage();
            let mut step = start_step;
            let mut next = crate::clock::after(interval);
            while !stop2.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(
                        Duration::from_millis(50)
                            .min(interval)
                            .min(next.saturating_duration_since(now)),
                    );
                    continue;
                }
                // Never in the past (a long stall does not cause a burst of samples), never an
                // overflow (whatever the interval).
                next = crate::clock::add(next, interval);
                if next <= now {
                    next = crate::clock::add(now, interval);
                }
                sys.refresh_cpu_usage();
                sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    true,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                let total = sys.total_memory().max(1) as f64;
                let mut values = vec![
                    Metric::new(STEP_KEY, f64::from(sys.global_cpu_usage())),
                    Metric::new(
                        "system/memory_percent",
                        sys.used_memory() as f64 / total * 100.0,
                    ),
                ];
                if let Some(p) = sys.process(pid) {
                    values.push(Metric::new(
                        "system/process_rss_mb",
                        p.memory() as f64 / (1024.0 * 1024.0),
                    ));
                }
                let ev = Event::Metrics {
                    step,
                    timestamp_ms: now_ms(),
                    values,
                };
                step += 1;
                if tx.send(Msg::Event(ev)).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(Sampler { stop, join })
}

#[cfg(not(feature = "system-metrics"))]
pub(crate) fn spawn(_tx: Queue, _interval: Duration, _start_step: u64) -> Option<Sampler> {
    tracing::warn!("system metrics requested but exptrack-core was built without `system-metrics`");
    None
}
