//! Devices: the `[training].device` names and burn devices, and whether a device can compute in
//! the requested mixed precision.

use burn::tensor::{Device, FloatDType};

use crate::config::MixedPrecision;
use crate::error::{Error, Result};

/// Refuses `precision` on `device` when `device.supports_dtype` says no.
pub fn check_precision(device: &Device, precision: MixedPrecision) -> Result<()> {
    check_precision_with(&format!("{device:?}"), precision, |d| {
        device.supports_dtype(d)
    })
}

/// [`check_precision`] with the support query given as a function (for devices described
/// rather than opened).
pub fn check_precision_with(
    device: &str,
    precision: MixedPrecision,
    supports: impl Fn(FloatDType) -> bool,
) -> Result<()> {
    let Some(dtype) = precision.dtype() else {
        return Ok(());
    };
    if supports(dtype) {
        return Ok(());
    }
    let hint = if precision == MixedPrecision::Bf16 && supports(FloatDType::F16) {
        ", or `mixed_precision = \"f16\"`, which this device supports".to_owned()
    } else {
        String::new()
    };
    Err(Error::UnsupportedPrecision {
        precision: precision.name().to_owned(),
        device: device.to_owned(),
        hint,
    })
}

pub(crate) const DEVICE_NAMES: &[&str] =
    &["auto", "cpu", "flex", "ndarray", "wgpu", "vulkan", "cuda"];

pub(crate) fn parse_device_name(name: &str) -> Result<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    DEVICE_NAMES
        .iter()
        .find(|n| **n == lower)
        .copied()
        .ok_or_else(|| {
            Error::Config(format!(
                "device `{name}` is unknown; expected one of {}",
                DEVICE_NAMES.join(", ")
            ))
        })
}

fn not_compiled(name: &str, feature: &str) -> Error {
    Error::Device {
        device: name.to_owned(),
        reason: format!(
            "exptrack-trainer was built without the `{feature}` cargo feature; enable it to use this device"
        ),
    }
}

/// Parses a device name into a burn [`Device`] (no autodiff).
///
/// `cpu` means burn's `flex` backend (or `ndarray` when only that feature is on). `wgpu`,
/// `vulkan` and `cuda` fail with [`Error::Device`] when the runtime is not compiled in or the
/// machine offers no adapter for it (so a missing driver is reported here, not as a panic at the
/// first tensor). `auto` picks the first compiled GPU runtime with a hardware adapter
/// ([`detect_gpu`]) and falls back to the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    match parse_device_name(name)? {
        "cpu" => cpu_device(name),
        "flex" => {
            #[cfg(feature = "flex")]
            {
                Ok(Device::flex())
            }
            #[cfg(not(feature = "flex"))]
            {
                Err(not_compiled(name, "flex"))
            }
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            {
                #[allow(deprecated)] // the user asked for it by name
                Ok(Device::ndarray())
            }
            #[cfg(not(feature = "ndarray"))]
            {
                Err(not_compiled(name, "ndarray"))
            }
        }
        "auto" => match first_gpu() {
            Some((runtime, device)) => {
                tracing::info!(runtime, "device `auto`: using the GPU");
                Ok(device)
            }
            None => cpu_device(name).map_err(|e| Error::Device {
                device: name.to_owned(),
                reason: format!(
                    "no GPU adapter found (GPU runtimes compiled in: {}) and no CPU backend: {e}",
                    list_or_none(&compiled_gpu_runtimes())
                ),
            }),
        },
        runtime => gpu_device(runtime, false)?.ok_or_else(|| no_adapter(name, runtime)),
    }
}

