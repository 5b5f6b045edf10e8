//! Invariants of encoding and packing, on a tiny byte-level model directory (no Python).

mod common;

use common::*;
use coordexp_core::config::schema::{FieldOrder, Packing, Prompt, Template};
use coordexp_core::prompt::Prompts;
use coordexp_text::{
    Answer, EncodedSample, Encoder, IGNORE_INDEX, ModelDir, PackedBatch, TokenType, Turn, plan,
};

fn encoder(dir: &std::path::Path) -> Encoder {
    let model = ModelDir::load(dir).unwrap();
    Encoder::new(model, Prompts::resolve(&Prompt::default()).unwrap(), &Template::default())
        .unwrap()
}

fn encode(
    enc: &Encoder,
    objects: &[coordexp_core::record::Object<coordexp_core::norm1000::Bin>],
    images: &[coordexp_core::geometry::ImageSize],
) -> (Answer, EncodedSample) {
    let answer = Answer::from_objects(objects, FieldOrder::DescFirst).unwrap();
    let s = enc.encode(images, Turn::Train(&answer)).unwrap();
    (answer, s)
}

fn decode(enc: &Encoder, ids: &[u32]) -> String {
    enc.model().tokenizer().decode(ids, false).unwrap()
}

#[test]
fn every_per_token_vector_has_the_same_length() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    for seed in 0..20 {
        let (_, s) = encode(&enc, &objects(seed as usize % 7, seed), &[size(640, 480)]);
        let n = s.input_ids.len();
        assert_eq!(s.labels.len(), n);
        assert_eq!(s.token_types.len(), n);
        for row in &s.position_ids.rows {
            assert_eq!(row.len(), n);
        }
    }
}

#[test]
fn only_the_answer_and_its_end_of_turn_token_are_supervised() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    for seed in 0..20 {
        let (answer, s) = encode(&enc, &objects(seed as usize % 9, seed), &[size(512, 512)]);
        let sup: Vec<usize> = (0..s.len()).filter(|&i| s.labels[i] != IGNORE_INDEX).collect();
        // One contiguous block ...
        assert!(sup.windows(2).all(|w| w[1] == w[0] + 1), "supervised tokens are contiguous");
        // ... that is exactly the answer text plus <|im_end|>, labelled with its own ids ...
        let ids: Vec<u32> = sup.iter().map(|&i| s.input_ids[i]).collect();
        // (The tokenizer normalizes to NFC, so a decomposed accent decodes composed.)
        let expected = format!("{}<|im_end|>", answer.text()).replace("e\u{301}", "é");
        assert_eq!(decode(&enc, &ids), expected);
        assert!(sup.iter().all(|&i| s.labels[i] == i64::from(s.input_ids[i])));
        // ... preceded by the assistant header and followed only by template text.
        let before = decode(&enc, &s.input_ids[..sup[0]]);
        assert!(before.ends_with("<|im_start|>assistant\n"), "{before:?}");
        assert!(
            s.token_types
                .iter()
                .zip(&s.labels)
                .all(|(t, l)| t.is_supervised() == (*l != IGNORE_INDEX))
        );
    }
}

#[test]
fn image_pad_count_equals_the_grid_and_images_are_unsupervised() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let pad = enc.model().vision_tokens().image_pad;
    for (w, h, n) in [(640, 480, 300), (512, 512, 256), (1024, 768, 768), (640, 416, 260)] {
        let (_, s) = encode(&enc, &objects(2, 1), &[size(w, h)]);
        assert_eq!(s.input_ids.iter().filter(|&&i| i == pad).count(), n, "{w}x{h}");
        assert_eq!(s.token_types.iter().filter(|&&t| t == TokenType::Image).count(), n);
        assert_eq!(s.image_grid_thw[0].to_array(), [1, h / 16, w / 16]);
    }
    let (_, two) = encode(&enc, &objects(1, 1), &[size(640, 480), size(640, 480)]);
    assert_eq!(two.input_ids.iter().filter(|&&i| i == pad).count(), 600);
}

#[test]
fn coordinate_tokens_appear_exactly_in_record_order() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let vocab = *enc.model().vocab();
    for seed in 0..30 {
        let objs = objects(1 + seed as usize % 12, seed);
        let (_, s) = encode(&enc, &objs, &[size(640, 480)]);
        // The prompts show example coordinate tokens; the answer's are the supervised ones.
        let in_ids: Vec<_> = s
            .input_ids
            .iter()
            .zip(&s.labels)
            .filter(|(_, l)| **l != IGNORE_INDEX)
            .filter_map(|(&i, _)| vocab.bin(i))
            .collect();
        let expected: Vec<_> = objs.iter().flat_map(|o| o.geometry.coords()).collect();
        assert_eq!(in_ids, expected);
        let typed: Vec<_> = s
            .input_ids
            .iter()
            .zip(&s.token_types)
            .filter(|(_, t)| **t == TokenType::Coord)
            .map(|(i, _)| vocab.bin(*i).unwrap())
            .collect();
        assert_eq!(typed, expected, "coord type == coord id");
    }
}

