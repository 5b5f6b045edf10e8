//! The device grammar: `cpu`, `cuda` or `cuda:N`, parsed in one place.
//!
//! Why here: the config's coherence check must reject a bad `model.device` before any work
//! starts, and the tensor side must turn the same text into a device; two parsers drift (one
//! accepted `cuda:` with no number, the other did not). The tensor crate maps a [`DeviceSpec`]
//! to its own device type.

use std::fmt;

/// A compute device named in a config or on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    Cpu,
    /// CUDA device `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// What a device name must look like (error hints use it).
pub const DEVICE_GRAMMAR: &str = "use `cpu`, `cuda` or `cuda:N` (N a device index)";

impl DeviceSpec {
    /// Parse `cpu`, `cuda` or `cuda:N`; anything else is `None`.
    pub fn parse(text: &str) -> Option<DeviceSpec> {
        match text {
            "cpu" => Some(DeviceSpec::Cpu),
            "cuda" => Some(DeviceSpec::Cuda(0)),
            _ => {
                let n = text.strip_prefix("cuda:")?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                n.parse().ok().map(DeviceSpec::Cuda)
            }
        }
    }

    pub fn is_cpu(self) -> bool {
        self == DeviceSpec::Cpu
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse_and_nothing_else_does() {
        assert_eq!(DeviceSpec::parse("cpu"), Some(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Some(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Some(DeviceSpec::Cuda(3)));
        for bad in ["cuda:", "cuda:x", "cuda:-1", "cuda:+1", "gpu", "CPU", " cpu", "cuda:1 "] {
            assert_eq!(DeviceSpec::parse(bad), None, "{bad}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }
}
