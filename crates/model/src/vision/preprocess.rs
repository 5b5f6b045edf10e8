//! Image → patch rows, exactly as the Qwen2-VL image processor lays them out with resizing off.
//!
//! Images are never resized here: the data pipeline sizes them once, offline, to multiples of
//! `patch_size · spatial_merge_size` (32 px), and a mismatch is an error. Each RGB image is
//! rescaled by 1/255, normalised with the model's mean/std, repeated to `temporal_patch_size`
//! frames, and cut into rows ordered (t, h/m, w/m, m, m) with each row laid out (C, T, p, p).

use std::path::Path;

use coordexp_core::Error;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::config::VisionConfig;

/// Per-channel normalisation from `preprocessor_config.json` (`image_mean`, `image_std`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PixelNorm {
    /// The released Qwen3-VL processors use 0.5 / 0.5, mapping pixels to [−1, 1].
    pub const QWEN3_VL: PixelNorm = PixelNorm { mean: [0.5; 3], std: [0.5; 3] };

    /// Read `preprocessor_config.json` from a model directory; a directory without the file gets
    /// [`PixelNorm::QWEN3_VL`].
    pub fn from_model_dir(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Ok(Self::QWEN3_VL);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, &e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("invalid JSON: {e}")).at(format!(
                "{}:{}",
                path.display(),
                e.line()
            ))
        })?;
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], Error> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    let f = |i: usize| a[i].as_f64().unwrap_or(0.0) as f32;
                    Ok([f(0), f(1), f(2)])
                }
                Some(_) => Err(Error::input(format!("`{key}` must be a list of three numbers"))
                    .at(path.display().to_string())),
            }
        };
        let norm = PixelNorm {
            mean: triple("image_mean", Self::QWEN3_VL.mean)?,
            std: triple("image_std", Self::QWEN3_VL.std)?,
        };
        if norm.std.iter().any(|&s| s <= 0.0) {
            return Err(Error::input("`image_std` must be positive").at(path.display().to_string()));
        }
        Ok(norm)
    }
}

/// The vision input of one forward pass: every image's patch rows, concatenated in the order
/// the images' pad tokens appear, plus each image's grid in patches.
#[derive(Debug)]
pub struct ImageBatch {
    /// [Σ t·h·w, C·T·p·p], float.
    pub patches: Tensor,
    /// (t, h, w) per image, in patches.
    pub grid_thw: Vec<[i64; 3]>,
}

impl ImageBatch {
    /// Concatenate single-image batches (e.g. the images of the samples of one pack).
    pub fn concat(parts: &[ImageBatch]) -> Option<ImageBatch> {
        if parts.is_empty() {
            return None;
        }
        let patches: Vec<&Tensor> = parts.iter().map(|p| &p.patches).collect();
        Some(ImageBatch {
            patches: Tensor::cat(&patches, 0),
            grid_thw: parts.iter().flat_map(|p| p.grid_thw.iter().copied()).collect(),
        })
    }

    pub fn to_device(&self, device: Device) -> ImageBatch {
        ImageBatch { patches: self.patches.to_device(device), grid_thw: self.grid_thw.clone() }
    }
}

/// Patchify one RGB image (`rgb` is `height·width·3` bytes, row-major, interleaved).
pub fn patchify_rgb(
    rgb: &[u8],
    width: i64,
    height: i64,
    c: &VisionConfig,
    norm: &PixelNorm,
) -> Result<ImageBatch, Error> {
    let unit = c.patch_size * c.spatial_merge_size;
    if width <= 0 || height <= 0 || width % unit != 0 || height % unit != 0 {
        return Err(Error::input(format!(
            "image of {width}×{height} px is not a positive multiple of {unit} px on both sides"
        ))
        .hint(
            "images are never resized at training time: materialise them with the data tools \
               (smart resize to multiples of 32) first",
        ));
    }
    if rgb.len() as i64 != width * height * 3 {
        return Err(Error::input(format!(
            "RGB buffer has {} bytes, expected {width}·{height}·3 = {}",
            rgb.len(),
            width * height * 3
        )));
    }
    let (p, m, tp, ch) = (c.patch_size, c.spatial_merge_size, c.temporal_patch_size, 3);
    if c.in_channels != ch {
        return Err(Error::input(format!(
            "the vision tower expects {} channels; only RGB images are supported",
            c.in_channels
        )));
    }
    let mean = Tensor::from_slice(&norm.mean).view([ch, 1, 1]);
    let std = Tensor::from_slice(&norm.std).view([ch, 1, 1]);
    let x =
        Tensor::from_slice(rgb).view([height, width, ch]).permute([2, 0, 1]).to_kind(Kind::Float);
    let x = ((x * (1.0f64 / 255.0)) - mean) / std; // [C, H, W]
    let (gh, gw) = (height / p, width / p);
    let frames = x.unsqueeze(0).expand([tp, ch, height, width], false);
    let rows = frames
        .reshape([1, tp, ch, gh / m, m, p, gw / m, m, p])
        .permute([0, 3, 6, 4, 7, 2, 1, 5, 8])
        .reshape([gh * gw, ch * tp * p * p]);
    Ok(ImageBatch { patches: rows, grid_thw: vec![[1, gh, gw]] })
}