#[test]
fn token_types_follow_the_coordjson_spans() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let objs = vec![bbox("red cat", [1, 2, 3, 4]), poly("猫", &[[5, 6], [7, 8], [9, 10]])];
    let (_, s) = encode(&enc, &objs, &[size(640, 480)]);
    let text_of = |ty: TokenType| {
        let ids: Vec<u32> = s
            .input_ids
            .iter()
            .zip(&s.token_types)
            .filter(|(_, t)| **t == ty)
            .map(|(i, _)| *i)
            .collect();
        decode(&enc, &ids)
    };
    // Byte-level tokens: each byte is its own token, so the types are exact.
    assert_eq!(text_of(TokenType::Desc), "\"red cat\"\"猫\"");
    assert_eq!(text_of(TokenType::Closure), "}<|im_end|>");
    assert!(text_of(TokenType::Struct).starts_with("{\"objects\": [{\"desc\": , \"bbox_2d\": ["));
    assert_eq!(
        text_of(TokenType::Coord),
        (1..=10).map(|k| format!("<|coord_{k}|>")).collect::<String>()
    );
}

#[test]
fn empty_answer_is_supervised_as_an_empty_container() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let (answer, s) = encode(&enc, &[], &[size(640, 480)]);
    assert_eq!(answer.text(), "{\"objects\": []}");
    let ids: Vec<u32> = s
        .input_ids
        .iter()
        .zip(&s.labels)
        .filter(|(_, l)| **l != IGNORE_INDEX)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(decode(&enc, &ids), "{\"objects\": []}<|im_end|>");
}

#[test]
fn generation_prompt_has_no_labels_and_ends_at_the_assistant_header() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let s = enc.encode(&[size(640, 480)], Turn::Generate).unwrap();
    assert!(s.labels.iter().all(|&l| l == IGNORE_INDEX));
    assert!(decode(&enc, &s.input_ids).ends_with("<|im_end|>\n<|im_start|>assistant\n"));
    let text = enc.render(1, Turn::Generate).unwrap();
    assert!(
        text.contains("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Detect"),
        "image first, then text"
    );
}

#[test]
fn any_conversation_encodes_like_the_learner_when_it_is_the_learners_conversation() {
    // A rollout server encodes the messages a client sends; for the learner's own
    // conversation the ids (and positions) must be the learner's, image pads expanded.
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let sizes = [size(640, 480), size(64, 96)];
    let learner = enc.encode(&sizes, Turn::Generate).unwrap();
    let served = enc.encode_conversation(&enc.messages(2, None), &sizes).unwrap();
    assert_eq!(served.input_ids, learner.input_ids);
    assert_eq!(served.position_ids, learner.position_ids);
    assert!(served.labels.iter().all(|&l| l == IGNORE_INDEX));
    // A different conversation encodes differently, through the same template.
    let mut other = enc.messages(2, None);
    other[0].content = vec![coordexp_text::Content::Text { text: "Other system.".into() }];
    let served = enc.encode_conversation(&other, &sizes).unwrap();
    assert_ne!(served.input_ids, learner.input_ids);
    assert!(decode(&enc, &served.input_ids).contains("Other system."));
    // One image placeholder for two sizes is drift, named.
    let err = enc.encode_conversation(&enc.messages(1, None), &sizes).unwrap_err();
    assert!(err.what().contains("image placeholder"), "{}", err.what());
}

#[test]
fn images_that_would_need_resizing_are_errors() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let answer = Answer::from_objects(&[], FieldOrder::DescFirst).unwrap();
    let err = enc.encode(&[size(641, 480)], Turn::Train(&answer)).unwrap_err();
    assert!(err.what().contains("641x480 is not a multiple of 32"), "{}", err.what());
    let err = enc.encode(&[size(1024, 800)], Turn::Train(&answer)).unwrap_err();
    assert!(err.what().contains("above the limit 786432"), "{}", err.what());
}

#[test]
fn template_factor_must_match_the_model() {
    let dir = tiny_model_dir();
    let model = ModelDir::load(dir.path()).unwrap();
    let t = Template { image_factor: 28, ..Template::default() };
    let err = Encoder::new(model, Prompts::resolve(&Prompt::default()).unwrap(), &t).err().unwrap();
    assert_eq!(err.location(), Some("template.image_factor"));
}

