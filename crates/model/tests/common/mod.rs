//! Shared helpers of the model's oracle tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use coordexp_model::config::{ModelConfig, SpecialIds};
use coordexp_model::vision::preprocess::{ImageBatch, PixelNorm, patchify_rgb};
use tch::{Kind, Tensor};

const ORACLE: &str = include_str!("../oracle/qwen3vl.py");

pub fn oracle(request: &serde_json::Value) -> serde_json::Value {
    coordexp_testkit::run_python_json(ORACLE, request)
}

/// A tiny configuration that exercises every component: GQA, all three mRoPE axes, DeepStack at
/// two levels from non-adjacent vision blocks, a position table smaller and larger than the
/// image grids.
pub fn parity_config(tied: bool) -> ModelConfig {
    let mut c = ModelConfig::tiny(
        400,
        SpecialIds { image_pad: 390, video_pad: 391, vision_start: 388, vision_end: 389 },
    );
    c.text.num_hidden_layers = 3;
    c.vision.depth = 3;
    c.vision.deepstack_visual_indexes = vec![0, 2];
    c.tie_word_embeddings = tied;
    c
}

pub fn read_case(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Our preprocessing of the case's raw images, checked against the HF processor's patches.
pub fn case_images(config: &ModelConfig, case: &HashMap<String, Tensor>) -> Option<ImageBatch> {
    let mut parts = Vec::new();
    for i in 0.. {
        let Some(img) = case.get(&format!("image_{i}")) else { break };
        let s = img.size();
        let bytes: Vec<u8> = Vec::try_from(img.flatten(0, -1)).unwrap();
        parts.push(patchify_rgb(&bytes, s[1], s[0], &config.vision, &PixelNorm::QWEN3_VL).unwrap());
    }
    let batch = ImageBatch::concat(&parts)?;
    let d = max_abs_diff(&batch.patches, &case["pixel_values"]);
    assert!(d <= 1e-6, "pixel patches differ from the HF processor by {d}");
    let grids: Vec<i64> = Vec::try_from(case["image_grid_thw"].flatten(0, -1)).unwrap();
    assert_eq!(batch.grid_thw.iter().flatten().copied().collect::<Vec<_>>(), grids);
    Some(batch)
}
