//! The stream of packs the trainer consumes: epoch after epoch, each with its own packing plan.
//!
//! Everything here is a pure function of the data, the config and the root seed: epoch `e`'s
//! plan is `plan(lengths, packing, epoch_seed(root, e))`, and the trainer's position in the
//! stream is a [`Cursor`] (epoch, pack index) saved in every checkpoint — so a resumed run sees
//! exactly the packs the uninterrupted run would have seen.
//!
//! Without packing (`packing.enabled: false`) every sample is a pack of its own, shuffled per
//! epoch by the same seeded planner (a capacity of one token makes each sample an oversize
//! singleton).

use coordexp_core::config::schema::{Config, OnOverflow, Packing};
use coordexp_core::{Error, Result, seed};
use coordexp_text::{EncodedSample, Encoder, PackPlan, plan};
use serde::{Deserialize, Serialize};

use coordexp_rollout::Split;

/// Where the trainer is in the stream: the next pack to take is pack `pack` of epoch `epoch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub pack: u64,
}

/// One pack: (dataset index, encoded sample) in pack order.
pub type Pack = Vec<(u64, EncodedSample)>;

/// The current epoch's encoded samples and plan.
pub struct Epochs<'a> {
    split: &'a Split,
    encoder: &'a Encoder,
    cfg: &'a Config,
    epoch: u64,
    samples: Vec<EncodedSample>,
    plan: PackPlan,
    /// Checksum of epoch 0's plan (for the run manifest).
    first_checksum: String,
}

impl<'a> Epochs<'a> {
    /// Encode and plan epoch 0: every encoding or overflow error of the data surfaces here,
    /// before training starts.
    pub fn new(split: &'a Split, encoder: &'a Encoder, cfg: &'a Config) -> Result<Epochs<'a>> {
        let (samples, plan) = prepare(split, encoder, cfg, 0)?;
        let first_checksum = plan.checksum().to_string();
        Ok(Epochs { split, encoder, cfg, epoch: 0, samples, plan, first_checksum })
    }

    pub fn first_plan_checksum(&self) -> &str {
        &self.first_checksum
    }

    /// Packs per epoch of the current plan.
    pub fn packs_in_epoch(&self) -> usize {
        self.plan.len()
    }

    /// Mean fill of the current plan's packs.
    pub fn mean_fill(&self) -> f64 {
        self.plan.stats().mean_fill
    }

    /// The pack at `cursor`, advancing it (into the next epoch after the last pack).
    pub fn take(&mut self, cursor: &mut Cursor) -> Result<Pack> {
        if cursor.pack >= self.plan.len() as u64 {
            cursor.epoch += 1;
            cursor.pack = 0;
        }
        if cursor.epoch != self.epoch {
            let (samples, plan) = prepare(self.split, self.encoder, self.cfg, cursor.epoch)?;
            self.epoch = cursor.epoch;
            self.samples = samples;
            self.plan = plan;
        }
        let pack = self
            .plan
            .pack(cursor.pack as usize)
            .iter()
            .map(|&i| (u64::from(i), self.samples[i as usize].clone()))
            .collect();
        cursor.pack += 1;
        Ok(pack)
    }
}

fn prepare(
    split: &Split,
    encoder: &Encoder,
    cfg: &Config,
    epoch: u64,
) -> Result<(Vec<EncodedSample>, PackPlan)> {
    let epoch_seed = seed::epoch_seed(cfg.run.seed, epoch);
    let samples = split.encode_train(
        encoder,
        cfg.prompt.field_order,
        cfg.prompt.object_ordering,
        epoch_seed,
    )?;
    let lengths = samples
        .iter()
        .map(|s| u32::try_from(s.len()))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| Error::input("a sample has more than 2^32 tokens"))?;
    let packing = if cfg.packing.enabled {
        cfg.packing.clone()
    } else {
        Packing { enabled: false, max_length: 1, min_fill: 0.0, on_overflow: OnOverflow::Singleton }
    };
    let plan = plan(&lengths, &packing, epoch_seed).map_err(|e| {
        // The planner names the sample by index; say which record that is.
        let at = (0..split.len())
            .find(|&i| lengths[i] as usize > packing.max_length)
            .map(|i| split.location(i));
        match at {
            Some(at) => e.at(at),
            None => e,
        }
    })?;
    if plan.is_empty() {
        return Err(Error::input(format!(
            "epoch {epoch} has no packs: every pack is below packing.min_fill = {}",
            cfg.packing.min_fill
        ))
        .at("packing.min_fill")
        .hint("lower packing.min_fill or add training data"));
    }
    Ok((samples, plan))
}
