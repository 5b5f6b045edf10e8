//! The Qwen3-VL architecture description, read from a Hugging Face `config.json`.
//!
//! Two generations of the file exist and both are accepted: transformers ≥ 5 writes
//! `text_config.rope_parameters = {rope_type, rope_theta, mrope_section, mrope_interleaved}`,
//! while checkpoints saved by transformers 4.5x carry `text_config.rope_theta` plus
//! `text_config.rope_scaling = {mrope_section, mrope_interleaved, …}`. Every error names the file
//! and the dotted key, so a broken checkpoint is fixed in one look.

use std::path::Path;

use coordexp_core::Error;
use serde_json::{Map, Value, json};

/// The language model half of the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies per axis (t, h, w); their sum is `head_dim / 2`.
    pub mrope_section: [i64; 3],
    pub max_position_embeddings: i64,
    pub initializer_range: f64,
}

/// The vision tower half of the architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_heads: i64,
    pub in_channels: i64,
    pub patch_size: i64,
    pub temporal_patch_size: i64,
    pub spatial_merge_size: i64,
    pub out_hidden_size: i64,
    /// Rows of the learned square position table (a perfect square, e.g. 2304 = 48²).
    pub num_position_embeddings: i64,
    /// Vision blocks whose outputs feed the DeepStack mergers, in injection order.
    pub deepstack_visual_indexes: Vec<i64>,
    pub rope_theta: f64,
    pub initializer_range: f64,
}

/// The whole model: both halves plus the multimodal special ids and head tying.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
    pub vision_end_token_id: i64,
    /// `lm_head` shares `embed_tokens.weight` (2B/4B and CoordExp-expanded checkpoints).
    pub tie_word_embeddings: bool,
}

/// Reads typed fields out of one JSON object, remembering where it is for error messages.
struct Fields<'a> {
    file: &'a str,
    prefix: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(file: &'a str, prefix: &str, value: &'a Value) -> Result<Self, Error> {
        let map = value.as_object().ok_or_else(|| {
            Error::input(format!("`{}` must be a JSON object", display_key(prefix)))
                .at(file.to_string())
        })?;
        Ok(Fields { file, prefix: prefix.to_string(), map })
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    fn bad(&self, name: &str, expected: &str) -> Error {
        Error::input(format!("`{}` must be {expected}", self.key(name)))
            .at(self.file.to_string())
            .hint("compare the file with a config.json written by transformers for Qwen3-VL")
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn int_or(&self, name: &str, default: Option<i64>) -> Result<i64, Error> {
        match self.get(name) {
            Some(v) => v.as_i64().ok_or_else(|| self.bad(name, "an integer")),
            None => default.ok_or_else(|| {
                Error::input(format!("missing key `{}`", self.key(name)))
                    .at(self.file.to_string())
                    .hint("the key is required for Qwen3-VL; add it to config.json")
            }),
        }
    }

    fn positive(&self, name: &str, default: Option<i64>) -> Result<i64, Error> {
        let v = self.int_or(name, default)?;
        if v <= 0 {
            return Err(self.bad(name, "a positive integer"));
        }
        Ok(v)
    }

    fn float_or(&self, name: &str, default: f64) -> Result<f64, Error> {
        match self.get(name) {
            Some(v) => v.as_f64().ok_or_else(|| self.bad(name, "a number")),
            None => Ok(default),
        }
    }

    fn bool_or(&self, name: &str, default: Option<bool>) -> Result<Option<bool>, Error> {
        match self.get(name) {
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(name, "true or false")),
            None => Ok(default),
        }
    }

    fn object(&self, name: &str) -> Result<Option<Fields<'a>>, Error> {
        match self.get(name) {
            Some(v) => Fields::new(self.file, &self.key(name), v).map(Some),
            None => Ok(None),
        }
    }

    /// A patch size may be written as `16` or `[16, 16]`; only square patches exist in Qwen3-VL.
    fn square(&self, name: &str, default: i64) -> Result<i64, Error> {
        match self.get(name) {
            Some(Value::Array(a)) => {
                let vals: Vec<i64> = a.iter().filter_map(Value::as_i64).collect();
                match vals.as_slice() {
                    [x] if *x > 0 => Ok(*x),
                    [x, y] if x == y && *x > 0 => Ok(*x),
                    _ => Err(self.bad(name, "a positive integer (or two equal ones)")),
                }
            }
            _ => self.positive(name, Some(default)),
        }
    }

    fn int_list(&self, name: &str, default: &[i64]) -> Result<Vec<i64>, Error> {
        match self.get(name) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_i64().ok_or_else(|| self.bad(name, "a list of integers")))
                .collect(),
            Some(_) => Err(self.bad(name, "a list of integers")),
            None => Ok(default.to_vec()),
        }
    }
}

