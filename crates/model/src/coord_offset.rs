//! The coordinate-offset adapter: trainable offsets on the 1,000 coordinate rows of the
//! embedding and of the output head, with the base rows frozen (the reference's
//! `coord_offset_adapter`, `objective_packing.md` §4.2).
//!
//! ```text
//! embed(id)  = E[id] + O_e[id − c0]            for coordinate ids c0 ≤ id < c0 + N
//! logits[c]  = h·W[c] + h·O_h[c − c0]          O_h = O_e when the head is tied to the offsets
//! ```
//!
//! Both offsets start at zero, so attaching them changes nothing. They are tensors of their own
//! (`coord_offset_adapter.embed_offset`, `coord_offset_adapter.head_offset`, in the
//! coordinate-row optimizer group). A checkpoint keeps them apart in `coord_offset.safetensors`
//! ([`Qwen3VL::save_checkpoint`]; a resume continues exactly, and [`Qwen3VL::load`] attaches
//! them, frozen), while [`Qwen3VL::save`] folds them into the rows (a tied model whose head has
//! offsets of its own is saved untied), so what transformers or vLLM load computes the same.

use std::collections::BTreeMap;
use std::path::Path;

use coordexp_core::Error;
use tch::Tensor;

use crate::model::{ParamGroup, Qwen3VL};
use crate::weights;

/// The file of the offsets in a checkpoint directory.
pub const OFFSETS_FILE: &str = "coord_offset.safetensors";
const EMBED: &str = "coord_offset_adapter.embed_offset";
const HEAD: &str = "coord_offset_adapter.head_offset";
const FIRST_ID: &str = "coord_offset_adapter.first_id";
pub(crate) const EMBED_ROWS: &str = "model.language_model.embed_tokens.weight";
pub(crate) const HEAD_ROWS: &str = "lm_head.weight";

/// The offsets attached to a model.
#[derive(Debug)]
pub struct CoordOffset {
    /// The first coordinate id (`<|coord_0|>`); the offsets cover `n` consecutive ids.
    pub first_id: i64,
    pub n: i64,
    /// [n, hidden]
    pub embed: Tensor,
    /// [n, hidden]; `None` when the head uses `embed` (tied).
    pub head: Option<Tensor>,
}

impl CoordOffset {
    /// `embeds` [.., hidden] of `ids` with the offsets of the coordinate ids added.
    pub(crate) fn embed(&self, ids: &Tensor, embeds: Tensor) -> Tensor {
        let rel = ids - self.first_id;
        let inside = rel.ge(0).logical_and(&rel.lt(self.n));
        let rows = rel.clamp(0, self.n - 1);
        let mut shape = ids.size();
        shape.push(-1);
        let add = self.embed.index_select(0, &rows.view([-1])).view(shape.as_slice());
        embeds + add * inside.unsqueeze(-1).to_kind(self.embed.kind())
    }

    /// `logits` [.., V] of `hidden` [.., hidden] with the coordinate columns offset.
    pub(crate) fn logits(&self, hidden: &Tensor, logits: Tensor) -> Tensor {
        let o = self.head.as_ref().unwrap_or(&self.embed);
        let add = hidden.linear::<Tensor>(&o.to_kind(hidden.kind()), None).to_kind(logits.kind());
        let (a, n) = (self.first_id, self.n);
        let coord = logits.narrow(-1, a, n) + add;
        logits.slice_scatter(&coord, -1, Some(a), Some(a + n), 1)
    }
}

