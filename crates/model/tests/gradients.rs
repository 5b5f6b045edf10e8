//! Training-readiness without the oracle: every trainable parameter is reached by the loss, and
//! the `inputs_embeds` hook is a faithful, differentiable replacement for the embedding lookup.

mod common;

use coordexp_model::ParamInit;
use coordexp_model::attention::AttentionLayout;
use coordexp_model::model::{ForwardInput, PARAM_GROUPS, Qwen3VL, group_index};
use coordexp_model::vision::preprocess::{PixelNorm, patchify_rgb};
use tch::{Device, Kind, Tensor};

use common::{max_abs_diff, parity_config};

/// Two packed samples, the first with a 64×64 image (a 4×4 patch grid, 4 merged tokens).
fn inputs(
    model: &Qwen3VL,
) -> (Tensor, Tensor, Vec<i64>, coordexp_model::vision::preprocess::ImageBatch) {
    let c = model.config();
    let rgb: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 37 % 251) as u8).collect();
    let images = patchify_rgb(&rgb, 64, 64, &c.vision, &PixelNorm::QWEN3_VL).unwrap();
    let n = c.merged_tokens(images.grid_thw[0]);
    let mut a = vec![5, 6, c.vision_start_token_id];
    a.extend(std::iter::repeat_n(c.image_token_id, n as usize));
    a.extend([c.vision_end_token_id, 7, 8, 9]);
    let b = vec![10, 11, 12, 13, 14];
    let ids: Vec<i64> = a.iter().chain(&b).copied().collect();
    // Simplified positions (each segment from 0); exactness of mRoPE ids is the parity tests' job.
    let pos: Vec<i64> = (0..a.len() as i64).chain(0..b.len() as i64).collect();
    let pos = Tensor::from_slice(&pos).view([1, 1, -1]).expand([3, 1, ids.len() as i64], false);
    let cu = vec![0, a.len() as i64, ids.len() as i64];
    (Tensor::from_slice(&ids).view([1, -1]), pos, cu, images)
}

#[test]
fn every_trainable_parameter_receives_a_gradient() {
    tch::manual_seed(0);
    for tied in [true, false] {
        let model = Qwen3VL::new(
            &parity_config(tied),
            Kind::Float,
            Device::Cpu,
            ParamInit::Normal { std: 0.02 },
        );
        let (ids, pos, cu, images) = inputs(&model);
        let layout = AttentionLayout::packed(&cu, ids.size()[1], Device::Cpu).unwrap();
        let input = ForwardInput {
            input_ids: &ids,
            position_ids: &pos,
            layout: &layout,
            images: Some(&images),
            inputs_embeds: None,
        };
        let logits = model.forward(&input).unwrap();
        let w = Tensor::randn(logits.size(), (Kind::Float, Device::Cpu));
        (logits * w).sum(Kind::Float).backward();
        let vars = model.var_store().trainable_variables();
        assert_eq!(vars.len(), model.named_parameters().unwrap().len());
        for (name, p, _) in model.named_parameters().unwrap() {
            let g = p.grad();
            assert!(g.defined(), "{name} (tied={tied}) has no gradient");
            assert!(
                g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{name} (tied={tied}) has a zero gradient"
            );
        }
        let groups: std::collections::BTreeSet<_> =
            model.named_parameters().unwrap().iter().map(|(_, _, g)| group_index(*g)).collect();
        // Vision, merger and language; coordinate-row offsets exist only with that adapter.
        assert_eq!(groups.len(), PARAM_GROUPS.len() - 1);
    }
}