fn display_key(prefix: &str) -> &str {
    if prefix.is_empty() { "<root>" } else { prefix }
}

impl ModelConfig {
    /// Read `config.json` from a model directory (or the file itself).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let path = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, &e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(format!("invalid JSON: {e}")).at(format!(
                "{}:{}",
                path.display(),
                e.line()
            ))
        })?;
        Self::from_json(&value, &path.display().to_string())
    }

    /// Parse an already-loaded `config.json`; `file` is only used in error messages.
    pub fn from_json(value: &Value, file: &str) -> Result<Self, Error> {
        let root = Fields::new(file, "", value)?;
        let text_f = root.object("text_config")?.ok_or_else(|| {
            Error::input("missing key `text_config`")
                .at(file.to_string())
                .hint("this is not a Qwen3-VL config.json (model_type qwen3_vl)")
        })?;
        let vision_f = root.object("vision_config")?.ok_or_else(|| {
            Error::input("missing key `vision_config`")
                .at(file.to_string())
                .hint("this is not a Qwen3-VL config.json (model_type qwen3_vl)")
        })?;
        let text = parse_text(&text_f)?;
        let vision = parse_vision(&vision_f)?;
        let tie = match root.bool_or("tie_word_embeddings", None)? {
            Some(t) => t,
            None => text_f.bool_or("tie_word_embeddings", Some(false))?.unwrap_or(false),
        };
        let config = ModelConfig {
            image_token_id: root.int_or("image_token_id", Some(151655))?,
            video_token_id: root.int_or("video_token_id", Some(151656))?,
            vision_start_token_id: root.int_or("vision_start_token_id", Some(151652))?,
            vision_end_token_id: root.int_or("vision_end_token_id", Some(151653))?,
            tie_word_embeddings: tie,
            text,
            vision,
        };
        config.validate(file)?;
        Ok(config)
    }

    /// Cross-field checks: head arithmetic, the mRoPE split, special ids inside the vocabulary.
    fn validate(&self, file: &str) -> Result<(), Error> {
        let t = &self.text;
        let v = &self.vision;
        let err = |key: &str, what: String| Error::input(what).at(format!("{file} ({key})"));
        if t.num_attention_heads % t.num_key_value_heads != 0 {
            return Err(err(
                "text_config.num_key_value_heads",
                format!(
                    "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                    t.num_attention_heads, t.num_key_value_heads
                ),
            ));
        }
        if t.head_dim % 2 != 0 || t.mrope_section.iter().sum::<i64>() != t.head_dim / 2 {
            return Err(err(
                "text_config.rope_parameters.mrope_section",
                format!(
                    "mrope_section {:?} must sum to head_dim / 2 = {}",
                    t.mrope_section,
                    t.head_dim / 2
                ),
            ));
        }
        if v.hidden_size % v.num_heads != 0 || (v.hidden_size / v.num_heads) % 4 != 0 {
            return Err(err(
                "vision_config.num_heads",
                format!(
                    "vision hidden_size {} over num_heads {} must give a head size divisible by 4",
                    v.hidden_size, v.num_heads
                ),
            ));
        }
        let side = (v.num_position_embeddings as f64).sqrt().round() as i64;
        if side * side != v.num_position_embeddings {
            return Err(err(
                "vision_config.num_position_embeddings",
                format!("{} is not a perfect square", v.num_position_embeddings),
            ));
        }
        if let Some(&bad) = v.deepstack_visual_indexes.iter().find(|&&i| i < 0 || i >= v.depth) {
            return Err(err(
                "vision_config.deepstack_visual_indexes",
                format!("index {bad} is outside the {} vision blocks", v.depth),
            ));
        }
        if v.deepstack_visual_indexes.len() as i64 > t.num_hidden_layers {
            return Err(err(
                "vision_config.deepstack_visual_indexes",
                format!(
                    "{} DeepStack levels but only {} decoder layers to inject them into",
                    v.deepstack_visual_indexes.len(),
                    t.num_hidden_layers
                ),
            ));
        }
        if v.out_hidden_size != t.hidden_size {
            return Err(err(
                "vision_config.out_hidden_size",
                format!(
                    "{} must equal text_config.hidden_size {}",
                    v.out_hidden_size, t.hidden_size
                ),
            ));
        }
        for (key, id) in [
            ("image_token_id", self.image_token_id),
            ("video_token_id", self.video_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
            ("vision_end_token_id", self.vision_end_token_id),
        ] {
            if id < 0 || id >= t.vocab_size {
                return Err(err(
                    key,
                    format!("{key} {id} is outside the vocabulary (size {})", t.vocab_size),
                ));
            }
        }
        Ok(())
    }

    /// The config as transformers 5 writes it (`rope_parameters` form), loadable by
    /// `Qwen3VLForConditionalGeneration.from_pretrained`.
    pub fn to_json(&self) -> Value {
        let t = &self.text;
        let v = &self.vision;
        json!({
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "model_type": "qwen3_vl",
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": {
                "model_type": "qwen3_vl_text",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "head_dim": t.head_dim,
                "hidden_act": "silu",
                "attention_bias": false,
                "rms_norm_eps": t.rms_norm_eps,
                "max_position_embeddings": t.max_position_embeddings,
                "initializer_range": t.initializer_range,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": t.rope_theta,
                    "mrope_section": t.mrope_section,
                    "mrope_interleaved": true,
                },
            },
            "vision_config": {
                "model_type": "qwen3_vl_vision",
                "depth": v.depth,
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_heads": v.num_heads,
                "in_channels": v.in_channels,
                "patch_size": v.patch_size,
                "temporal_patch_size": v.temporal_patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "out_hidden_size": v.out_hidden_size,
                "num_position_embeddings": v.num_position_embeddings,
                "deepstack_visual_indexes": v.deepstack_visual_indexes,
                "hidden_act": "gelu_pytorch_tanh",
                "initializer_range": v.initializer_range,
                "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
            },
        })
    }

    /// A small but complete architecture for tests, demos and CPU benchmarks: every component
    /// (GQA, interleaved mRoPE over all three axes, DeepStack at two levels) is exercised.
    /// `vocab_size` and the special ids come from the tokenizer the checkpoint will ship with.
    pub fn tiny(vocab_size: i64, special: SpecialIds) -> Self {
        ModelConfig {
            text: TextConfig {
                vocab_size,
                hidden_size: 64,
                intermediate_size: 128,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                head_dim: 16,
                rms_norm_eps: 1e-6,
                rope_theta: 5_000_000.0,
                mrope_section: [4, 2, 2],
                max_position_embeddings: 32768,
                initializer_range: 0.02,
            },
            vision: VisionConfig {
                depth: 2,
                hidden_size: 32,
                intermediate_size: 64,
                num_heads: 2,
                in_channels: 3,
                patch_size: 16,
                temporal_patch_size: 2,
                spatial_merge_size: 2,
                out_hidden_size: 64,
                num_position_embeddings: 64,
                deepstack_visual_indexes: vec![0, 1],
                rope_theta: 10000.0,
                initializer_range: 0.02,
            },
            image_token_id: special.image_pad,
            video_token_id: special.video_pad,
            vision_start_token_id: special.vision_start,
            vision_end_token_id: special.vision_end,
            tie_word_embeddings: true,
        }
    }

    /// Image-pad tokens one image of `grid_thw` patches occupies in the text.
    pub fn merged_tokens(&self, grid_thw: [i64; 3]) -> i64 {
        let m = self.vision.spatial_merge_size;
        grid_thw[0] * grid_thw[1] * grid_thw[2] / (m * m)
    }
}

