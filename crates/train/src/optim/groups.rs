//! Which optimizer group a parameter belongs to, decided by its (HF-layout) name.
//!
//! Module rules, first match wins:
//! 1. **coord_rows**: any name with a segment starting with `coord_offset` (the coordinate-row
//!    adapter: its embedding and head offsets);
//! 2. **merger**: prefix `model.visual.merger.` or `model.visual.deepstack_merger_list.` (the
//!    aligner gets its own rate; the reference folds it into the vision group by accident);
//! 3. **vision**: prefix `model.visual.`;
//! 4. **language**: prefix `model.language_model.` or `lm_head.`.
//!
//! A name matching none of them is an error: a parameter silently trained at a default rate is
//! how the reference lost its aligner rate.
//!
//! Decay rule: no weight decay for biases (last segment `bias`) and for norm parameters (any
//! module segment containing `norm` — `input_layernorm`, `q_norm`, `norm1`, the final `norm` —
//! or starting with `ln_`); every other parameter decays.

use coordexp_core::config::schema::Module;
use coordexp_core::{Error, Result};

/// One optimizer group: a module and whether its parameters decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupKey {
    pub module: Module,
    pub decay: bool,
}

impl GroupKey {
    /// Position in the fixed group order (vision, merger, language, coord rows; decayed first),
    /// so the group layout never depends on parameter order.
    pub fn rank(self) -> u8 {
        let m = match self.module {
            Module::Vision => 0,
            Module::Merger => 1,
            Module::Language => 2,
            Module::CoordRows => 3,
        };
        2 * m + u8::from(!self.decay)
    }
}

/// The module a parameter belongs to (see the module docs).
pub fn module_of(name: &str) -> Result<Module> {
    if name.split('.').any(|seg| seg.starts_with("coord_offset")) {
        return Ok(Module::CoordRows);
    }
    if name.starts_with("model.visual.merger.")
        || name.starts_with("model.visual.deepstack_merger_list.")
    {
        return Ok(Module::Merger);
    }
    if name.starts_with("model.visual.") {
        return Ok(Module::Vision);
    }
    if name.starts_with("model.language_model.") || name.starts_with("lm_head.") {
        return Ok(Module::Language);
    }
    Err(Error::runtime(format!("parameter `{name}` belongs to no optimizer group"))
        .hint("parameters must use HF Qwen3-VL names (model.visual.*, model.language_model.*, lm_head.*, *coord_offset*); extend crates/train/src/optim/groups.rs for a new module"))
}

/// Whether a parameter receives weight decay (see the module docs).
pub fn decays(name: &str) -> bool {
    let mut segs: Vec<&str> = name.split('.').collect();
    let Some(last) = segs.pop() else { return true };
    if last == "bias" {
        return false;
    }
    !segs.iter().any(|s| s.contains("norm") || s.starts_with("ln_"))
}

/// The group of a parameter.
pub fn group_of(name: &str) -> Result<GroupKey> {
    Ok(GroupKey { module: module_of(name)?, decay: decays(name) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_vl_names_land_in_their_groups() {
        let cases = [
            ("model.visual.patch_embed.proj.weight", Module::Vision, true),
            ("model.visual.blocks.0.norm1.weight", Module::Vision, false),
            ("model.visual.blocks.0.attn.qkv.bias", Module::Vision, false),
            ("model.visual.merger.linear_fc1.weight", Module::Merger, true),
            ("model.visual.merger.norm.weight", Module::Merger, false),
            ("model.visual.deepstack_merger_list.2.linear_fc2.weight", Module::Merger, true),
            ("model.language_model.embed_tokens.weight", Module::Language, true),
            ("model.language_model.layers.3.self_attn.q_norm.weight", Module::Language, false),
            ("model.language_model.layers.3.input_layernorm.weight", Module::Language, false),
            ("model.language_model.layers.3.mlp.down_proj.weight", Module::Language, true),
            ("model.language_model.norm.weight", Module::Language, false),
            ("lm_head.weight", Module::Language, true),
            ("model.language_model.coord_offset.embed", Module::CoordRows, true),
        ];
        for (name, module, decay) in cases {
            assert_eq!(group_of(name).unwrap(), GroupKey { module, decay }, "{name}");
        }
    }

    #[test]
    fn an_unknown_parameter_name_is_an_error() {
        let e = module_of("vision_tower.weight").unwrap_err();
        assert!(e.what().contains("vision_tower.weight"));
        assert!(e.hint_text().unwrap().contains("groups.rs"));
    }
}
