//! Gradients of a fixed parameter list, accumulated over several partial backward passes.
//!
//! Why partial passes: some activations are too large to keep until one backward pass at the
//! end — the `[rows, vocab]` logits of a 152k vocabulary above all. Such a piece of the graph is
//! cut at a *leaf* (a detached copy of its input that requires grad), its loss is backwarded at
//! once (freeing its graph) into the parameters and the leaf, and the leaf's gradient is later
//! pushed through the rest of the graph by [`surrogate`]. tch has no custom autograd functions,
//! so this is how a memory-bounded step is written without one.

use coordexp_core::Error;
use tch::{Kind, Tensor};

/// Parameter gradients accumulated over partial backward passes, in the order of `params`.
pub struct Grads<'a> {
    params: &'a [Tensor],
    acc: Vec<Option<Tensor>>,
}

impl<'a> Grads<'a> {
    /// An empty accumulator for `params` (each must require grad).
    pub fn new(params: &'a [Tensor]) -> Grads<'a> {
        Grads { params, acc: params.iter().map(|_| None).collect() }
    }

    /// Backward the scalar `loss` into the parameters (added to what is accumulated) and into
    /// `leaves`, whose gradients are returned (zeros for a leaf the loss does not reach). The
    /// graph of `loss` is freed.
    pub fn backward(&mut self, loss: &Tensor, leaves: &[&Tensor]) -> Result<Vec<Tensor>, Error> {
        let mut inputs: Vec<&Tensor> = leaves.to_vec();
        inputs.extend(self.params.iter());
        let mut out = Tensor::f_run_backward(&[loss], &inputs, false, false)
            .map_err(|e| Error::runtime(format!("partial backward pass: {e}")))?;
        let param_grads = out.split_off(leaves.len());
        // Low-precision gradients are summed in f32: many pieces must not add one bf16
        // rounding each to what one pass computes at once.
        for (acc, g) in self.acc.iter_mut().zip(param_grads) {
            if !g.defined() {
                continue;
            }
            let g = match g.kind() {
                Kind::Half | Kind::BFloat16 => g.to_kind(Kind::Float),
                _ => g,
            };
            match acc {
                Some(a) => {
                    let _ = a.g_add_(&g);
                }
                None => *acc = Some(g),
            }
        }
        Ok(out
            .into_iter()
            .zip(leaves)
            .map(|(g, leaf)| if g.defined() { g } else { leaf.zeros_like() })
            .collect())
    }

    /// The accumulated gradients in each parameter's dtype (None where no pass reached it).
    pub fn into_vec(self) -> Vec<Option<Tensor>> {
        self.acc
            .into_iter()
            .zip(self.params)
            .map(|(g, p)| g.map(|g| if g.kind() == p.kind() { g } else { g.to_kind(p.kind()) }))
            .collect()
    }
}

/// A scalar whose gradient w.r.t. everything upstream of `outputs` is the vector-Jacobian
/// product with `grads` (the gradients of the cut-off loss w.r.t. `outputs`) and whose value is
/// zero, so it can be added to a loss without changing it.
pub fn surrogate(outputs: &[(&Tensor, &Tensor)]) -> Option<Tensor> {
    outputs
        .iter()
        .map(|(out, g)| (*out * g.detach().to_kind(out.kind())).sum(Kind::Float))
        .reduce(|a, b| a + b)
        .map(|s| &s - s.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_cut_at_a_leaf_and_pushed_back_has_the_gradient_of_the_uncut_loss() {
        tch::manual_seed(3);
        let w = Tensor::randn([4, 3], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let v = Tensor::randn([5, 3], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([6, 4], (Kind::Double, tch::Device::Cpu));
        let loss_of = |h: &Tensor| h.matmul(&v.tr()).log_softmax(1, Kind::Double).sum(Kind::Double);
        let h = x.matmul(&w).tanh();
        let whole = Tensor::run_backward(&[loss_of(&h)], &[&w, &v], false, false);

        let params = [w.shallow_clone(), v.shallow_clone()];
        let mut grads = Grads::new(&params);
        let h = x.matmul(&w).tanh();
        let mut leaf_grads = Vec::new();
        for (start, len) in [(0, 4), (4, 2)] {
            let leaf = h.narrow(0, start, len).detach().set_requires_grad(true);
            leaf_grads.extend(grads.backward(&loss_of(&leaf), &[&leaf]).unwrap());
        }
        let rest = surrogate(&[(&h, &Tensor::cat(&leaf_grads, 0))]).unwrap();
        assert_eq!(rest.double_value(&[]), 0.0);
        let tail = Tensor::run_backward(&[rest], &[&w], false, false);
        let mut cut = grads.into_vec();
        let gw = cut[0].take().map_or_else(|| tail[0].shallow_clone(), |a| a + &tail[0]);
        let gv = cut[1].take().unwrap();
        assert!(gw.allclose(&whole[0], 1e-12, 1e-12, false));
        assert!(gv.allclose(&whole[1], 1e-12, 1e-12, false));
    }
}
