//! Named metric values of a micro-batch or a window, kept on the device.
//!
//! Why on the device: accumulating them step after step costs no host synchronisation; they are
//! read once per log step. Why named: each objective (stage 1, the stage-2 channels) has its own
//! terms, and the trainer's logging groups and averages them by name without knowing which
//! objective produced them.

use coordexp_core::{Error, Result};
use tch::{Device, Tensor};

/// Values (`[names.len()]`, f64) under fixed names.
pub struct LossTerms {
    names: &'static [&'static str],
    values: Tensor,
}

impl LossTerms {
    /// `values` must be a 1-D tensor with one value per name.
    pub fn new(names: &'static [&'static str], values: Tensor) -> Result<LossTerms> {
        if values.size() != [names.len() as i64] {
            return Err(Error::runtime(format!(
                "{} loss-term values for {} names",
                values.numel(),
                names.len()
            )));
        }
        Ok(LossTerms { names, values })
    }

    /// Zero under every name (a share of a window that computed nothing).
    pub fn zeros(names: &'static [&'static str], device: Device) -> LossTerms {
        LossTerms {
            names,
            values: Tensor::zeros([names.len() as i64], (tch::Kind::Double, device)),
        }
    }

    pub fn names(&self) -> &'static [&'static str] {
        self.names
    }

    /// The values `[names.len()]` (f64), e.g. to sum them over ranks in place.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// `(name, value)` pairs in name order (one device → host copy).
    pub fn metrics(&self) -> Result<Vec<(&'static str, f64)>> {
        let v = Vec::<f64>::try_from(self.values.to_device(Device::Cpu))
            .map_err(|e| Error::runtime(format!("reading loss terms from the device: {e}")))?;
        Ok(self.names.iter().copied().zip(v).collect())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Result<f64> {
        let i = self
            .names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| Error::runtime(format!("no loss term named `{name}`")))?;
        self.values
            .f_double_value(&[i as i64])
            .map_err(|e| Error::runtime(format!("reading loss term `{name}`: {e}")))
    }

    /// Add `other` (same names) into these values.
    pub fn accumulate(&mut self, other: &LossTerms) -> Result<()> {
        if self.names != other.names {
            return Err(Error::runtime(
                "loss terms of different objectives cannot be added (a bug in the step's grouping)",
            ));
        }
        self.values += &other.values;
        Ok(())
    }
}
