//! What libtorch offers on this machine, and the tch device of a configured device.

use coordexp_core::device::DeviceSpec;
use tch::Device;

/// The facts a run manifest records about the tensor runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The libtorch version this binary was built against (tch pins it exactly).
    pub torch_version: &'static str,
    pub cuda_available: bool,
    pub cuda_devices: usize,
    pub cpu_threads: i32,
}

/// The libtorch version that tch 0.24 is built for; the build fails on any other.
pub const TORCH_VERSION: &str = "2.11.0";

pub fn info() -> RuntimeInfo {
    RuntimeInfo {
        torch_version: TORCH_VERSION,
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: usize::try_from(tch::Cuda::device_count()).unwrap_or(0),
        cpu_threads: tch::get_num_threads(),
    }
}

/// The tch device of a [`DeviceSpec`] (the grammar lives in `coordexp_core::device`).
pub fn device(spec: DeviceSpec) -> Device {
    match spec {
        DeviceSpec::Cpu => Device::Cpu,
        DeviceSpec::Cuda(n) => Device::Cuda(n),
    }
}

/// Fail with an input error (not a libtorch panic later) when `device` is a GPU this process
/// cannot use.
pub fn check_available(device: Device) -> Result<(), coordexp_core::Error> {
    let Device::Cuda(n) = device else { return Ok(()) };
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if !tch::Cuda::is_available() || n >= count {
        return Err(coordexp_core::Error::input(format!(
            "the model is to run on cuda:{n}, but libtorch sees {count} CUDA device(s)"
        ))
        .at("model.device")
        .hint("set model.device: cpu, or run on a machine with an NVIDIA GPU and its driver (and check CUDA_VISIBLE_DEVICES)"));
    }
    Ok(())
}

/// Parse `cpu`, `cuda` or `cuda:N` (the config's `model.device`); `None` if malformed.
pub fn parse_device(s: &str) -> Option<Device> {
    DeviceSpec::parse(s).map(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_garbage_does_not() {
        assert_eq!(parse_device("cpu"), Some(Device::Cpu));
        assert_eq!(parse_device("cuda:3"), Some(Device::Cuda(3)));
        assert_eq!(parse_device("cuda:x"), None);
        assert_eq!(parse_device("gpu"), None);
    }
}