/// The GPU runtimes compiled into this build (cargo features `cuda`, `vulkan`, `wgpu`), in the
/// order `device = "auto"` tries them.
pub fn compiled_gpu_runtimes() -> Vec<&'static str> {
    [
        ("cuda", cfg!(feature = "cuda")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("wgpu", cfg!(feature = "wgpu")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// The first compiled GPU runtime (see [`compiled_gpu_runtimes`]) for which the machine has a
/// hardware adapter; `None` when there is none. Software rasterizers (lavapipe, llvmpipe) do not
/// count: name the runtime explicitly to use one.
pub fn detect_gpu() -> Option<&'static str> {
    first_gpu().map(|(runtime, _)| runtime)
}

fn first_gpu() -> Option<(&'static str, Device)> {
    compiled_gpu_runtimes()
        .into_iter()
        .find_map(|runtime| Some((runtime, gpu_device(runtime, true).ok()??)))
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn no_adapter(name: &str, runtime: &str) -> Error {
    let reason = match runtime {
        "cuda" => {
            "no CUDA device found: the NVIDIA driver (libcuda) is not loadable or reports no GPU"
        }
        "vulkan" => {
            "no Vulkan adapter found: install the Vulkan loader (libvulkan1) and a GPU driver's \
             ICD, or point VK_DRIVER_FILES at one"
        }
        _ => "no wgpu adapter found on any graphics API (Vulkan, Metal, DX12, OpenGL)",
    };
    Error::Device {
        device: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The default device of GPU `runtime` when the machine has an adapter for it (with
/// `hardware_only`, one that is not a software rasterizer); `Err` when the runtime is not
/// compiled in. Enumerating adapters opens no device.
fn gpu_device(runtime: &str, hardware_only: bool) -> Result<Option<Device>> {
    // (the runtime's default device, every adapter it lists, its software adapter if any)
    #[allow(unused_mut, unused_assignments)] // which arms exist depends on the features
    let mut found: Option<(Device, Vec<Device>, Option<Device>)> = None;
    #[cfg(feature = "cuda")]
    if runtime == "cuda" {
        let adapters = Device::enumerate(burn::tensor::DeviceType::Cuda);
        found = Some((Device::cuda(0), adapters.to_vec(), None));
    }
    #[cfg(feature = "vulkan")]
    if runtime == "vulkan" {
        use burn::tensor::DeviceKind;
        let adapters = Device::enumerate(burn::tensor::DeviceType::Vulkan);
        found = Some((
            Device::vulkan(DeviceKind::DefaultDevice),
            adapters.to_vec(),
            Some(Device::vulkan(DeviceKind::Cpu)),
        ));
    }
    #[cfg(feature = "wgpu")]
    if runtime == "wgpu" {
        use burn::tensor::DeviceKind;
        let adapters = Device::enumerate(burn::tensor::DeviceType::Wgpu);
        found = Some((
            Device::wgpu(DeviceKind::DefaultDevice),
            adapters.to_vec(),
            Some(Device::wgpu(DeviceKind::Cpu)),
        ));
    }
    let Some((device, adapters, software)) = found else {
        return Err(not_compiled(runtime, runtime));
    };
    let usable = adapters
        .iter()
        .any(|a| !hardware_only || Some(a) != software.as_ref());
    Ok(usable.then_some(device))
}

fn cpu_device(name: &str) -> Result<Device> {
    #[cfg(feature = "flex")]
    {
        let _ = name;
        Ok(Device::flex())
    }
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    {
        let _ = name;
        #[allow(deprecated)] // only reached when flex is not compiled in
        Ok(Device::ndarray())
    }
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    {
        Err(not_compiled(name, "flex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_uncompiled_ones_are_explained() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("AUTO").is_ok());
        for runtime in ["cuda", "vulkan", "wgpu"] {
            if !compiled_gpu_runtimes().contains(&runtime) {
                let err = parse_device(runtime).unwrap_err().to_string();
                assert!(err.contains(&format!("`{runtime}` cargo feature")), "{err}");
            }
        }
        if compiled_gpu_runtimes().is_empty() {
            assert_eq!(detect_gpu(), None);
        }
    }

    #[test]
    fn flex_supports_both_half_precisions() {
        let d = parse_device("cpu").unwrap();
        check_precision(&d, MixedPrecision::F16).unwrap();
        check_precision(&d, MixedPrecision::Bf16).unwrap();
        check_precision(&d, MixedPrecision::Off).unwrap();
    }

    #[test]
    fn unsupported_precision_is_refused_with_a_hint() {
        // A Vulkan-like device: f16 arithmetic, bf16 storage only.
        let vulkan = |d: FloatDType| d == FloatDType::F16;
        let err = check_precision_with("Vulkan(0)", MixedPrecision::Bf16, vulkan).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bf16") && msg.contains("Vulkan(0)"), "{msg}");
        assert!(
            msg.contains("\"f16\"`, which this device supports"),
            "{msg}"
        );
        check_precision_with("Vulkan(0)", MixedPrecision::F16, vulkan).unwrap();
        let none = |_: FloatDType| false;
        let err = check_precision_with("X", MixedPrecision::F16, none).unwrap_err();
        assert!(
            !err.to_string().contains("which this device supports"),
            "{err}"
        );
    }
}
