//! Which optimizer group a parameter belongs to: its module, decided by the model's one
//! classifier ([`coordexp_model::model::param_group`]: coordinate rows, merger, vision,
//! language), and whether it decays.
//!
//! Decay rule: no weight decay for biases (last segment `bias`) and for norm parameters (any
//! module segment containing `norm` — `input_layernorm`, `q_norm`, `norm1`, the final `norm` —
//! or starting with `ln_`); every other parameter decays.

use coordexp_core::Result;
use coordexp_core::config::schema::Module;
use coordexp_model::model::{group_index, param_group};

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
        2 * group_index(self.module) as u8 + u8::from(!self.decay)
    }
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

/// The group of a parameter: its module (the model's one classifier,
/// [`coordexp_model::model::param_group`]) and whether it decays.
pub fn group_of(name: &str) -> Result<GroupKey> {
    Ok(GroupKey { module: param_group(name)?, decay: decays(name) })
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
        let e = group_of("vision_tower.weight").unwrap_err();
        assert!(e.what().contains("vision_tower.weight"));
        assert!(e.hint_text().unwrap().contains("param_group"));
    }
}
