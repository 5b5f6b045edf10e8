//! `coordexp model logits`: the full-vocabulary logits of one record, computed exactly as the
//! trainer feeds it (chat template, tokens, mRoPE positions, pixels — the same [`RowInputs`]),
//! written with the inputs that produced them so another implementation can be compared
//! position by position.
//!
//! The safetensors file holds `logits` `[L, V]` (f32), `input_ids` `[L]`, `labels` `[L]`
//! (−100 where unsupervised; label `t` is the target of logits row `t − 1`), `position_ids`
//! `[4, L]` (the text row, then the t/h/w mRoPE rows), and for a record with images
//! `pixel_values` `[patches, C·T·p·p]` (normalised, in the HF patch order) and
//! `image_grid_thw` `[images, 3]`. Objects keep their file order.

use crate::inputs::RowInputs;
use crate::session::Session;
use crate::split::Split;
use coordexp_core::config::schema::{Config, ObjectOrdering};
use coordexp_core::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// What [`record_logits`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsReport {
    pub tokens: i64,
    pub vocab: i64,
    pub images: usize,
    pub supervised: usize,
}

/// Compute the logits of the record on 1-based line `line` of `data` with the model in
/// `model_path` (prompts, template, dtype and device from `cfg`) and write them to `out`.
pub fn record_logits(
    cfg: &Config,
    model_path: &Path,
    adapter: Option<&Path>,
    data: &Path,
    line: usize,
    out: &Path,
) -> Result<LogitsReport> {
    let session = Session::open(cfg, Some(model_path), None)?;
    let split = Split::load_line(data, line, session.max_pixels)?;
    let sample = split
        .encode_train(&session.encoder, cfg.prompt.field_order, ObjectOrdering::Sorted, 0)?
        .pop()
        .ok_or_else(|| Error::runtime("no sample was encoded"))?;
    let mut model = session.load_model(model_path)?;
    if let Some(a) = adapter {
        model.load_adapter(a)?;
    }
    let vision = session.vision(&model);
    let device = session.device;
    let item = &split.items[0];
    let (inputs, packed) = RowInputs::build(&[(0, &sample, &item.pixels)], &vision, device)?;
    let logits = tch::no_grad(|| -> Result<Tensor> {
        let hidden = model.forward_hidden(&inputs.forward_input())?;
        Ok(model.logits(&hidden).squeeze_dim(0).to_kind(Kind::Float).to_device(Device::Cpu))
    })?;
    let l = packed.len() as i64;
    let labels = packed.labels.clone();
    let mut tensors = vec![
        ("logits".to_string(), logits.shallow_clone()),
        ("input_ids".to_string(), inputs.input_ids.view([l]).to_device(Device::Cpu)),
        ("labels".to_string(), Tensor::from_slice(&labels)),
        ("position_ids".to_string(), inputs.position_ids.view([4, l]).to_device(Device::Cpu)),
    ];
    if let Some(images) = &inputs.images {
        let grids: Vec<i64> = images.grid_thw.iter().flatten().copied().collect();
        tensors.push((
            "pixel_values".into(),
            images.patches.to_kind(Kind::Float).to_device(Device::Cpu),
        ));
        tensors.push((
            "image_grid_thw".into(),
            Tensor::from_slice(&grids).view([images.grid_thw.len() as i64, 3]),
        ));
    }
    Tensor::write_safetensors(&tensors, out).map_err(|e| {
        Error::runtime(format!("cannot write the logits: {e}"))
            .at(out.display().to_string())
            .hint("check that the output directory exists and is writable")
    })?;
    Ok(LogitsReport {
        tokens: l,
        vocab: logits.size().last().copied().unwrap_or(0),
        images: inputs.images.as_ref().map_or(0, |i| i.grid_thw.len()),
        supervised: labels.iter().filter(|&&x| x != coordexp_text::IGNORE_INDEX).count(),
    })
}
