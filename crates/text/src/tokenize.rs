//! Tokenization with byte offsets, memoized per text piece between special tokens.
//!
//! A HF tokenizer first cuts the text at its added tokens that are matched on the raw text
//! (`normalized: false`), then normalizes, pre-tokenizes and BPE-encodes every piece on its own.
//! Encoding piece by piece is therefore *identical* to encoding the whole text, and most pieces
//! repeat from sample to sample (the system prompt, the user prompt, `", "` between coordinate
//! tokens, `]}, {"desc": "person", "bbox_2d": [`), so a small memo makes tokenization nearly
//! free. The cut is done with the same leftmost-longest rule the tokenizer uses. A tokenizer
//! whose raw-matched added tokens strip whitespace or must be single words would cut differently;
//! for it we encode the whole text instead (same result, no memo).

use aho_corasick::{AhoCorasick, MatchKind};
use coordexp_core::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use tokenizers::Tokenizer;

/// One token and the byte range of the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub start: u32,
    pub end: u32,
}

/// Entries kept in a [`PieceMemo`] before it starts over (bounds memory on open vocabularies).
const MEMO_CAPACITY: usize = 1 << 17;

/// Memo of encoded pieces (offsets relative to the piece). Owned by one encoder thread.
#[derive(Default)]
pub struct PieceMemo {
    map: HashMap<Box<str>, Arc<[Token]>>,
}

/// A tokenizer plus the added-token cutter.
#[derive(Clone)]
pub struct PieceTokenizer {
    tokenizer: Arc<Tokenizer>,
    cutter: Option<Arc<Cutter>>,
}

struct Cutter {
    matcher: AhoCorasick,
    ids: Vec<u32>,
}

impl PieceTokenizer {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<PieceTokenizer> {
        let decoder = tokenizer.get_added_tokens_decoder();
        let mut raw: Vec<(u32, String)> = Vec::new();
        let mut piecewise_safe = true;
        for (id, tok) in decoder {
            if tok.normalized {
                continue; // matched after normalization, inside a piece: the tokenizer does it
            }
            piecewise_safe &= !(tok.lstrip || tok.rstrip || tok.single_word);
            raw.push((id, tok.content));
        }
        if !piecewise_safe || raw.is_empty() {
            return Ok(PieceTokenizer { tokenizer, cutter: None });
        }
        raw.sort();
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(raw.iter().map(|(_, c)| c.as_str()))
            .map_err(|e| Error::runtime(format!("cannot index the added tokens: {e}")))?;
        let ids = raw.into_iter().map(|(id, _)| id).collect();
        Ok(PieceTokenizer { tokenizer, cutter: Some(Arc::new(Cutter { matcher, ids })) })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Encode `text` (no special tokens added) and append its tokens to `out`.
    pub fn encode(&self, text: &str, memo: &mut PieceMemo, out: &mut Vec<Token>) -> Result<()> {
        let Some(cutter) = &self.cutter else {
            return self.encode_plain(text, 0, out);
        };
        let mut at = 0;
        for m in cutter.matcher.find_iter(text) {
            if m.start() > at {
                self.encode_piece(&text[at..m.start()], at, memo, out)?;
            }
            out.push(Token {
                id: cutter.ids[m.pattern().as_usize()],
                start: m.start() as u32,
                end: m.end() as u32,
            });
            at = m.end();
        }
        if at < text.len() {
            self.encode_piece(&text[at..], at, memo, out)?;
        }
        Ok(())
    }

    fn encode_piece(
        &self,
        piece: &str,
        base: usize,
        memo: &mut PieceMemo,
        out: &mut Vec<Token>,
    ) -> Result<()> {
        let base = base as u32;
        if let Some(tokens) = memo.map.get(piece) {
            out.extend(tokens.iter().map(|t| Token {
                id: t.id,
                start: t.start + base,
                end: t.end + base,
            }));
            return Ok(());
        }
        let mut local = Vec::new();
        self.encode_plain(piece, 0, &mut local)?;
        out.extend(local.iter().map(|t| Token {
            id: t.id,
            start: t.start + base,
            end: t.end + base,
        }));
        if memo.map.len() >= MEMO_CAPACITY {
            memo.map.clear();
        }
        memo.map.insert(piece.into(), local.into());
        Ok(())
    }

    fn encode_plain(&self, text: &str, base: usize, out: &mut Vec<Token>) -> Result<()> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::runtime(format!("tokenization failed: {e}")))?;
        let base = base as u32;
        out.extend(enc.get_ids().iter().zip(enc.get_offsets()).map(|(&id, &(s, e))| Token {
            id,
            start: s as u32 + base,
            end: e as u32 + base,
        }));
        Ok(())
    }
}
