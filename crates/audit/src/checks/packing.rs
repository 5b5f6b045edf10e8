//! `packing`: a packing plan over the sampled training lengths, and the invariants of the first
//! packs assembled from them: no cross-segment attention (`cu_seqlens` are the segment
//! boundaries), positions restart at 0 in every segment, labels only on answer tokens.

use crate::checks::records::NO_DATA;
use crate::context::Ctx;
use crate::data::DataFile;
use crate::encoding::{Encoded, Encoding, ModelState, answer_of, encode_record};
use crate::report::{Check, Finding};
use coordexp_core::config::schema::{OnOverflow, Packing};
use coordexp_text::{EncodedSample, IGNORE_INDEX, PackedBatch, TokenType, epoch_seed, plan};

/// Packs assembled and verified.
pub const PACKS_CHECKED: usize = 4;

const REMEDY: &str = "the packed batch no longer keeps its segments apart: this is a defect of coordexp-text (plan.rs / batch.rs / encode.rs), not of the data; run `cargo test -p coordexp-text` and report it";

pub(crate) fn run(
    ctx: &Ctx<'_>,
    files: &[DataFile],
    model: &ModelState,
    encoding: Option<&Encoding>,
) -> Check {
    let c = Check::new(
        "packing",
        "Packing invariants",
        "on a plan over the sampled training lengths, the first packs keep their segments apart: cu_seqlens are exactly the sample boundaries (no cross-segment attention), position ids restart at 0 in every segment, prompt and image tokens are labelled -100 and every supervised token lies in its segment's answer span (struct/desc/coord/closure types, the end-of-turn last)",
    );
    let Some(enc) = model.encoder() else {
        return c.skip(model.unavailable().unwrap_or_default());
    };
    if files.is_empty() {
        return c.skip(NO_DATA);
    }
    // The training file (or the --data file) is what gets packed.
    let f = files.iter().position(|f| f.role == "train").unwrap_or(0);
    let file = &files[f];
    let Some(encoding) = encoding else {
        return c.skip("nothing was encoded");
    };
    let samples: Vec<&Encoded> = encoding.of_file(f).collect();
    if samples.is_empty() {
        return c.skip(format!(
            "no sampled record of {} could be encoded (see the records, images and template checks)",
            file.path.display()
        ));
    }
    let mut c = c;
    c.settings = ctx.settings(&[
        "packing.enabled",
        "packing.max_length",
        "packing.min_fill",
        "packing.on_overflow",
        "run.seed",
    ]);
    let lengths: Vec<u32> =
        samples.iter().map(|e| u32::try_from(e.len).unwrap_or(u32::MAX)).collect();
    // Oversized samples are the lengths check's finding; here they become singletons so the
    // rest of the plan can still be verified.
    let cfg = Packing { on_overflow: OnOverflow::Singleton, ..ctx.cfg.packing.clone() };
    let seed = epoch_seed(ctx.cfg.run.seed, 0);
    let packs: Vec<Vec<usize>> = if ctx.cfg.packing.enabled {
        match plan(&lengths, &cfg, seed) {
            Ok(p) => {
                let st = p.stats();
                c.evidence.push(format!(
                    "plan of epoch 0 (seed {seed}) over the {} encoded samples of {} `{}`: {} packs, fill mean {:.3} (min {:.3}, max {:.3}), {} oversize singletons, {} packs dropped below packing.min_fill ({} samples); checksum {} (of this sample, not the full dataset)",
                    st.samples,
                    file.role,
                    file.path.display(),
                    st.packs,
                    st.mean_fill,
                    st.min_fill,
                    st.max_fill,
                    st.oversize_singletons,
                    st.dropped_packs,
                    st.dropped_samples,
                    p.checksum()
                ));
                if st.dropped_samples > 0 {
                    c.warnings.push(format!(
                        "packing.min_fill {} drops {} of {} sampled samples (counted, never trained on)",
                        ctx.cfg.packing.min_fill, st.dropped_samples, st.samples
                    ));
                }
                p.packs()
                    .take(PACKS_CHECKED)
                    .map(|m| m.iter().map(|i| *i as usize).collect())
                    .collect()
            }
            Err(e) => {
                c.findings.push(Finding::new(e.location().map(str::to_string), e.what()));
                Vec::new()
            }
        }
    } else {
        c.evidence.push("packing.enabled is false: each micro-batch holds one sample (checked as one-segment packs)".into());
        (0..samples.len().min(PACKS_CHECKED)).map(|i| vec![i]).collect()
    };
    let merge = enc.model().vision().merge_size;
    let mut checked = 0;
    for (k, members) in packs.iter().enumerate() {
        let mut parts: Vec<(u64, EncodedSample)> = Vec::with_capacity(members.len());
        let mut answers = Vec::with_capacity(members.len());
        let mut lines = Vec::with_capacity(members.len());
        for &i in members {
            let Some(e) = samples.get(i) else { continue };
            let Some((line, record)) =
                file.contents.as_ref().ok().and_then(|c| c.sample.get(e.index))
            else {
                continue;
            };
            let encoded = answer_of(ctx, record).and_then(|a| encode_record(enc, &a, record));
            match encoded {
                Ok((s, n)) => {
                    parts.push((*line as u64, s));
                    answers.push(n);
                    lines.push(*line);
                }
                Err(err) => c.findings.push(Finding::at(file.at(*line), err.what())),
            }
        }
        let batch = PackedBatch::assemble(parts.iter().map(|(id, s)| (*id, s)));
        let where_ = format!(
            "pack {k} ({} segments: {})",
            lines.len(),
            lines.iter().map(|l| format!("line {l}")).collect::<Vec<_>>().join(", ")
        );
        for problem in verify_pack(&batch, &answers, merge) {
            c.findings
                .push(Finding::new(Some(format!("{} {where_}", file.path.display())), problem));
        }
        checked += 1;
        c.evidence.push(format!(
            "{where_}: {} tokens, cu_seqlens {:?}",
            batch.len(),
            batch.cu_seqlens
        ));
    }
    c.evidence.push(format!("{checked} pack(s) assembled and verified (at most {PACKS_CHECKED})"));
    c.conclude(
        "segments stay apart: boundaries, positions and labels hold in every checked pack",
        |n| format!("{n} packing invariant violation(s)"),
        REMEDY,
    )
}

