//! The text side of a model directory: tokenizer, chat template, vision geometry.
//!
//! The model's own files are the contract (DESIGN decision 2): the image-token ids and the patch
//! geometry come from `config.json`, the pixel limits from the image-processor config, the chat
//! template from the files transformers reads, in the same order of precedence. Every missing
//! file or key is an input error that names the file and what it is needed for.

use crate::template::ChatTemplate;
use crate::vocab::CoordVocab;
use coordexp_core::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// How images become tokens for this model (Qwen3-VL: 16-pixel patches, 2×2 merge, 2 frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionSpec {
    /// Side of one vision patch in pixels (`vision_config.patch_size`).
    pub patch_size: u32,
    /// Frames folded into one temporal patch (`vision_config.temporal_patch_size`).
    pub temporal_patch_size: u32,
    /// Side of the square of patches merged into one language token
    /// (`vision_config.spatial_merge_size`).
    pub merge_size: u32,
    /// Fewest pixels the model's image processor accepts without upscaling.
    pub min_pixels: u64,
    /// Most pixels the model's image processor accepts without downscaling.
    pub max_pixels: u64,
}

impl VisionSpec {
    /// Image sides must be multiples of this many pixels (patch × merge) to need no resize.
    pub fn factor(&self) -> u32 {
        self.patch_size * self.merge_size
    }
}