impl Qwen3VL {
    /// Attach zero offsets to the `n` coordinate rows from `first_id` (`tie_head`: the head
    /// uses the embedding's offsets) and freeze the embedding and head weights. Fails when the
    /// rows do not fit the vocabulary or offsets are attached already.
    pub fn attach_coord_offsets(
        &mut self,
        first_id: i64,
        n: i64,
        tie_head: bool,
    ) -> Result<(), Error> {
        if self.coord_offset.is_some() {
            return Err(Error::runtime("the model already has coordinate offsets"));
        }
        if let Some(name) = self
            .adapters
            .iter()
            .flat_map(|a| &a.saved)
            .find_map(|(n, _)| (n == EMBED_ROWS || n == HEAD_ROWS).then_some(n))
        {
            return Err(Error::input(format!(
                "coordinate offsets freeze {name}, which modules_to_save trains in full"
            ))
            .at("model.coord_offsets.enabled")
            .hint("train the coordinate rows either through the offsets or through modules_to_save, not both"));
        }
        let vocab = self.config().text.vocab_size;
        if first_id < 0 || n <= 0 || first_id + n > vocab {
            return Err(Error::input(format!(
                "coordinate rows {first_id}..{} do not fit the vocabulary of {vocab}",
                first_id + n
            ))
            .hint("expand the model's vocabulary with `coordexp model expand-vocab` first"));
        }
        let d = self.config().text.hidden_size;
        let opts = (self.kind(), self.device());
        let zeros = || Tensor::zeros([n, d], opts).set_requires_grad(true);
        for name in [EMBED_ROWS, HEAD_ROWS] {
            if let Some(t) = self.var_store().variables().get(name) {
                let _ = t.set_requires_grad(false);
            }
        }
        self.coord_offset =
            Some(CoordOffset { first_id, n, embed: zeros(), head: (!tie_head).then(zeros) });
        Ok(())
    }

    pub fn coord_offset(&self) -> Option<&CoordOffset> {
        self.coord_offset.as_ref()
    }

    /// The offset tensors with their names, in the coordinate-row group.
    pub fn coord_offset_parameters(&self) -> Vec<(String, Tensor, ParamGroup)> {
        let Some(o) = &self.coord_offset else { return Vec::new() };
        let mut v = vec![(EMBED.to_string(), o.embed.shallow_clone(), ParamGroup::CoordRows)];
        if let Some(h) = &o.head {
            v.push((HEAD.to_string(), h.shallow_clone(), ParamGroup::CoordRows));
        }
        v
    }

    /// Write the offsets to `dir/coord_offset.safetensors`.
    pub fn save_coord_offsets(&self, dir: &Path) -> Result<(), Error> {
        let Some(o) = &self.coord_offset else {
            return Err(Error::runtime("the model has no coordinate offsets to save"));
        };
        let first = Tensor::from_slice(&[o.first_id]);
        let mut named: Vec<(String, Tensor)> = vec![(FIRST_ID.into(), first)];
        for (n, t, _) in self.coord_offset_parameters() {
            named.push((n, t.detach().to_device(tch::Device::Cpu)));
        }
        let refs: Vec<(&String, &Tensor)> = named.iter().map(|(n, t)| (n, t)).collect();
        weights::write_safetensors(&dir.join(OFFSETS_FILE), &refs)
    }