/// The multimodal special token ids, as the tokenizer assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub image_pad: i64,
    pub video_pad: i64,
    pub vision_start: i64,
    pub vision_end: i64,
}

impl SpecialIds {
    /// The ids of the released Qwen3-VL tokenizer.
    pub const QWEN3_VL: SpecialIds = SpecialIds {
        image_pad: 151655,
        video_pad: 151656,
        vision_start: 151652,
        vision_end: 151653,
    };
}

fn parse_text(f: &Fields<'_>) -> Result<TextConfig, Error> {
    let hidden_size = f.positive("hidden_size", None)?;
    let num_attention_heads = f.positive("num_attention_heads", None)?;
    let num_key_value_heads = f.positive("num_key_value_heads", Some(num_attention_heads))?;
    let head_dim = f.positive("head_dim", Some(hidden_size / num_attention_heads.max(1)))?;
    // transformers 5: rope_parameters; transformers 4.5x: rope_theta + rope_scaling.
    let (rope_obj, rope_key) = match f.object("rope_parameters")? {
        Some(o) => (Some(o), "rope_parameters"),
        None => (f.object("rope_scaling")?, "rope_scaling"),
    };
    let legacy_theta = f.float_or("rope_theta", 5_000_000.0)?;
    let (rope_theta, section) = match &rope_obj {
        Some(o) => {
            if let Some(false) = o.bool_or("mrope_interleaved", Some(true))? {
                return Err(Error::input(format!(
                    "`text_config.{rope_key}.mrope_interleaved` is false; only the interleaved \
                     mRoPE of Qwen3-VL is implemented"
                ))
                .at(f.file.to_string()));
            }
            if let Some(t) = o.get("rope_type").and_then(Value::as_str)
                && t != "default"
            {
                return Err(Error::input(format!(
                    "`text_config.{rope_key}.rope_type` is `{t}`; only `default` is implemented"
                ))
                .at(f.file.to_string()));
            }
            (o.float_or("rope_theta", legacy_theta)?, o.int_list("mrope_section", &[24, 20, 20])?)
        }
        None => (legacy_theta, vec![24, 20, 20]),
    };
    let mrope_section: [i64; 3] = section.as_slice().try_into().map_err(|_| {
        Error::input(format!("`text_config.{rope_key}.mrope_section` must have three entries"))
            .at(f.file.to_string())
    })?;
    Ok(TextConfig {
        vocab_size: f.positive("vocab_size", None)?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size", None)?,
        num_hidden_layers: f.positive("num_hidden_layers", None)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f.float_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        mrope_section,
        max_position_embeddings: f.positive("max_position_embeddings", Some(262144))?,
        initializer_range: f.float_or("initializer_range", 0.02)?,
    })
}