#[test]
fn inputs_embeds_replace_the_lookup_and_carry_gradient() {
    tch::manual_seed(1);
    let model = Qwen3VL::new(
        &parity_config(true),
        Kind::Float,
        Device::Cpu,
        ParamInit::Normal { std: 0.02 },
    );
    let (ids, pos, cu, images) = inputs(&model);
    let layout = AttentionLayout::packed(&cu, ids.size()[1], Device::Cpu).unwrap();
    let plain = ForwardInput {
        input_ids: &ids,
        position_ids: &pos,
        layout: &layout,
        images: Some(&images),
        inputs_embeds: None,
    };
    let reference = model.forward(&plain).unwrap();
    let embeds = model.embed(&ids).detach().set_requires_grad(true);
    let hooked = ForwardInput { inputs_embeds: Some(&embeds), ..plain };
    let logits = model.forward(&hooked).unwrap();
    assert_eq!(max_abs_diff(&logits, &reference), 0.0);
    logits.sum(Kind::Float).backward();
    let g = embeds.grad();
    // Image-pad rows are overwritten by image features, so only text rows get gradient.
    let text_row = g.get(0).get(0).abs().sum(Kind::Double).double_value(&[]);
    let pad_row = g.get(0).get(3).abs().sum(Kind::Double).double_value(&[]);
    assert!(text_row > 0.0);
    assert_eq!(pad_row, 0.0);
}

#[test]
fn logits_at_positions_equal_the_rows_of_the_full_logits_and_bf16_tracks_f32() {
    tch::manual_seed(3);
    let mut model = Qwen3VL::new(
        &parity_config(false),
        Kind::Float,
        Device::Cpu,
        ParamInit::Normal { std: 0.02 },
    );
    let (ids, pos, cu, images) = inputs(&model);
    let layout = AttentionLayout::packed(&cu, ids.size()[1], Device::Cpu).unwrap();
    let input = ForwardInput {
        input_ids: &ids,
        position_ids: &pos,
        layout: &layout,
        images: Some(&images),
        inputs_embeds: None,
    };
    let full = tch::no_grad(|| model.forward(&input).unwrap());
    let hidden = tch::no_grad(|| model.forward_hidden(&input).unwrap());
    let at = Tensor::from_slice(&[0i64, 7, 12]);
    let picked = tch::no_grad(|| model.logits_at(&hidden, &at));
    assert!(max_abs_diff(&picked, &full.get(0).index_select(0, &at)) <= 1e-6);
    // The same model in bf16 runs end to end and stays close to f32.
    model.set_kind(Kind::BFloat16);
    let low = tch::no_grad(|| model.forward(&input).unwrap());
    assert_eq!(low.kind(), Kind::BFloat16);
    let scale = full.abs().max().double_value(&[]);
    assert!(max_abs_diff(&low, &full) < 0.05 * scale.max(1.0));
}

#[test]
fn mismatched_inputs_are_errors_not_panics() {
    let model = Qwen3VL::new(&parity_config(true), Kind::Float, Device::Cpu, ParamInit::Zeros);
    let (ids, pos, cu, images) = inputs(&model);
    let layout = AttentionLayout::packed(&cu, ids.size()[1], Device::Cpu).unwrap();
    let base = ForwardInput {
        input_ids: &ids,
        position_ids: &pos,
        layout: &layout,
        images: Some(&images),
        inputs_embeds: None,
    };
    // Image tokens without images.
    assert!(model.forward(&ForwardInput { images: None, ..base }).is_err());
    // Ids outside the vocabulary.
    let big = Tensor::from_slice(&[1i64, 100_000]).view([1, 2]);
    let pos2 = Tensor::zeros([3, 1, 2], (Kind::Int64, Device::Cpu));
    let e = model
        .forward(&ForwardInput {
            input_ids: &big,
            position_ids: &pos2,
            layout: &AttentionLayout::Causal,
            images: None,
            inputs_embeds: None,
        })
        .unwrap_err();
    assert!(e.what().contains("vocabulary"), "{e}");
    // Positions of the wrong length.
    let short = pos.narrow(2, 0, 3);
    assert!(model.forward(&ForwardInput { position_ids: &short, ..base }).is_err());
    // An image that is not a multiple of 32 px.
    let c = model.config();
    assert!(patchify_rgb(&[0u8; 48 * 64 * 3], 64, 48, &c.vision, &PixelNorm::QWEN3_VL).is_err());
}
