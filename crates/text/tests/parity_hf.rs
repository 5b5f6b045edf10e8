//! Live parity with HF transformers on a model directory with the real Qwen vocabulary and the
//! Qwen3-VL chat template: our rendered text, token ids and image grids equal
//! `Qwen3VLProcessor.apply_chat_template(..., tokenize=True)`, and our mRoPE positions equal
//! `Qwen3VLModel.get_rope_index`, for single samples and for packs (where each segment is
//! computed on its own, as the padding-free packed path does).

mod common;

use common::*;
use coordexp_core::config::schema::{FieldOrder, ObjectOrdering, Prompt, PromptVariant, Template};
use coordexp_core::geometry::ImageSize;
use coordexp_core::prompt::Prompts;
use coordexp_text::{Answer, EncodedSample, Encoder, ModelDir, PackedBatch, Turn};
use serde_json::{Value, json};

const ORACLE: &str = r#"
import json, sys, types
from PIL import Image
from transformers import AutoProcessor, Qwen3VLConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

args = json.load(sys.stdin)
proc = AutoProcessor.from_pretrained(args["model_dir"])
cfg = Qwen3VLConfig.from_pretrained(args["model_dir"])
rope = types.SimpleNamespace(
    config=cfg,
    get_vision_position_ids=lambda *a, **k: Qwen3VLModel.get_vision_position_ids(None, *a, **k),
)
out = []
for case in args["cases"]:
    sizes = iter(case["sizes"])
    msgs = []
    for m in case["messages"]:
        content = []
        for c in m["content"]:
            if c["type"] == "image":
                w, h = next(sizes)
                content.append({"type": "image", "image": Image.new("RGB", (w, h), (120, 30, 200))})
            else:
                content.append(c)
        msgs.append({"role": m["role"], "content": content})
    gen = case["generation"]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    enc = proc.apply_chat_template(
        msgs, tokenize=True, return_dict=True, add_generation_prompt=gen, return_tensors="pt"
    )
    pos, _ = Qwen3VLModel.get_rope_index(
        rope, enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
        image_grid_thw=enc["image_grid_thw"],
    )
    out.append({
        "text": text,
        "ids": enc["input_ids"][0].tolist(),
        "grid": enc["image_grid_thw"].tolist(),
        "pos": pos[:, 0, :].tolist(),
    })
print(json.dumps(out))
"#;

struct Case {
    encoder: usize,
    images: Vec<ImageSize>,
    answer: Option<Answer>,
}

fn encoders(model: &ModelDir) -> Vec<Encoder> {
    let t = Template::default();
    let variants = [
        Prompt::default(),
        Prompt { variant: PromptVariant::Coco80, ..Prompt::default() },
        Prompt {
            field_order: FieldOrder::GeometryFirst,
            object_ordering: ObjectOrdering::Random,
            ..Prompt::default()
        },
        Prompt {
            system: Some("Réponds en CoordJSON. 検出せよ。 Tabs\tand  spaces.\n".into()),
            user: Some("Objets ? « guillemets » and a token <|coord_5|> inline.".into()),
            ..Prompt::default()
        },
    ];
    variants
        .iter()
        .map(|p| Encoder::new(model.clone(), Prompts::resolve(p).unwrap(), &t).unwrap())
        .collect()
}

fn cases() -> Vec<Case> {
    let sizes = [size(640, 480), size(512, 512), size(1024, 768), size(320, 640), size(256, 96)];
    let mut out = Vec::new();
    for k in 0..24u64 {
        let n_obj = [0, 1, 2, 5, 13, 40][k as usize % 6];
        let encoder = k as usize % 4;
        let order = if encoder == 2 { FieldOrder::GeometryFirst } else { FieldOrder::DescFirst };
        let answer = Answer::from_objects(&objects(n_obj, k), order).unwrap();
        let n_images = if k % 7 == 3 { 2 } else { 1 };
        let images = vec![sizes[k as usize % sizes.len()]; n_images];
        out.push(Case { encoder, images, answer: Some(answer) });
    }
    for (encoder, s) in [(0, size(640, 480)), (1, size(1024, 768)), (3, size(256, 96))] {
        out.push(Case { encoder, images: vec![s], answer: None });
    }
    out.push(Case { encoder: 0, images: vec![size(512, 512), size(640, 480)], answer: None });
    out
}

