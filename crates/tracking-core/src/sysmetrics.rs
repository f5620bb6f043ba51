//! The optional system-metrics sampler (`system/cpu_percent`, `system/memory_percent`,
//! `system/process_rss_mb`, and with the `nvml` feature per GPU `system/gpu_<i>_utilization_percentage`,
//! `system/gpu_<i>_memory_usage_megabytes`, `system/gpu_<i>_memory_usage_percentage`,
//! `system/gpu_<i>_temperature_celsius` and `system/gpu_<i>_power_usage_watts`: MLflow's own names,
//! so MLflow's "System metrics" tab shows them as it shows its own).

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
            #[cfg(feature = "nvml")]
            let gpus = gpu::Gpus::open();
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
                #[cfg(feature = "nvml")]
                if let Some(g) = &gpus {
                    g.sample(&mut values);
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

/// GPUs through NVML (the `nvml` feature).
#[cfg(feature = "nvml")]
pub(crate) mod gpu {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

    use crate::event::Metric;

    /// An initialised NVML with at least one GPU.
    pub(crate) struct Gpus {
        nvml: Nvml,
        count: u32,
    }

    impl Gpus {
        /// NVML and its GPUs, or `None` (one debug line) when the library or a GPU is missing:
        /// a machine without an NVIDIA driver is normal, not an error.
        pub(crate) fn open() -> Option<Gpus> {
            let nvml = match Nvml::init() {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "NVML not available: no GPU system metrics");
                    return None;
                }
            };
            match nvml.device_count() {
                Ok(count) if count > 0 => Some(Gpus { nvml, count }),
                Ok(_) => {
                    tracing::debug!("NVML found no GPU: no GPU system metrics");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, "NVML could not count GPUs: no GPU system metrics");
                    None
                }
            }
        }

        /// Appends each GPU's values; a value NVML cannot read (not supported on that GPU) is
        /// left out.
        pub(crate) fn sample(&self, out: &mut Vec<Metric>) {
            for i in 0..self.count {
                let Ok(d) = self.nvml.device_by_index(i) else {
                    continue;
                };
                let key = |what: &str| format!("system/gpu_{i}_{what}");
                if let Ok(u) = d.utilization_rates() {
                    out.push(Metric::new(key("utilization_percentage"), f64::from(u.gpu)));
                }
                if let Ok(m) = d.memory_info() {
                    out.push(Metric::new(
                        key("memory_usage_megabytes"),
                        m.used as f64 / (1024.0 * 1024.0),
                    ));
                    if m.total > 0 {
                        out.push(Metric::new(
                            key("memory_usage_percentage"),
                            m.used as f64 / m.total as f64 * 100.0,
                        ));
                    }
                }
                if let Ok(t) = d.temperature(TemperatureSensor::Gpu) {
                    out.push(Metric::new(key("temperature_celsius"), f64::from(t)));
                }
                if let Ok(p) = d.power_usage() {
                    out.push(Metric::new(key("power_usage_watts"), f64::from(p) / 1000.0));
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        /// Without an NVIDIA driver (CI), opening NVML is `None`, never a panic or an error; with
        /// one, every sample carries the GPU's keys with plausible values.
        #[test]
        fn nvml_absent_is_none_and_present_gives_plausible_values() {
            match super::Gpus::open() {
                None => {
                    assert!(
                        nvml_wrapper::Nvml::init().is_err()
                            || nvml_wrapper::Nvml::init()
                                .and_then(|n| n.device_count())
                                .map_or(true, |c| c == 0)
                    );
                }
                Some(g) => {
                    let mut v = Vec::new();
                    g.sample(&mut v);
                    let util = v
                        .iter()
                        .find(|m| m.key == "system/gpu_0_utilization_percentage")
                        .expect("GPU 0 utilisation");
                    assert!((0.0..=100.0).contains(&util.value), "{v:?}");
                    let temp = v
                        .iter()
                        .find(|m| m.key == "system/gpu_0_temperature_celsius")
                        .expect("GPU 0 temperature");
                    assert!(temp.value > 0.0 && temp.value < 120.0, "{v:?}");
                }
            }
        }
    }
}
