//! Checkpoint I/O in the Hugging Face layout: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`; tensor names are the `Qwen3VLForConditionalGeneration`
//! parameter names. Loading is strict: every missing, unexpected or mis-shaped tensor is reported
//! by name in one error. Saving writes the same layout (with `{"format": "pt"}` metadata), so
//! transformers and vLLM read our checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use coordexp_core::Error;
use serde_json::{Value, json};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";
/// The tied head's name; a tied checkpoint may carry it as a copy of the embedding.
const LM_HEAD: &str = "lm_head.weight";
const EMBED: &str = "model.language_model.embed_tokens.weight";

/// The shard files of a model directory, in load order.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let v = read_json(&index)?;
        let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
            Error::input("missing object `weight_map`").at(index.display().to_string())
        })?;
        let files: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        if files.is_empty() {
            return Err(
                Error::input("`weight_map` lists no shard files").at(index.display().to_string())
            );
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::input(format!("no {SINGLE_FILE} or {INDEX_FILE} in {}", dir.display()))
        .hint("point at a Hugging Face model directory saved with safetensors"))
}

/// Fill every variable of `vs` from the checkpoint in `dir`.
pub fn load(vs: &VarStore, dir: &Path, tied: bool) -> Result<(), Error> {
    let vars = vs.variables();
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    let mut misshaped = Vec::new();
    let mut tied_copy = None;
    let _guard = tch::no_grad_guard();
    for file in shard_files(dir)? {
        let tensors = Tensor::read_safetensors(&file).map_err(|e| {
            Error::input(format!("cannot read safetensors: {e}")).at(file.display().to_string())
        })?;
        for (name, t) in tensors {
            match vars.get(&name) {
                Some(var) if var.size() == t.size() => {
                    let mut var = var.shallow_clone();
                    var.copy_(&t);
                    seen.insert(name);
                }
                Some(var) => {
                    misshaped.push(format!("{name}: file {:?}, model {:?}", t.size(), var.size()))
                }
                None if tied && name == LM_HEAD => tied_copy = Some(t),
                None => unexpected.push(name),
            }
        }
    }
    if let (Some(head), Some(embed)) = (tied_copy, vars.get(EMBED))
        && !head.to_kind(Kind::Float).allclose(
            &embed.to_kind(Kind::Float).to_device(Device::Cpu),
            0.0,
            0.0,
            false,
        )
    {
        unexpected.push(format!("{LM_HEAD} (differs from {EMBED} but the config ties them)"));
    }
    let missing: Vec<String> = vars.keys().filter(|k| !seen.contains(*k)).cloned().collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected tensors: {}", list(&unexpected)));
    }
    if !misshaped.is_empty() {
        problems.push(format!("shape mismatches: {}", list(&misshaped)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::input(format!("checkpoint does not match the config: {}", problems.join("; ")))
            .at(dir.display().to_string())
            .hint("the weights were saved for a different architecture or vocabulary size than config.json describes"))
    }
}

fn list(names: &[String]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort();
    format!("{} ({})", sorted.join(", "), sorted.len())
}

/// Write every variable of `vs` into `dir` (those named in `replace` with the given tensor
/// instead), one file up to `max_shard_bytes`, else numbered shards plus an index. Files are
/// written to a temporary name and renamed.
pub fn save(
    vs: &VarStore,
    dir: &Path,
    max_shard_bytes: u64,
    replace: &BTreeMap<String, Tensor>,
) -> Result<(), Error> {
    let mut vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, t) in replace {
        vars.insert(name.clone(), t.shallow_clone());
    }
    let bytes = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
    let mut shards: Vec<Vec<(&String, &Tensor)>> = vec![Vec::new()];
    let mut current = 0u64;
    for (name, t) in &vars {
        let n = bytes(t);
        if current > 0 && current + n > max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += n;
        if let Some(last) = shards.last_mut() {
            last.push((name, t));
        }
    }
    // A stale index from an earlier save would shadow a single-file save.
    let _ = std::fs::remove_file(dir.join(INDEX_FILE));
    if shards.len() == 1 {
        return write_safetensors(&dir.join(SINGLE_FILE), &shards[0]);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_safetensors(&dir.join(&file), shard)?;
        for (name, _) in shard {
            weight_map.insert((*name).clone(), json!(file));
        }
    }
    let total: u64 = vars.values().map(bytes).sum();
    write_json(
        &dir.join(INDEX_FILE),
        &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

/// The safetensors dtype tag of a tch kind.
fn dtype_tag(kind: Kind) -> Result<&'static str, Error> {
    Ok(match kind {
        Kind::Float => "F32",
        Kind::BFloat16 => "BF16",
        Kind::Half => "F16",
        Kind::Double => "F64",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        k => return Err(Error::runtime(format!("cannot store a {k:?} tensor in safetensors"))),
    })
}

/// The `dtype` string transformers writes into config.json.
pub fn hf_dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// Write named tensors as one safetensors file (header, then the raw little-endian data in
/// header order), atomically.
pub fn write_safetensors(path: &Path, tensors: &[(&String, &Tensor)]) -> Result<(), Error> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    let mut cpu = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let n = t.numel() * t.kind().elt_size_in_bytes();
        header.insert(
            (*name).clone(),
            json!({"dtype": dtype_tag(t.kind())?, "shape": t.size(), "data_offsets": [offset, offset + n]}),
        );
        offset += n;
        cpu.push(t);
    }
    let mut head = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::runtime(format!("cannot encode safetensors header: {e}")))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let io = |e: std::io::Error| Error::io("write", &tmp, &e);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::new(file);
    w.write_all(&(head.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&head).map_err(io)?;
    for t in &cpu {
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        t.f_copy_data_u8(&mut buf, t.numel())
            .map_err(|e| Error::runtime(format!("cannot read tensor data: {e}")))?;
        w.write_all(&buf).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, &e))
}

pub(crate) fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, &e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::input(format!("invalid JSON: {e}")).at(format!("{}:{}", path.display(), e.line()))
    })
}

/// Pretty-printed JSON, written atomically.
pub(crate) fn write_json(path: &Path, value: &Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::runtime(format!("cannot encode JSON: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io("write", &tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, &e))
}