fn parse_vision(f: &Fields<'_>) -> Result<VisionConfig, Error> {
    let rope_theta = match f.object("rope_parameters")? {
        Some(o) => o.float_or("rope_theta", 10000.0)?,
        None => 10000.0,
    };
    Ok(VisionConfig {
        depth: f.positive("depth", None)?,
        hidden_size: f.positive("hidden_size", None)?,
        intermediate_size: f.positive("intermediate_size", None)?,
        num_heads: f.positive("num_heads", None)?,
        in_channels: f.positive("in_channels", Some(3))?,
        patch_size: f.square("patch_size", 16)?,
        temporal_patch_size: f.square("temporal_patch_size", 2)?,
        spatial_merge_size: f.positive("spatial_merge_size", Some(2))?,
        out_hidden_size: f.positive("out_hidden_size", None)?,
        num_position_embeddings: f.positive("num_position_embeddings", Some(2304))?,
        deepstack_visual_indexes: f.int_list("deepstack_visual_indexes", &[8, 16, 24])?,
        rope_theta,
        initializer_range: f.float_or("initializer_range", 0.02)?,
    })
}

/// The tiny preset over a 300-token vocabulary, for unit tests.
#[cfg(test)]
pub(crate) fn tiny_test_config() -> ModelConfig {
    ModelConfig::tiny(
        300,
        SpecialIds { image_pad: 290, video_pad: 291, vision_start: 288, vision_end: 289 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_json() -> Value {
        tiny_test_config().to_json()
    }

    #[test]
    fn the_written_json_reads_back_to_the_same_config() {
        let c = ModelConfig::from_json(&tiny_json(), "config.json").unwrap();
        assert_eq!(ModelConfig::from_json(&c.to_json(), "x").unwrap(), c);
        assert_eq!(c.text.mrope_section, [4, 2, 2]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn legacy_rope_scaling_and_rope_theta_are_understood() {
        let mut v = tiny_json();
        let t = v["text_config"].as_object_mut().unwrap();
        t.remove("rope_parameters");
        t.insert("rope_theta".into(), json!(1234.0));
        t.insert(
            "rope_scaling".into(),
            json!({"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": true}),
        );
        let c = ModelConfig::from_json(&v, "config.json").unwrap();
        assert_eq!(c.text.rope_theta, 1234.0);
    }

    #[test]
    fn errors_name_the_file_and_the_dotted_key() {
        let mut v = tiny_json();
        v["text_config"]["hidden_size"] = json!("wide");
        let e = ModelConfig::from_json(&v, "m/config.json").unwrap_err();
        assert!(e.what().contains("text_config.hidden_size"), "{e}");
        assert_eq!(e.location(), Some("m/config.json"));

        let mut v = tiny_json();
        v["vision_config"].as_object_mut().unwrap().remove("depth");
        let e = ModelConfig::from_json(&v, "m/config.json").unwrap_err();
        assert!(e.what().contains("vision_config.depth"), "{e}");
    }

    #[test]
    fn an_mrope_split_that_does_not_cover_the_head_is_rejected() {
        let mut v = tiny_json();
        v["text_config"]["rope_parameters"]["mrope_section"] = json!([4, 2, 1]);
        let e = ModelConfig::from_json(&v, "c.json").unwrap_err();
        assert!(e.location().unwrap().contains("mrope_section"), "{e}");
    }

    #[test]
    fn special_ids_outside_the_vocabulary_are_rejected() {
        let mut v = tiny_json();
        v["image_token_id"] = json!(5000);
        assert!(ModelConfig::from_json(&v, "c.json").is_err());
    }
}