    /// Attach the offsets saved in `dir`, unmerged (trainable: a resumed run turns them on).
    pub fn load_coord_offsets(&mut self, dir: &Path) -> Result<(), Error> {
        let path = dir.join(OFFSETS_FILE);
        let stored: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| {
                Error::input(format!("cannot read the coordinate offsets: {e}"))
                    .at(path.display().to_string())
            })?
            .into_iter()
            .collect();
        let get = |k: &str| {
            stored.get(k).ok_or_else(|| {
                Error::input(format!("the offsets file has no `{k}`"))
                    .at(path.display().to_string())
            })
        };
        let first = get(FIRST_ID)?.int64_value(&[0]);
        let embed = get(EMBED)?;
        let head = stored.get(HEAD);
        self.attach_coord_offsets(first, embed.size()[0], head.is_none())
            .map_err(|e| e.at(path.display().to_string()))?;
        let d = self.config().text.hidden_size;
        tch::no_grad(|| -> Result<(), Error> {
            let Some(o) = &self.coord_offset else { return Ok(()) };
            let pairs = [(Some(&o.embed), Some(embed)), (o.head.as_ref(), head)];
            for (slot, value) in pairs {
                if let (Some(slot), Some(value)) = (slot, value) {
                    if value.size() != [o.n, d] {
                        return Err(Error::input(format!(
                            "offsets of shape {:?}, expected [{}, {d}]",
                            value.size(),
                            o.n
                        ))
                        .at(path.display().to_string()));
                    }
                    slot.shallow_clone().copy_(&value.to_kind(slot.kind()));
                }
            }
            Ok(())
        })
    }

    /// Fold the offsets into the embedding and head rows of `out` (weights to save, by name;
    /// missing ones come from the model): returns true when a tied model got an
    /// `lm_head.weight` of its own (its head has separate offsets) and must be saved untied.
    pub(crate) fn fold_offsets(&self, out: &mut BTreeMap<String, Tensor>) -> Result<bool, Error> {
        let Some(o) = &self.coord_offset else { return Ok(false) };
        let mut vars = self.var_store().variables();
        for (k, v) in out.iter() {
            vars.insert(k.clone(), v.shallow_clone());
        }
        let fold = |base: &Tensor, offset: &Tensor| {
            tch::no_grad(|| {
                let rows = base.narrow(0, o.first_id, o.n) + offset.to_kind(base.kind());
                base.slice_scatter(&rows, 0, Some(o.first_id), Some(o.first_id + o.n), 1)
            })
        };
        let embed = vars
            .get(EMBED_ROWS)
            .ok_or_else(|| Error::runtime("the model has no embedding table"))?;
        out.insert(EMBED_ROWS.to_string(), fold(embed, &o.embed));
        let head_offset = o.head.as_ref().unwrap_or(&o.embed);
        Ok(match vars.get(HEAD_ROWS) {
            Some(head) => {
                out.insert(HEAD_ROWS.to_string(), fold(head, head_offset));
                false
            }
            // Tied: the patched embedding is the head too, unless the head has its own offset.
            None if o.head.is_some() => {
                out.insert(HEAD_ROWS.to_string(), fold(embed, head_offset));
                true
            }
            None => false,
        })
    }
}

/// True when `dir` holds saved coordinate offsets.
pub fn has_offsets(dir: &Path) -> bool {
    dir.join(OFFSETS_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, SpecialIds};
    use crate::layers::ParamInit;
    use tch::{Device, Kind};

    fn model() -> Qwen3VL {
        tch::manual_seed(1);
        let c = ModelConfig::tiny(
            64,
            SpecialIds { image_pad: 60, video_pad: 61, vision_start: 62, vision_end: 63 },
        );
        Qwen3VL::new(&c, Kind::Float, Device::Cpu, ParamInit::Normal { std: 0.02 })
    }

    #[test]
    fn offsets_move_only_the_coordinate_rows_of_embedding_and_head() {
        let mut m = model();
        let ids = Tensor::from_slice(&[3i64, 10, 11, 19, 20]).view([1, 5]);
        let (e0, l0) = tch::no_grad(|| {
            let e = m.embed(&ids);
            let l = m.logits(&e);
            (e, l)
        });
        assert!(m.attach_coord_offsets(60, 10, true).is_err(), "rows past the vocabulary");
        m.attach_coord_offsets(10, 10, true).unwrap();
        let e1 = tch::no_grad(|| m.embed(&ids));
        assert_eq!(e0, e1, "zero offsets change nothing");
        let _ = tch::no_grad(|| m.coord_offset().unwrap().embed.shallow_clone().fill_(0.5));
        let (e2, l2) = tch::no_grad(|| {
            let e = m.embed(&ids);
            (e.shallow_clone(), m.logits(&e0))
        });
        let moved: Vec<bool> = (0..5)
            .map(|i| (e2.get(0).get(i) - e0.get(0).get(i)).abs().max().double_value(&[]) > 0.1)
            .collect();
        assert_eq!(moved, [false, true, true, true, false], "ids 10..19 are the coordinate rows");
        let dl = (l2 - l0).abs().amax([0i64, 1].as_slice(), false);
        let cols: Vec<bool> = (0..64).map(|c| dl.double_value(&[c]) > 1e-6).collect();
        assert!(cols[10..20].iter().all(|&b| b) && !cols[..10].iter().any(|&b| b));
        assert!(!cols[20..].iter().any(|&b| b));
    }
}
