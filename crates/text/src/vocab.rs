//! The coordinate-vocabulary contract, verified when a tokenizer is loaded.
//!
//! Every coordinate loss indexes logits by `first_id + bin`, so the 1000 tokens
//! `<|coord_0|>`…`<|coord_999|>` must be single special tokens with contiguous ascending ids, each
//! decoding to its own literal. Anything else (a missing token, a gap, a token that BPE would
//! split) silently corrupts every coordinate target, so it is a hard error at load time.

use coordexp_core::norm1000::{Bin, NUM_BINS};
use coordexp_core::{Error, Result};
use std::ops::RangeInclusive;
use tokenizers::Tokenizer;

/// The added (special) tokens of the Qwen3 tokenizer family, in Qwen's id order (the first is
/// id 151643 in the real vocabulary). Test fixtures and the demo tokenizer build on this list so
/// their chat format matches Qwen3-VL's.
pub const QWEN_ADDED: [&str; 26] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
];

pub use coordexp_core::norm1000::COORD_WILDCARD;

const EXPAND_HINT: &str = "expand the vocabulary with `coordexp model expand-vocab` (adds <|coord_*|> and <|coord_0|>..<|coord_999|> as special tokens)";

/// The verified id range of the coordinate tokens (it goes into run manifests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordVocab {
    first_id: u32,
    wildcard: Option<u32>,
}

impl CoordVocab {
    /// Check the contract on `tok` and return the id range.
    pub fn verify(tok: &Tokenizer) -> Result<CoordVocab> {
        let added = tok.get_added_tokens_decoder();
        let first = Bin::MIN.token();
        let first_id = tok.token_to_id(&first).ok_or_else(|| {
            Error::input(format!("the tokenizer has no {first} token")).hint(EXPAND_HINT)
        })?;
        let mut literal = String::with_capacity(14);
        for k in 0..NUM_BINS as u16 {
            literal.clear();
            let bin = Bin::new(k).ok_or_else(|| Error::runtime("bin out of range"))?;
            bin.write_token(&mut literal);
            let expected = first_id + u32::from(k);
            let id = tok.token_to_id(&literal).ok_or_else(|| {
                Error::input(format!("the tokenizer has no {literal} token")).hint(EXPAND_HINT)
            })?;
            if id != expected {
                return Err(Error::input(format!(
                    "coordinate token ids are not contiguous: {literal} has id {id}, expected {expected} ({first} is {first_id})"
                ))
                .hint(EXPAND_HINT));
            }
            if !added.get(&id).is_some_and(|t| t.special) {
                return Err(Error::input(format!(
                    "{literal} (id {id}) is not a special added token"
                ))
                .hint(EXPAND_HINT));
            }
            let decoded = tok.decode(&[id], false).map_err(|e| {
                Error::input(format!("cannot decode {literal} (id {id}): {e}")).hint(EXPAND_HINT)
            })?;
            if decoded != literal {
                return Err(Error::input(format!(
                    "id {id} decodes to {decoded:?}, not its literal {literal}"
                ))
                .hint(EXPAND_HINT));
            }
            let enc = tok.encode(literal.as_str(), false).map_err(|e| {
                Error::input(format!("cannot encode {literal}: {e}")).hint(EXPAND_HINT)
            })?;
            if enc.get_ids() != [id] {
                return Err(Error::input(format!(
                    "{literal} encodes to {:?}, not the single id {id}",
                    enc.get_ids()
                ))
                .hint(EXPAND_HINT));
            }
        }
        Ok(CoordVocab { first_id, wildcard: tok.token_to_id(COORD_WILDCARD) })
    }

    /// Id of `<|coord_0|>`.
    pub fn first_id(&self) -> u32 {
        self.first_id
    }

    /// Ids of `<|coord_0|>`..=`<|coord_999|>`.
    pub fn range(&self) -> RangeInclusive<u32> {
        self.first_id..=self.first_id + (NUM_BINS as u32 - 1)
    }

    /// Id of the wildcard `<|coord_*|>`, when the vocabulary has one.
    pub fn wildcard(&self) -> Option<u32> {
        self.wildcard
    }

    /// The token id of `bin`.
    pub fn id(&self, bin: Bin) -> u32 {
        self.first_id + u32::from(bin.get())
    }

    /// The bin a token id stands for, if it is a coordinate token.
    pub fn bin(&self, id: u32) -> Option<Bin> {
        let k = id.checked_sub(self.first_id)?;
        u16::try_from(k).ok().and_then(Bin::new)
    }
}