/// Ids of the tokens that frame an image in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionTokens {
    /// `<|image_pad|>`: one per merged patch after expansion.
    pub image_pad: u32,
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|vision_end|>`.
    pub vision_end: u32,
}

/// Everything the text pipeline reads from a model directory, verified.
#[derive(Clone)]
pub struct ModelDir {
    root: PathBuf,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    template_file: PathBuf,
    vision: VisionSpec,
    vision_tokens: VisionTokens,
    vocab: CoordVocab,
}

impl std::fmt::Debug for ModelDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelDir")
            .field("root", &self.root)
            .field("template_file", &self.template_file)
            .field("vision", &self.vision)
            .field("vision_tokens", &self.vision_tokens)
            .field("vocab", &self.vocab)
            .finish_non_exhaustive()
    }
}

impl ModelDir {
    /// Load and verify `dir`: tokenizer, chat template, vision geometry, coordinate vocabulary.
    pub fn load(dir: &Path) -> Result<ModelDir> {
        if !dir.is_dir() {
            return Err(Error::input(format!("model directory {} does not exist", dir.display()))
                .hint("set model.path in the config (or pass --model DIR) to a directory with config.json and tokenizer.json"));
        }
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let (template_src, template_file) = find_chat_template(dir)?;
        let template = ChatTemplate::new(template_src)
            .map_err(|e| e.at(template_file.display().to_string()))?;
        let config_path = dir.join("config.json");
        let config = read_json(&config_path, "the image token ids and the vision patch geometry")?;
        let (vision, vision_tokens) = vision_from_config(dir, &config_path, &config)?;
        check_token_literal(&tokenizer, vision_tokens.image_pad, "<|image_pad|>", &config_path)?;
        let vocab = CoordVocab::verify(&tokenizer)?;
        Ok(ModelDir {
            root: dir.to_path_buf(),
            tokenizer: Arc::new(tokenizer),
            template,
            template_file,
            vision,
            vision_tokens,
            vocab,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The file the chat template was read from (recorded in run manifests).
    pub fn template_file(&self) -> &Path {
        &self.template_file
    }

    pub fn vision(&self) -> VisionSpec {
        self.vision
    }

    pub fn vision_tokens(&self) -> VisionTokens {
        self.vision_tokens
    }

    /// The verified coordinate vocabulary.
    pub fn vocab(&self) -> &CoordVocab {
        &self.vocab
    }
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::input(format!(
            "missing {} (the tokenizer: vocabulary, merges and added tokens)",
            path.display()
        ))
        .hint("a model directory needs the HF fast-tokenizer file tokenizer.json; copy it from the base checkpoint"));
    }
    Tokenizer::from_file(path).map_err(|e| {
        Error::input(format!("cannot load the tokenizer {}: {e}", path.display()))
            .hint("tokenizer.json must be a HF `tokenizers` file (save it with transformers' save_pretrained)")
    })
}

/// The chat template, in transformers' order: `chat_template.jinja`, `chat_template.json`,
/// then the `chat_template` key of `tokenizer_config.json`.
fn find_chat_template(dir: &Path) -> Result<(String, PathBuf)> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let src = std::fs::read_to_string(&jinja).map_err(|e| Error::io("read", &jinja, &e))?;
        return Ok((src, jinja));
    }
    for (file, what) in [
        ("chat_template.json", "chat_template.json"),
        ("tokenizer_config.json", "tokenizer_config.json"),
    ] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let json = read_json(&path, "the chat template")?;
        match json.get("chat_template") {
            Some(Value::String(s)) => return Ok((s.clone(), path)),
            Some(Value::Array(named)) => {
                let default =
                    named.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
                if let Some(src) = default.and_then(|t| t.get("template")).and_then(Value::as_str) {
                    return Ok((src.to_owned(), path));
                }
                return Err(Error::input(format!(
                    "{what} lists chat templates but none is named \"default\""
                ))
                .at(path.display().to_string())
                .hint("name the template used for chat \"default\""));
            }
            Some(_) => {
                return Err(Error::input("`chat_template` is not a string")
                    .at(format!("{}:chat_template", path.display())));
            }
            None => continue,
        }
    }
    Err(Error::input(format!("no chat template in {}", dir.display())).hint(
        "add chat_template.jinja (or chat_template.json / tokenizer_config.json:chat_template) from the base checkpoint; prompts are always rendered by the model's own template",
    ))
}

fn read_json(path: &Path, needed_for: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::io("read", path, &e).hint(format!("{} is needed for {needed_for}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::input(format!("invalid JSON: {e}")).at(format!("{}:{}", path.display(), e.line()))
    })
}

fn get_u64(obj: &Value, key: &str, path: &Path, needed_for: &str) -> Result<u64> {
    let mut cur = obj;
    for part in key.split('.') {
        cur = cur.get(part).ok_or_else(|| {
            Error::input(format!("missing `{key}` ({needed_for})")).at(path.display().to_string())
        })?;
    }
    cur.as_u64().ok_or_else(|| {
        Error::input(format!("`{key}` must be a non-negative integer, found {cur}"))
            .at(path.display().to_string())
    })
}

fn get_u32(obj: &Value, key: &str, path: &Path, needed_for: &str) -> Result<u32> {
    let v = get_u64(obj, key, path, needed_for)?;
    u32::try_from(v).map_err(|_| {
        Error::input(format!("`{key}` = {v} is out of range")).at(path.display().to_string())
    })
}

fn vision_from_config(
    dir: &Path,
    path: &Path,
    config: &Value,
) -> Result<(VisionSpec, VisionTokens)> {
    let tokens = VisionTokens {
        image_pad: get_u32(config, "image_token_id", path, "the image placeholder token")?,
        vision_start: get_u32(
            config,
            "vision_start_token_id",
            path,
            "the token that opens an image",
        )?,
        vision_end: get_u32(config, "vision_end_token_id", path, "the token that closes an image")?,
    };
    let patch_size = get_u32(config, "vision_config.patch_size", path, "the image token count")?;
    let temporal_patch_size =
        get_u32(config, "vision_config.temporal_patch_size", path, "the image token count")?;
    let merge_size =
        get_u32(config, "vision_config.spatial_merge_size", path, "the image token count")?;
    if patch_size == 0 || merge_size == 0 || temporal_patch_size == 0 {
        return Err(Error::input("vision patch, temporal patch and merge sizes must be positive")
            .at(path.display().to_string()));
    }
    let (min_pixels, max_pixels) = pixel_limits(dir, patch_size, merge_size)?;
    Ok((VisionSpec { patch_size, temporal_patch_size, merge_size, min_pixels, max_pixels }, tokens))
}

/// Pixel limits of the model's image processor: `preprocessor_config.json` (released
/// checkpoints) or the `image_processor` section of `processor_config.json` (transformers 5
/// `save_pretrained`). Its patch and merge sizes must agree with `config.json`.
fn pixel_limits(dir: &Path, patch_size: u32, merge_size: u32) -> Result<(u64, u64)> {
    let pre = dir.join("preprocessor_config.json");
    let proc = dir.join("processor_config.json");
    let (path, section) = if pre.is_file() {
        let v = read_json(&pre, "the image pixel limits")?;
        (pre, v)
    } else if proc.is_file() {
        let v = read_json(&proc, "the image pixel limits")?;
        match v.get("image_processor") {
            Some(section) => (proc, section.clone()),
            None => {
                return Err(Error::input("missing `image_processor` (the image pixel limits)")
                    .at(proc.display().to_string()));
            }
        }
    } else {
        return Err(Error::input(format!(
            "missing {} (the image processor: pixel limits)",
            pre.display()
        ))
        .hint("copy preprocessor_config.json from the base checkpoint"));
    };
    let limits = "the image pixel limits";
    let (min_pixels, max_pixels) = match (section.get("min_pixels"), section.get("max_pixels")) {
        (Some(_), Some(_)) => (
            get_u64(&section, "min_pixels", &path, limits)?,
            get_u64(&section, "max_pixels", &path, limits)?,
        ),
        _ => (
            get_u64(&section, "size.shortest_edge", &path, limits)?,
            get_u64(&section, "size.longest_edge", &path, limits)?,
        ),
    };
    for (key, expected) in [("patch_size", patch_size), ("merge_size", merge_size)] {
        if let Some(v) = section.get(key)
            && v.as_u64() != Some(u64::from(expected))
        {
            return Err(Error::input(format!(
                "image processor `{key}` = {v} disagrees with config.json ({expected})"
            ))
            .at(path.display().to_string())
            .hint("the model directory mixes files from different checkpoints"));
        }
    }
    if min_pixels > max_pixels {
        return Err(Error::input(format!(
            "min pixels {min_pixels} exceed max pixels {max_pixels}"
        ))
        .at(path.display().to_string()));
    }
    Ok((min_pixels, max_pixels))
}

fn check_token_literal(tok: &Tokenizer, id: u32, literal: &str, config: &Path) -> Result<()> {
    match tok.id_to_token(id) {
        Some(t) if t == literal => Ok(()),
        other => Err(Error::input(format!(
            "config.json says the image token is id {id}, but the tokenizer has {other:?} there, not {literal}"
        ))
        .at(config.display().to_string())
        .hint("tokenizer.json and config.json come from different checkpoints")),
    }
}