fn turn(c: &Case) -> Turn<'_> {
    match &c.answer {
        Some(a) => Turn::Train(a),
        None => Turn::Generate,
    }
}

fn oracle(model: &std::path::Path, encs: &[Encoder], cases: &[Case]) -> Vec<Value> {
    let payload: Vec<Value> = cases
        .iter()
        .map(|c| {
            let messages =
                encs[c.encoder].messages(c.images.len(), c.answer.as_ref().map(Answer::text));
            json!({
                "messages": messages,
                "sizes": c.images.iter().map(|s| [s.width(), s.height()]).collect::<Vec<_>>(),
                "generation": c.answer.is_none(),
            })
        })
        .collect();
    let out =
        coordexp_testkit::run_python_json(ORACLE, &json!({"model_dir": model, "cases": payload}));
    out.as_array().unwrap().clone()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn ids_grids_and_positions_match_transformers_single_and_packed() {
    let dir = qwen_model_dir();
    let model = ModelDir::load(dir).unwrap();
    assert_eq!(model.vocab().first_id(), 151_670);
    assert_eq!(model.vocab().wildcard(), Some(151_669));
    assert_eq!(model.vision_tokens().image_pad, 151_655);
    let encs = encoders(&model);
    let cases = cases();
    let hf = oracle(dir, &encs, &cases);
    assert_eq!(hf.len(), cases.len());

    let mut encoded: Vec<EncodedSample> = Vec::new();
    for (k, (c, h)) in cases.iter().zip(&hf).enumerate() {
        let enc = &encs[c.encoder];
        let text = enc.render(c.images.len(), turn(c)).unwrap();
        assert_eq!(text, h["text"].as_str().unwrap(), "case {k}: rendered text");
        let s = enc.encode(&c.images, turn(c)).unwrap();
        assert_eq!(s.input_ids, u32s(&h["ids"]), "case {k}: input ids");
        let grids: Vec<Vec<u32>> = s.image_grid_thw.iter().map(|g| g.to_array().to_vec()).collect();
        let hf_grids: Vec<Vec<u32>> = h["grid"].as_array().unwrap().iter().map(u32s).collect();
        assert_eq!(grids, hf_grids, "case {k}: image_grid_thw");
        for (r, row) in s.position_ids.rows[1..].iter().enumerate() {
            assert_eq!(row, &i64s(&h["pos"][r]), "case {k}: mRoPE row {r}");
        }
        encoded.push(s);
    }

    // Packs: segment positions are the per-sample HF positions, concatenated, restarting at 0.
    for pack in [vec![0usize, 3, 7], vec![24, 25, 26, 27], vec![5, 10]] {
        let batch = PackedBatch::assemble(pack.iter().map(|&k| (k as u64, &encoded[k])));
        for (r, row) in batch.position_ids.rows[1..].iter().enumerate() {
            let expected: Vec<i64> = pack.iter().flat_map(|&k| i64s(&hf[k]["pos"][r])).collect();
            assert_eq!(row, &expected, "pack {pack:?} row {r}");
        }
        let text_row: Vec<i64> = pack.iter().flat_map(|&k| 0..encoded[k].len() as i64).collect();
        assert_eq!(batch.position_ids.rows[0], text_row);
        let ids: Vec<u32> = pack.iter().flat_map(|&k| u32s(&hf[k]["ids"])).collect();
        assert_eq!(batch.input_ids, ids);
    }
}

#[test]
fn coordinate_vocabulary_of_the_real_tokenizer_satisfies_the_contract() {
    let model = ModelDir::load(qwen_model_dir()).unwrap();
    let v = model.vocab();
    assert_eq!(v.range(), 151_670..=152_669);
    let tok = model.tokenizer();
    let enc = tok.encode("[<|coord_0|>, <|coord_999|>]", false).unwrap();
    assert_eq!(enc.get_ids().iter().filter(|&&i| v.bin(i).is_some()).count(), 2);
    assert_eq!(model.vision().factor(), 32);
}