/// Check the invariants of a packed batch whose segment `i` holds an answer of
/// `answer_tokens[i]` tokens (the end-of-turn token excluded); `merge` is the vision merge size.
/// Returns one line per violation (empty when the pack is sound):
/// - every per-token vector has the pack's length;
/// - `cu_seqlens` is `[0, …, len]` and its boundaries are exactly the segments' offsets, so
///   block-diagonal attention never crosses a segment;
/// - position row 0 is `0..len` inside each segment, and every row starts at 0;
/// - prompt and image tokens are labelled −100; a supervised token is labelled with its own id
///   and typed struct/desc/coord/closure; in each segment the supervised tokens are one run of
///   `answer + 1` tokens ending with a closure (end-of-turn) token, and the first token is not
///   supervised (nothing leaks from the previous segment);
/// - each segment's image tokens are its grids' tokens, and the pack's grids are the segments'
///   grids in order.
pub fn verify_pack(batch: &PackedBatch, answer_tokens: &[usize], merge: u32) -> Vec<String> {
    let mut p = Vec::new();
    let n = batch.input_ids.len();
    if batch.labels.len() != n || batch.token_types.len() != n {
        p.push(format!(
            "per-token vectors differ in length: {n} ids, {} labels, {} types",
            batch.labels.len(),
            batch.token_types.len()
        ));
    }
    for (r, row) in batch.position_ids.rows.iter().enumerate() {
        if row.len() != n {
            p.push(format!("position row {r} has {} entries for {n} tokens", row.len()));
        }
    }
    if batch.segments.len() != answer_tokens.len() {
        p.push(format!(
            "{} segments but {} answers were given",
            batch.segments.len(),
            answer_tokens.len()
        ));
    }
    let cu = &batch.cu_seqlens;
    let mut expected = vec![0i64];
    expected.extend(batch.segments.iter().map(|s| (s.offset + s.len) as i64));
    let actual: Vec<i64> = cu.iter().map(|v| i64::from(*v)).collect();
    if actual != expected || expected.last().copied() != Some(n as i64) {
        p.push(format!(
            "cu_seqlens {actual:?} are not the segment boundaries {expected:?} ending at the pack length {n}: attention would cross segments"
        ));
    }
    let mut next = 0;
    for (i, s) in batch.segments.iter().enumerate() {
        let who = format!("segment {i} (sample {})", s.sample_id);
        if s.offset != next {
            p.push(format!("{who} starts at {} instead of {next}", s.offset));
        }
        next = s.offset + s.len;
        if s.len == 0 {
            p.push(format!("{who} is empty"));
            continue;
        }
        let range = s.offset..(s.offset + s.len).min(n);
        if range.end != s.offset + s.len {
            p.push(format!("{who} runs past the end of the pack"));
        }
        for (r, row) in batch.position_ids.rows.iter().enumerate() {
            if row.get(s.offset) != Some(&0) {
                p.push(format!("{who}: position row {r} starts at {:?}, not 0", row.get(s.offset)));
            }
        }
        let row0 = &batch.position_ids.rows[0];
        if let Some(j) = range.clone().find(|&t| row0.get(t) != Some(&((t - s.offset) as i64))) {
            p.push(format!(
                "{who}: position row 0 is {:?} at token {}, expected {} (positions must restart at every segment)",
                row0.get(j),
                j - s.offset,
                j - s.offset
            ));
        }
        let mut supervised = Vec::new();
        let mut image_tokens = 0usize;
        for t in range.clone() {
            let (Some(&label), Some(&ty), Some(&id)) =
                (batch.labels.get(t), batch.token_types.get(t), batch.input_ids.get(t))
            else {
                continue;
            };
            if ty == TokenType::Image {
                image_tokens += 1;
            }
            if label == IGNORE_INDEX {
                if ty.is_supervised() {
                    p.push(format!(
                        "{who}: token {} of type {ty:?} carries no label",
                        t - s.offset
                    ));
                }
                continue;
            }
            if !ty.is_supervised() {
                p.push(format!(
                    "{who}: {ty:?} token {} is labelled {label}: prompt and image tokens must be -100",
                    t - s.offset
                ));
            }
            if label != i64::from(id) {
                p.push(format!(
                    "{who}: token {} is labelled {label}, not its own id {id}",
                    t - s.offset
                ));
            }
            supervised.push(t);
        }
        let grid_tokens: usize = s.image_grid_thw.iter().map(|g| g.tokens(merge)).sum();
        if image_tokens != grid_tokens {
            p.push(format!(
                "{who} holds {image_tokens} image tokens but its grids make {grid_tokens}"
            ));
        }
        if supervised.first() == Some(&s.offset) {
            p.push(format!(
                "{who}: its first token is supervised (a label leaks across the segment boundary)"
            ));
        }
        if supervised.windows(2).any(|w| w[1] != w[0] + 1) {
            p.push(format!("{who}: supervised tokens are not one contiguous answer span"));
        }
        if let Some(&answer) = answer_tokens.get(i)
            && supervised.len() != answer + 1
        {
            p.push(format!(
                "{who}: {} supervised tokens, expected the answer's {answer} plus its end-of-turn token",
                supervised.len()
            ));
        }
        if let Some(&last) = supervised.last()
            && batch.token_types.get(last) != Some(&TokenType::Closure)
        {
            p.push(format!(
                "{who}: the last supervised token is {:?}, not the closing end-of-turn",
                batch.token_types.get(last)
            ));
        }
    }
    let grids: Vec<_> =
        batch.segments.iter().flat_map(|s| s.image_grid_thw.iter().copied()).collect();
    if grids != batch.image_grid_thw {
        p.push("the pack's image grids are not its segments' grids in order".into());
    }
    p
}