#[test]
fn a_gap_in_the_coordinate_ids_is_rejected_with_the_expand_vocab_hint() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model_dir(dir.path(), true);
    let err = ModelDir::load(dir.path()).unwrap_err();
    assert!(err.what().contains("not contiguous"), "{}", err.what());
    assert!(err.hint_text().unwrap().contains("coordexp model expand-vocab"));
}

#[test]
fn missing_files_are_named_with_their_purpose() {
    let dir = tiny_model_dir();
    std::fs::remove_file(dir.path().join("chat_template.jinja")).unwrap();
    let err = ModelDir::load(dir.path()).unwrap_err();
    assert!(err.what().contains("no chat template"), "{}", err.what());
    let dir = tiny_model_dir();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = ModelDir::load(dir.path()).unwrap_err();
    assert!(
        err.what().contains("tokenizer.json") && err.what().contains("tokenizer"),
        "{}",
        err.what()
    );
}

#[test]
fn vocab_range_is_recorded() {
    let dir = tiny_model_dir();
    let model = ModelDir::load(dir.path()).unwrap();
    let v = model.vocab();
    assert_eq!(v.wildcard(), Some(256 + 26));
    assert_eq!(v.range(), 256 + 27..=256 + 27 + 999);
}

#[test]
fn packed_positions_restart_at_every_segment() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let samples: Vec<EncodedSample> = (0..3)
        .map(|k| encode(&enc, &objects(k + 1, k as u64), &[size(320 + 64 * k as u32, 320)]).1)
        .collect();
    let batch = PackedBatch::assemble(samples.iter().enumerate().map(|(i, s)| (i as u64 * 10, s)));
    let total: usize = samples.iter().map(EncodedSample::len).sum();
    assert_eq!(batch.len(), total);
    assert_eq!(batch.cu_seqlens.len(), 4);
    assert_eq!(*batch.cu_seqlens.last().unwrap() as usize, total);
    for (k, w) in batch.cu_seqlens.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        for (row, own) in batch.position_ids.rows.iter().zip(&samples[k].position_ids.rows) {
            assert_eq!(row[a], 0, "every row restarts at segment {k}");
            assert_eq!(&row[a..b], &own[..], "segment {k} keeps its own positions");
        }
        assert_eq!(batch.position_ids.rows[0][a..b], (0..(b - a) as i64).collect::<Vec<_>>()[..]);
        assert_eq!(batch.segments[k].sample_id, k as u64 * 10);
        assert_eq!(batch.segments[k].offset, a);
    }
    assert_eq!(batch.image_grid_thw.len(), 3);
}

#[test]
fn a_plan_over_encoded_lengths_packs_every_sample_once() {
    let dir = tiny_model_dir();
    let enc = encoder(dir.path());
    let lengths: Vec<u32> = (0..40)
        .map(|k| encode(&enc, &objects(k % 5, k as u64), &[size(256, 256)]).1.len() as u32)
        .collect();
    let cfg = Packing { max_length: 4096, ..Packing::default() };
    let a = plan(&lengths, &cfg, 3).unwrap();
    let b = plan(&lengths, &cfg, 3).unwrap();
    assert_eq!(a.checksum(), b.checksum());
    let mut all: Vec<u32> = a.packs().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

#[test]
fn piecewise_memoized_tokenization_equals_whole_text_tokenization() {
    let dir = tiny_model_dir();
    let model = ModelDir::load(dir.path()).unwrap();
    let tok = model.tokenizer();
    let pieces = coordexp_text::tokenize::PieceTokenizer::new(tok.clone()).unwrap();
    let mut memo = coordexp_text::tokenize::PieceMemo::default();
    let texts = [
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hé<|im_end|>",
        "[<|coord_1|>, <|coord_22|>, <|coord_333|>]<|coord_*|><|coord_1000|><|coord_|>",
        "no special tokens at all, e\u{301}clair ☕",
        "<|im_end|><|im_end|>x<|im_start|>",
        "",
    ];
    for round in 0..2 {
        for t in texts {
            let mut out = Vec::new();
            pieces.encode(t, &mut memo, &mut out).unwrap();
            let ids: Vec<u32> = out.iter().map(|t| t.id).collect();
            let whole = tok.encode(t, false).unwrap();
            assert_eq!(ids, whole.get_ids(), "round {round}: {t:?}");
            let offsets: Vec<(usize, usize)> =
                out.iter().map(|t| (t.start as usize, t.end as usize)).collect();
            assert_eq!(offsets, whole.get_offsets(), "round {round}: offsets of {t:?}");
        }
    }
}
