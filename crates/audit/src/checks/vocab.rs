//! `coord_vocab`: the 1,000 coordinate tokens are special added tokens with contiguous ids,
//! untouched by the normaliser and by whitespace stripping, each encoding to exactly one id and
//! decoding back to its literal — alone and inside a box.

use crate::encoding::NO_MODEL;
use crate::report::{Check, Finding, TokenizerFingerprint};
use crate::sha256_file;
use coordexp_core::norm1000::{Bin, NUM_BINS};
use coordexp_text::CoordVocab;
use coordexp_text::vocab::COORD_WILDCARD;
use std::path::Path;
use tokenizers::Tokenizer;

const REMEDY: &str = "expand the base checkpoint's vocabulary with `coordexp model expand-vocab` (adds <|coord_*|> and <|coord_0|>..<|coord_999|> as special, unnormalised added tokens with contiguous ids), and use its tokenizer.json unchanged";

/// Offending tokens listed per property before "… and N more".
const LISTED: usize = 5;

pub(crate) fn run(dir: Option<&Path>) -> (Check, Option<TokenizerFingerprint>) {
    let c = Check::new(
        "coord_vocab",
        "Coordinate vocabulary",
        "<|coord_0|>..<|coord_999|> are 1,000 special added tokens with contiguous ids, `normalized: false` and no whitespace stripping; each encodes to exactly its one id and decodes back to its literal, alone and inside a box",
    );
    let Some(dir) = dir else {
        return (c.skip(NO_MODEL), None);
    };
    let mut c = c;
    let path = dir.join("tokenizer.json");
    let sha = match sha256_file(&path) {
        Ok(s) => s,
        Err(e) => {
            c.findings.push(Finding::at(path.display().to_string(), e.what()).hint(
                "a model directory needs the HF fast-tokenizer file tokenizer.json; copy it from the base checkpoint",
            ));
            return (conclude(c), None);
        }
    };
    c.evidence.push(format!("tokenizer `{}`: sha256 {sha}", path.display()));
    let mut fp = TokenizerFingerprint {
        path: path.display().to_string(),
        sha256: sha,
        coord_first_id: None,
        coord_last_id: None,
    };
    let tok = match Tokenizer::from_file(&path) {
        Ok(t) => t,
        Err(e) => {
            c.findings.push(Finding::at(
                path.display().to_string(),
                format!("cannot load the tokenizer: {e}"),
            ));
            return (conclude(c), Some(fp));
        }
    };
    let vocab = match CoordVocab::verify(&tok) {
        Ok(v) => v,
        Err(e) => {
            let mut f = Finding::at(path.display().to_string(), e.what());
            if let Some(h) = e.hint_text() {
                f = f.hint(h);
            }
            c.findings.push(f);
            return (conclude(c), Some(fp));
        }
    };
    let range = vocab.range();
    fp.coord_first_id = Some(*range.start());
    fp.coord_last_id = Some(*range.end());
    c.evidence.push(format!(
        "{} coordinate tokens, ids {}..={} (contiguous, each a special added token that encodes to its one id and decodes to its literal)",
        NUM_BINS,
        range.start(),
        range.end()
    ));
    c.evidence.push(match vocab.wildcard() {
        Some(id) => format!("wildcard {COORD_WILDCARD}: id {id}"),
        None => format!("wildcard {COORD_WILDCARD}: absent"),
    });

    // The added-token table: the flags that decide how the literal is matched in text.
    let added = tok.get_added_tokens_decoder();
    let mut bad: [(&str, Vec<String>); 5] = [
        (
            "normalized: true (the normaliser may rewrite the text before the token is matched)",
            Vec::new(),
        ),
        ("special: false", Vec::new()),
        ("lstrip: true (swallows the space before it)", Vec::new()),
        ("rstrip: true (swallows the space after it)", Vec::new()),
        ("single_word: true (not matched inside `[<|coord_…|>,`)", Vec::new()),
    ];
    for id in range.clone() {
        let Some(t) = added.get(&id) else {
            bad[1].1.push(format!("id {id} (not in the added-token table)"));
            continue;
        };
        let flags = [t.normalized, !t.special, t.lstrip, t.rstrip, t.single_word];
        for (slot, flagged) in bad.iter_mut().zip(flags) {
            if flagged {
                slot.1.push(t.content.clone());
            }
        }
    }
    for (what, tokens) in &bad {
        if tokens.is_empty() {
            continue;
        }
        let mut listed = tokens.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ");
        if tokens.len() > LISTED {
            listed.push_str(&format!(" … and {} more", tokens.len() - LISTED));
        }
        c.findings.push(Finding::at(
            path.display().to_string(),
            format!("{} coordinate token(s) have {what}: {listed}", tokens.len()),
        ));
    }
    if bad.iter().all(|(_, t)| t.is_empty()) {
        c.evidence.push(
            "added-token table: every coordinate token has normalized: false, special: true, lstrip/rstrip/single_word: false".into(),
        );
    }

    // In context, as an answer writes them.
    let bins = [0u16, 1, 500, 998, 999].map(Bin::new);
    let literals: Vec<String> = bins.iter().flatten().map(|b| b.token()).collect();
    let text = format!("\"bbox_2d\": [{}]}}", literals.join(", "));
    match tok.encode(text.as_str(), false) {
        Err(e) => c.findings.push(Finding::new(None, format!("cannot encode {text:?}: {e}"))),
        Ok(enc) => {
            let ids = enc.get_ids();
            let coords: Vec<u32> = ids.iter().copied().filter(|i| range.contains(i)).collect();
            let expected: Vec<u32> = bins.iter().flatten().map(|b| vocab.id(*b)).collect();
            if coords != expected {
                c.findings.push(Finding::new(
                    None,
                    format!(
                        "in context {text:?} encodes to coordinate ids {coords:?}, expected {expected:?}"
                    ),
                ));
            }
            match tok.decode(ids, false) {
                Ok(back) if back == text => c.evidence.push(format!(
                    "in context: {text:?} encodes to {} ids with the coordinates as single ids, and decodes back unchanged",
                    ids.len()
                )),
                Ok(back) => c.findings.push(Finding::new(
                    None,
                    format!("in context {text:?} decodes back as {back:?}"),
                )),
                Err(e) => c.findings.push(Finding::new(None, format!("cannot decode: {e}"))),
            }
        }
    }
    (conclude(c), Some(fp))
}

fn conclude(c: Check) -> Check {
    c.conclude(
        "the coordinate vocabulary satisfies the contract",
        |n| format!("{n} coordinate-vocabulary problem(s)"),
        REMEDY,
    )
}
