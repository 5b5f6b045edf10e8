//! Checkpoint-producing operations: adding the coordinate vocabulary to a model, and creating a
//! random tiny model for tests and demos.
//!
//! `expand_vocab` appends `<|coord_*|>` (the wildcard) and `<|coord_0|>` … `<|coord_999|>` to
//! `tokenizer.json` as special tokens with contiguous ids starting at the tokenizer's length,
//! grows `embed_tokens` (and an untied `lm_head`) to cover them, and updates `config.json`.
//! **Initialisation:** every new token's row is the mean of the rows of the tokenizer's existing
//! tokens (ids below the old tokenizer length), in fp32, cast to the checkpoint dtype. This is
//! the deterministic centre of transformers' mean-resizing (which adds small noise); rows that
//! sat unused beyond the old tokenizer length (Qwen pads its matrix to 151936) are re-initialised
//! the same way when a new token lands on them. Unlike the reference script, the head's tying
//! is left as the checkpoint has it: an untied head grows alongside and is never discarded.
//! The weights are rewritten shard by shard, so memory stays at one shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coordexp_core::Error;
use coordexp_core::norm1000::{Bin, COORD_WILDCARD};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use crate::config::{ModelConfig, SpecialIds};
use crate::layers::ParamInit;
use crate::model::Qwen3VL;
use crate::weights::{read_json, shard_files, write_json, write_safetensors};

/// The tokens `expand_vocab` adds, in id order.
pub fn coordinate_tokens() -> Vec<String> {
    std::iter::once(COORD_WILDCARD.to_string()).chain(Bin::all().map(|b| b.token())).collect()
}

const EMBED: &str = "model.language_model.embed_tokens.weight";
const LM_HEAD: &str = "lm_head.weight";

/// What `expand_vocab` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandReport {
    pub old_tokenizer_len: i64,
    pub old_vocab_size: i64,
    pub new_vocab_size: i64,
    /// Id of `<|coord_*|>`; `<|coord_k|>` is `wildcard_id + 1 + k`.
    pub wildcard_id: i64,
    /// Embedding matrices grown (1 when tied, 2 with an untied head).
    pub grown_matrices: usize,
    /// Other files copied unchanged.
    pub copied_files: usize,
    /// Entries not copied: sub-directories and hidden files (e.g. `.cache`).
    pub skipped_entries: Vec<String>,
}

/// What `init_tiny` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReport {
    pub vocab_size: i64,
    pub parameters: i64,
    pub copied_files: usize,
    pub skipped_entries: Vec<String>,
}

/// A parsed `tokenizer.json`: its JSON and its length (highest id + 1).
struct TokenizerFile {
    path: PathBuf,
    json: Value,
    len: i64,
}

impl TokenizerFile {
    fn read(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("tokenizer.json");
        let json = read_json(&path)?;
        let vocab_max = json
            .pointer("/model/vocab")
            .and_then(Value::as_object)
            .map(|v| v.values().filter_map(Value::as_i64).max().unwrap_or(-1))
            .ok_or_else(|| {
                Error::input("missing object `model.vocab`")
                    .at(path.display().to_string())
                    .hint("expected a Hugging Face `tokenizers` BPE tokenizer.json")
            })?;
        let added_max = added_tokens(&json).iter().map(|(_, id)| *id).max().unwrap_or(-1);
        Ok(TokenizerFile { len: vocab_max.max(added_max) + 1, path, json })
    }

    /// The id of `content`, from the added tokens or the base vocabulary.
    fn id_of(&self, content: &str) -> Option<i64> {
        added_tokens(&self.json).into_iter().find(|(c, _)| c == content).map(|(_, id)| id).or_else(
            || {
                self.json
                    .pointer("/model/vocab")
                    .and_then(|v| v.get(content))
                    .and_then(Value::as_i64)
            },
        )
    }
}

