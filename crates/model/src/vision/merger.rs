//! The patch merger: each 2×2 block of patch features becomes one text-width token.
//! The final merger normalises each patch before grouping; the DeepStack mergers group first and
//! normalise the concatenation ("post-shuffle" norm). Both use exact (erf) GELU.

use tch::Tensor;
use tch::nn::Path;

use crate::config::VisionConfig;
use crate::layers::{LayerNorm, Linear, ParamInit};

#[derive(Debug)]
pub struct PatchMerger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    grouped: i64,
    postshuffle_norm: bool,
}

impl PatchMerger {
    pub fn new(p: &Path<'_>, c: &VisionConfig, postshuffle_norm: bool, init: ParamInit) -> Self {
        let grouped = c.hidden_size * c.spatial_merge_size * c.spatial_merge_size;
        let norm_dim = if postshuffle_norm { grouped } else { c.hidden_size };
        PatchMerger {
            norm: LayerNorm::new(&(p / "norm"), norm_dim, 1e-6),
            fc1: Linear::new(&(p / "linear_fc1"), grouped, grouped, true, init),
            fc2: Linear::new(&(p / "linear_fc2"), grouped, c.out_hidden_size, true, init),
            grouped,
            postshuffle_norm,
        }
    }

    pub(crate) fn linears(&mut self) -> [&mut Linear; 2] {
        [&mut self.fc1, &mut self.fc2]
    }

    /// x [N, D] in merge-block order → [N / merge², out_hidden].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = if self.postshuffle_norm {
            self.norm.forward(&x.view([-1, self.grouped]))
        } else {
            self.norm.forward(x).view([-1, self.grouped])
        };
        self.fc2.forward(&self.fc1.forward(&x).gelu("none"))
    }
}
