//! A small tokenizer for the synthetic vocabulary, with Qwen3-VL's special tokens and chat format.
//!
//! Why not the real Qwen tokenizer: its 151k-row output layer would dwarf a demo model and its
//! time. Why not plain bytes: a byte per token makes every answer five times longer. This is a
//! byte-level BPE (any text round-trips) whose merges are learned from the chat-rendered
//! training conversations, with one pre-tokenization rule that keeps token types clean:
//! every JSON string literal (`"desc"`, `"red circle"`) and every line break is its own piece,
//! so a description becomes one token of type `desc`, separators like `", "` and `]}, {` one
//! token each, and no token crosses the line break before the answer.
//!
//! Ids: the 26 Qwen3 added tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, the vision
//! tokens, …) first, then `<|coord_*|>` and `<|coord_0|>`…`<|coord_999|>` (contiguous, as the
//! coordinate contract requires), then the 256 byte symbols and the learned merges.

use coordexp_core::{Error, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use coordexp_text::vocab::QWEN_ADDED;

/// JSON string literals and line breaks are pieces of their own (see the module docs).
const PIECES: &str = r#""[^"\n]*"|\n"#;

/// Learn the merges from `corpus` (whole rendered conversations, special tokens included) and
/// return the tokenizer. At most `max_merges` merges are learned; a merge must occur at least
/// twice.
pub fn learn(corpus: &[String], max_merges: usize) -> Result<Tokenizer> {
    let fail = |what: &str, e: tokenizers::Error| {
        Error::runtime(format!("building the demo tokenizer: {what}: {e}"))
    };
    let special: Vec<AddedToken> = QWEN_ADDED
        .iter()
        .map(|t| t.to_string())
        .chain(coordexp_model::vocab::coordinate_tokens())
        .map(|t| AddedToken::from(t, true))
        .collect();
    let mut tokenizer = Tokenizer::new(BPE::default());
    let split =
        Split::new(SplitPattern::Regex(PIECES.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| fail("the piece pattern", e))?;
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    // Added before training so that the corpus is cut at them exactly as at encoding time;
    // the trainer then gives them the same ids (0.. in this order).
    tokenizer.add_special_tokens(special.clone()).map_err(|e| fail("special tokens", e))?;
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(special.len() + 256 + max_merges)
        .min_frequency(2)
        .special_tokens(special.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, corpus.iter()).map_err(|e| fail("training", e))?;
    tokenizer.add_special_tokens(special).map_err(|e| fail("special tokens", e))?;
    Ok(tokenizer)
}

/// Write `tokenizer.json` into `dir`.
pub fn save(tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).map_err(|e| {
        Error::runtime(format!("cannot write the tokenizer: {e}")).at(path.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let answer = r#"{"objects": [{"desc": "red circle", "bbox_2d": [<|coord_1|>, <|coord_20|>, <|coord_300|>, <|coord_999|>]}]}"#;
        (0..20).map(|_| format!("<|im_start|>assistant\n{answer}<|im_end|>\n")).collect()
    }

    #[test]
    fn coordinate_ids_are_contiguous_after_the_qwen_tokens_and_text_round_trips() {
        let tok = learn(&corpus(), 200).unwrap();
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(tok.token_to_id("<|coord_*|>"), Some(26));
        assert_eq!(tok.token_to_id("<|coord_0|>"), Some(27));
        assert_eq!(tok.token_to_id("<|coord_999|>"), Some(1026));
        let text = &corpus()[0];
        let enc = tok.encode(text.as_str(), false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), *text);
        let unseen = "{\"objects\": [{\"desc\": \"blue ünïcode\"}]}";
        let enc = tok.encode(unseen, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), unseen);
    }

    #[test]
    fn a_description_is_one_token_and_no_token_crosses_the_line_break() {
        let tok = learn(&corpus(), 200).unwrap();
        let enc = tok.encode(corpus()[0].as_str(), false).unwrap();
        let pieces: Vec<&str> =
            enc.get_offsets().iter().map(|&(s, e)| &corpus_ref()[s..e]).collect();
        assert!(pieces.contains(&"\"red circle\""), "{pieces:?}");
        assert!(pieces.contains(&"\n"), "{pieces:?}");
        assert!(pieces.contains(&", "), "{pieces:?}");
    }

    fn corpus_ref() -> &'static str {
        static C: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        C.get_or_init(|| corpus()[0].clone())
    }
}