fn added_tokens(json: &Value) -> Vec<(String, i64)> {
    json.get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((t.get("content")?.as_str()?.to_string(), t.get("id")?.as_i64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn refuse_existing(dst: &Path) -> Result<(), Error> {
    if dst.exists() {
        return Err(Error::input(format!("destination {} already exists", dst.display()))
            .hint("choose a new directory; existing checkpoints are never overwritten"));
    }
    Ok(())
}

/// A sibling temporary directory; renamed onto `dst` when complete.
pub(crate) fn staging(dst: &Path) -> Result<PathBuf, Error> {
    let name = dst.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dst.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, &e))?;
    Ok(tmp)
}

pub(crate) fn finish(tmp: &Path, dst: &Path) -> Result<(), Error> {
    std::fs::rename(tmp, dst).map_err(|e| Error::io("rename", tmp, &e))
}

/// Copy the top-level regular files of `src` not named by `exclude`; return (copied, skipped).
pub(crate) fn copy_rest(
    src: &Path,
    dst: &Path,
    exclude: impl Fn(&str) -> bool,
) -> Result<(usize, Vec<String>), Error> {
    let mut copied = 0;
    let mut skipped = Vec::new();
    let entries = std::fs::read_dir(src).map_err(|e| Error::io("list", src, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", src, &e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if exclude(&name) {
            continue;
        }
        if name.starts_with('.') || !path.is_file() {
            skipped.push(name);
            continue;
        }
        std::fs::copy(&path, dst.join(&name)).map_err(|e| Error::io("copy", &path, &e))?;
        copied += 1;
    }
    skipped.sort();
    Ok((copied, skipped))
}

/// Add the coordinate vocabulary to the model in `src`, writing the result to `dst` (which
/// must not exist).
pub fn expand_vocab(src: &Path, dst: &Path) -> Result<ExpandReport, Error> {
    refuse_existing(dst)?;
    let config_path = src.join("config.json");
    let config = ModelConfig::from_file(&config_path)?;
    let mut tok = TokenizerFile::read(src)?;
    let new_tokens = coordinate_tokens();
    if let Some(t) = new_tokens.iter().find(|t| tok.id_of(t).is_some()) {
        return Err(Error::input(format!("the tokenizer already has {t}"))
            .at(tok.path.display().to_string())
            .hint("this model is already expanded; use it as is"));
    }
    let first = tok.len;
    let old_vocab = config.text.vocab_size;
    if first > old_vocab {
        return Err(Error::input(format!(
            "the tokenizer has {first} tokens but the embedding only {old_vocab} rows"
        ))
        .at(config_path.display().to_string())
        .hint("the tokenizer and the checkpoint do not belong together"));
    }
    let new_vocab = old_vocab.max(first + new_tokens.len() as i64);
    let tmp = staging(dst)?;

    // tokenizer.json: contiguous special tokens after the last id.
    let list = tok.json.get_mut("added_tokens").and_then(Value::as_array_mut).ok_or_else(|| {
        Error::input("missing list `added_tokens`").at(tok.path.display().to_string())
    })?;
    for (i, t) in new_tokens.iter().enumerate() {
        list.push(json!({"id": first + i as i64, "content": t, "single_word": false,
                         "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    write_json(&tmp.join("tokenizer.json"), &tok.json)?;

    // tokenizer_config.json mirrors the added tokens for transformers' tokenizer classes.
    let tc_path = src.join("tokenizer_config.json");
    if tc_path.exists() {
        let mut tc = read_json(&tc_path)?;
        if let Some(dec) = tc.get_mut("added_tokens_decoder").and_then(Value::as_object_mut) {
            for (i, t) in new_tokens.iter().enumerate() {
                dec.insert(
                    (first + i as i64).to_string(),
                    json!({"content": t, "lstrip": false,
                    "normalized": false, "rstrip": false, "single_word": false, "special": true}),
                );
            }
        }
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            if let Some(l) = tc.get_mut(key).and_then(Value::as_array_mut) {
                l.extend(new_tokens.iter().map(|t| json!(t)));
            }
        }
        write_json(&tmp.join("tokenizer_config.json"), &tc)?;
    }

    // config.json: only the vocabulary size changes.
    let mut cfg_json = read_json(&config_path)?;
    cfg_json["text_config"]["vocab_size"] = json!(new_vocab);
    if cfg_json.get("vocab_size").is_some() {
        cfg_json["vocab_size"] = json!(new_vocab);
    }
    write_json(&tmp.join("config.json"), &cfg_json)?;

    // Weights, shard by shard.
    let mut grown = 0;
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    let shards = shard_files(src)?;
    for shard in &shards {
        let tensors = Tensor::read_safetensors(shard).map_err(|e| {
            Error::input(format!("cannot read safetensors: {e}")).at(shard.display().to_string())
        })?;
        let mut out = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let t = if name == EMBED || (name == LM_HEAD && !config.tie_word_embeddings) {
                grown += 1;
                grow_rows(&name, &t, old_vocab, first, new_vocab, shard)?
            } else {
                t
            };
            total += (t.numel() * t.kind().elt_size_in_bytes()) as u64;
            out.push((name, t));
        }
        let file = shard.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let refs: Vec<(&String, &Tensor)> = out.iter().map(|(n, t)| (n, t)).collect();
        write_safetensors(&tmp.join(&file), &refs)?;
        for (n, _) in &out {
            weight_map.insert(n.clone(), json!(file));
        }
    }
    if src.join("model.safetensors.index.json").exists() {
        write_json(
            &tmp.join("model.safetensors.index.json"),
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?;
    }
    let (copied, skipped) = copy_rest(src, &tmp, |n| {
        n.ends_with(".safetensors")
            || matches!(
                n,
                "model.safetensors.index.json"
                    | "config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
            )
    })?;
    finish(&tmp, dst)?;
    Ok(ExpandReport {
        old_tokenizer_len: first,
        old_vocab_size: old_vocab,
        new_vocab_size: new_vocab,
        wildcard_id: first,
        grown_matrices: grown,
        copied_files: copied,
        skipped_entries: skipped,
    })
}

/// [old_vocab, H] → [new_vocab, H]: rows of the tokenizer's tokens (0..first) kept, every row
/// from `first` on (new tokens and unused padding rows alike) set to their mean.
fn grow_rows(
    name: &str,
    t: &Tensor,
    old_vocab: i64,
    first: i64,
    new_vocab: i64,
    file: &Path,
) -> Result<Tensor, Error> {
    let s = t.size();
    if s.len() != 2 || s[0] != old_vocab {
        return Err(Error::input(format!(
            "{name} has shape {s:?}, config.json says {old_vocab} rows"
        ))
        .at(file.display().to_string()));
    }
    let _guard = tch::no_grad_guard();
    let mean =
        t.narrow(0, 0, first).to_kind(Kind::Float).mean_dim(0, true, Kind::Float).to_kind(t.kind());
    let kept = t.narrow(0, 0, first);
    let fresh = mean.expand([new_vocab - first, s[1]], false);
    Ok(Tensor::cat(&[kept, fresh], 0).contiguous())
}

/// Write a randomly initialised `tiny`-preset checkpoint (seeded) whose vocabulary and special
/// ids come from the tokenizer in `tokenizer_from`; the tokenizer files are copied alongside.
pub fn init_tiny(tokenizer_from: &Path, out: &Path, seed: i64) -> Result<InitReport, Error> {
    refuse_existing(out)?;
    let tok = TokenizerFile::read(tokenizer_from)?;
    let id = |t: &str| {
        tok.id_of(t).ok_or_else(|| {
            Error::input(format!("the tokenizer has no {t} token"))
                .at(tok.path.display().to_string())
                .hint("use a Qwen3-VL tokenizer (it defines the vision special tokens)")
        })
    };
    let special = SpecialIds {
        image_pad: id("<|image_pad|>")?,
        video_pad: id("<|video_pad|>")?,
        vision_start: id("<|vision_start|>")?,
        vision_end: id("<|vision_end|>")?,
    };
    let config = ModelConfig::tiny(tok.len, special);
    tch::manual_seed(seed);
    let model = Qwen3VL::new(
        &config,
        Kind::Float,
        Device::Cpu,
        ParamInit::Normal { std: config.text.initializer_range },
    );
    let tmp = staging(out)?;
    model.save(&tmp, u64::MAX)?;
    let (copied, skipped) = copy_rest(tokenizer_from, &tmp, |n| {
        n.ends_with(".safetensors") || matches!(n, "model.safetensors.index.json" | "config.json")
    })?;
    finish(&tmp, out)?;
    Ok(InitReport {
        vocab_size: tok.len,
        parameters: model.named_parameters()?.iter().map(|(_, t, _)| t.numel() as i64).sum(),
        copied_files: copied,
        skipped_entries: skipped,
    })
}
