//! One record → token ids, labels and token types, through the model's own chat template.
//!
//! The steps, each checked:
//! 1. build the conversation (system; user = image(s) then instruction; assistant = CoordJSON);
//! 2. render it with the model's template, and render the same conversation without the answer
//!    as a generation prompt: the full text must be that prompt followed by the answer text —
//!    this is how the answer span is found without ever hand-building a prompt string;
//! 3. tokenize, expanding each image placeholder to `t·(H/p)·(W/p)/m²` image-pad tokens;
//! 4. label the answer tokens and the end-of-turn token that follows them, everything else −100;
//!    type every token from the answer's spans; check that the coordinate tokens in the ids are
//!    the answer's bins in order.
//!
//! Images are never resized here: a side that is not a multiple of patch × merge, or a size
//! outside the pixel limits, is an error naming the size and the limit.

use crate::messages::{Message, conversation};
use crate::model_dir::ModelDir;
use crate::mrope::GridThw;
use crate::mrope::position_ids;
use crate::sample::{Answer, EncodedSample, IGNORE_INDEX, TokenType};
use crate::tokenize::{PieceMemo, PieceTokenizer, Token};
use coordexp_core::config::schema::Template;
use coordexp_core::geometry::ImageSize;
use coordexp_core::prompt::Prompts;
use coordexp_core::{Error, Result};
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

/// What the assistant turn holds.
#[derive(Debug, Clone, Copy)]
pub enum Turn<'a> {
    /// Training: the answer is part of the text and supervised.
    Train(&'a Answer),
    /// Inference: the text ends with the generation prompt.
    Generate,
}

/// Turns conversations into [`EncodedSample`]s for one model and one prompt pair.
///
/// Cloning is cheap (shared tokenizer and template) and gives the clone its own memo, so each
/// worker thread should own a clone.
pub struct Encoder {
    shared: Arc<Shared>,
    memo: RefCell<PieceMemo>,
    prefixes: RefCell<Vec<Option<Arc<str>>>>,
}

struct Shared {
    model: ModelDir,
    pieces: PieceTokenizer,
    special: HashSet<u32>,
    prompts: Prompts,
    max_pixels: u64,
}

impl Clone for Encoder {
    fn clone(&self) -> Self {
        Encoder {
            shared: self.shared.clone(),
            memo: RefCell::default(),
            prefixes: RefCell::default(),
        }
    }
}

impl Encoder {
    /// An encoder for `model` with `prompts`; `template` holds the pixel budget and the image
    /// factor, which must agree with the model's patch geometry.
    pub fn new(model: ModelDir, prompts: Prompts, template: &Template) -> Result<Encoder> {
        let vision = model.vision();
        if template.image_factor != vision.factor() {
            return Err(Error::input(format!(
                "template.image_factor is {}, but the model's patch size × merge size is {}",
                template.image_factor,
                vision.factor()
            ))
            .at("template.image_factor")
            .hint(format!("set template.image_factor: {}", vision.factor())));
        }
        let special = model
            .tokenizer()
            .get_added_tokens_decoder()
            .into_iter()
            .filter_map(|(id, t)| t.special.then_some(id))
            .collect();
        let pieces = PieceTokenizer::new(model.tokenizer().clone())?;
        let max_pixels = template.max_pixels.min(vision.max_pixels);
        Ok(Encoder {
            shared: Arc::new(Shared { model, pieces, special, prompts, max_pixels }),
            memo: RefCell::default(),
            prefixes: RefCell::default(),
        })
    }

    pub fn model(&self) -> &ModelDir {
        &self.shared.model
    }

    pub fn prompts(&self) -> &Prompts {
        &self.shared.prompts
    }

    /// The conversation for `images` image placeholders and an optional answer text.
    pub fn messages(&self, images: usize, answer: Option<&str>) -> Vec<Message> {
        let p = &self.shared.prompts;
        conversation(&p.system, &p.user, images, answer)
    }

    /// The patch grid of an image, or an error when the image would need resizing.
    pub fn grid(&self, size: ImageSize) -> Result<GridThw> {
        let v = self.shared.model.vision();
        let (w, h) = (size.width(), size.height());
        let f = v.factor();
        if w % f != 0 || h % f != 0 {
            return Err(Error::input(format!(
                "image size {w}x{h} is not a multiple of {f} (patch {} x merge {}); images are never resized at training time",
                v.patch_size, v.merge_size
            ))
            .hint("resize the images offline with `coordexp data resize` (it rescales the geometry too)"));
        }
        if size.pixels() > self.shared.max_pixels {
            return Err(Error::input(format!(
                "image size {w}x{h} has {} pixels, above the limit {}",
                size.pixels(),
                self.shared.max_pixels
            ))
            .hint("resize the images offline with `coordexp data resize`, or raise template.max_pixels (the model's own limit caps it)"));
        }
        if size.pixels() < v.min_pixels {
            return Err(Error::input(format!(
                "image size {w}x{h} has {} pixels, below the model's minimum {}",
                size.pixels(),
                v.min_pixels
            ))
            .hint("the model's image processor would upscale this image; resize it offline with `coordexp data resize`"));
        }
        Ok(GridThw { t: 1, h: h / v.patch_size, w: w / v.patch_size })
    }

    /// The rendered text (one placeholder per image, not yet expanded).
    pub fn render(&self, images: usize, turn: Turn<'_>) -> Result<String> {
        match turn {
            Turn::Generate => Ok(self.generation_prompt(images)?.to_string()),
            Turn::Train(answer) => self.render_answer(images, answer.text()),
        }
    }

    fn render_answer(&self, images: usize, answer: &str) -> Result<String> {
        self.shared.model.template().render(&self.messages(images, Some(answer)), false)
    }

    /// Encode one conversation with these image sizes.
    pub fn encode(&self, images: &[ImageSize], turn: Turn<'_>) -> Result<EncodedSample> {
        Ok(self.encode_tokens(images, turn)?.0)
    }

    /// Encode a training conversation and give, for each token of the answer in order (the
    /// end-of-turn token excluded), its byte range in the answer text: what per-byte
    /// supervision (channel B's role table) maps onto. Answer token `j` is id
    /// `first_supervised + j` of the sample (the first id whose label is not −100).
    pub fn encode_with_offsets(
        &self,
        images: &[ImageSize],
        answer: &Answer,
    ) -> Result<(EncodedSample, Vec<Range<usize>>)> {
        let (sample, tokens, span) = self.encode_tokens(images, Turn::Train(answer))?;
        let span = span.ok_or_else(|| Error::runtime("a training turn has an answer span"))?;
        Ok((sample, answer_ranges(&tokens, &span)))
    }

    /// The tokens of `answer` (`(id, byte range in the answer)`) exactly as the training
    /// encoding tokenises it inside a conversation with `images` images. Channel B compares
    /// its clean target and every duplicate alternative through this one path, so no
    /// tokenisation junction can fake a divergence.
    pub fn answer_tokens(&self, images: usize, answer: &str) -> Result<Vec<(u32, Range<usize>)>> {
        let prefix = self.generation_prompt(images)?;
        let full = self.render_answer(images, answer)?;
        let start = prefix.len();
        if !full.starts_with(&*prefix) || !full[start..].starts_with(answer) {
            return Err(template_drift(
                "the rendered conversation is not the generation prompt followed by the answer",
            ));
        }
        let mut tokens = Vec::with_capacity(full.len() / 3 + 16);
        self.shared.pieces.encode(&full, &mut self.memo.borrow_mut(), &mut tokens)?;
        let span = start..start + answer.len();
        let ranges = answer_ranges(&tokens, &span);
        let ids = tokens.iter().filter(|t| inside(t, &span)).map(|t| t.id);
        Ok(ids.zip(ranges).collect())
    }

    /// Encode the generation prompt of any conversation (a rollout server's request) with
    /// these image sizes: the model's template with the generation prompt, the same
    /// tokenization and image-pad expansion as [`Encoder::encode`]. For the conversation of
    /// [`Encoder::messages`] the ids are exactly those of `encode(images, Turn::Generate)`,
    /// which is what lets a server's prompt ids be compared with the learner's.
    pub fn encode_conversation(
        &self,
        messages: &[Message],
        images: &[ImageSize],
    ) -> Result<EncodedSample> {
        let grids = images.iter().map(|s| self.grid(*s)).collect::<Result<Vec<_>>>()?;
        let text = self.shared.model.template().render(messages, true)?;
        let mut tokens = Vec::with_capacity(text.len() / 3 + 16);
        self.shared.pieces.encode(&text, &mut self.memo.borrow_mut(), &mut tokens)?;
        self.assemble(&tokens, grids, None)
    }

    /// Tokenise and assemble; also the raw tokens and the answer's byte span in the text.
    fn encode_tokens(
        &self,
        images: &[ImageSize],
        turn: Turn<'_>,
    ) -> Result<(EncodedSample, Vec<Token>, Option<Range<usize>>)> {
        let grids = images.iter().map(|s| self.grid(*s)).collect::<Result<Vec<_>>>()?;
        let prefix = self.generation_prompt(images.len())?;
        let (text, answer_span) = match turn {
            Turn::Generate => (prefix.to_string(), None),
            Turn::Train(answer) => {
                let full = self.render(images.len(), turn)?;
                let start = prefix.len();
                if !full.starts_with(&*prefix) || !full[start..].starts_with(answer.text()) {
                    return Err(template_drift(
                        "the rendered conversation is not the generation prompt followed by the answer",
                    ));
                }
                (full, Some((answer, start..start + answer.text().len())))
            }
        };
        let mut tokens = Vec::with_capacity(text.len() / 3 + 16);
        self.shared.pieces.encode(&text, &mut self.memo.borrow_mut(), &mut tokens)?;
        let span = answer_span.as_ref().map(|(_, s)| s.clone());
        let sample = self.assemble(&tokens, grids, answer_span)?;
        Ok((sample, tokens, span))
    }

    /// The conversation without the answer, rendered with the generation prompt; memoized by
    /// image count (it does not depend on the record).
    fn generation_prompt(&self, images: usize) -> Result<Arc<str>> {
        if let Some(Some(p)) = self.prefixes.borrow().get(images) {
            return Ok(p.clone());
        }
        let text: Arc<str> =
            self.shared.model.template().render(&self.messages(images, None), true)?.into();
        let mut cache = self.prefixes.borrow_mut();
        if cache.len() <= images {
            cache.resize(images + 1, None);
        }
        cache[images] = Some(text.clone());
        Ok(text)
    }

    fn assemble(
        &self,
        tokens: &[Token],
        grids: Vec<GridThw>,
        answer: Option<(&Answer, Range<usize>)>,
    ) -> Result<EncodedSample> {
        let sh = &*self.shared;
        let image_pad = sh.model.vision_tokens().image_pad;
        let merge = sh.model.vision().merge_size;
        let vocab = sh.model.vocab();
        let extra: usize = grids.iter().map(|g| g.tokens(merge)).sum();
        let n = tokens.len() + extra;
        let mut ids = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let byte_types = answer.as_ref().map(|(a, _)| answer_byte_types(a));
        let mut images_seen = 0;
        let mut end_of_turn_seen = false;
        let mut coords_seen = Vec::new();
        for tok in tokens {
            let (s, e) = (tok.start as usize, tok.end as usize);
            if tok.id == image_pad {
                let grid = grids.get(images_seen).ok_or_else(|| {
                    template_drift(&format!(
                        "the text holds more image placeholders than the sample's {} image(s); does the prompt contain an image-pad token?",
                        grids.len()
                    ))
                })?;
                let count = grid.tokens(merge);
                ids.extend(std::iter::repeat_n(image_pad, count));
                labels.extend(std::iter::repeat_n(IGNORE_INDEX, count));
                types.extend(std::iter::repeat_n(TokenType::Image, count));
                images_seen += 1;
                continue;
            }
            let (ty, supervised) = match (&answer, &byte_types) {
                (Some((_, span)), Some(bt)) if e > span.start && s < span.end => {
                    if s < span.start || e > span.end {
                        return Err(template_drift(
                            "a token straddles the edge of the answer text",
                        ));
                    }
                    let ty = classify(
                        tok,
                        &bt[s - span.start..e - span.start],
                        vocab.bin(tok.id).is_some(),
                    )?;
                    if let Some(bin) = vocab.bin(tok.id) {
                        coords_seen.push(bin);
                    }
                    (ty, true)
                }
                (Some((_, span)), Some(_)) if s >= span.end && !end_of_turn_seen => {
                    end_of_turn_seen = true;
                    if s != span.end || !sh.special.contains(&tok.id) {
                        return Err(template_drift(
                            "the answer is not followed directly by a special end-of-turn token",
                        ));
                    }
                    (TokenType::Closure, true)
                }
                _ => (TokenType::Prompt, false),
            };
            ids.push(tok.id);
            labels.push(if supervised { i64::from(tok.id) } else { IGNORE_INDEX });
            types.push(ty);
        }
        if images_seen != grids.len() {
            return Err(template_drift(&format!(
                "the text holds {images_seen} image placeholder(s) for {} image(s)",
                grids.len()
            )));
        }
        if let Some((answer, _)) = answer {
            if !end_of_turn_seen {
                return Err(template_drift(
                    "the template wrote no end-of-turn token after the answer",
                ));
            }
            let expected: Vec<_> = answer.coords().iter().map(|(_, b)| *b).collect();
            if coords_seen != expected {
                return Err(Error::runtime(format!(
                    "the coordinate tokens in the ids ({} of them) are not the answer's {} bins in order",
                    coords_seen.len(),
                    expected.len()
                ))
                .hint("the tokenizer splits or merges coordinate tokens; check the coordinate vocabulary"));
            }
        }
        let position_ids = position_ids(&ids, &grids, image_pad, merge)?;
        Ok(EncodedSample {
            input_ids: ids,
            labels,
            token_types: types,
            position_ids,
            image_grid_thw: grids,
        })
    }
}

/// A token lies inside the answer span.
fn inside(t: &Token, span: &Range<usize>) -> bool {
    (t.start as usize) >= span.start && (t.end as usize) <= span.end && t.end > t.start
}

/// The answer-relative byte ranges of the tokens inside `span`, in order.
fn answer_ranges(tokens: &[Token], span: &Range<usize>) -> Vec<Range<usize>> {
    tokens
        .iter()
        .filter(|t| inside(t, span))
        .map(|t| t.start as usize - span.start..t.end as usize - span.start)
        .collect()
}

fn template_drift(what: &str) -> Error {
    Error::runtime(format!("chat template / tokenizer drift: {what}")).hint(
        "the model directory's chat template or tokenizer does not behave like a Qwen-VL chat template; check chat_template.jinja and tokenizer.json",
    )
}

/// Type of every byte of the answer: desc spans, coordinate spans, the closing brace, the rest
/// structure.
fn answer_byte_types(answer: &Answer) -> Vec<TokenType> {
    let mut t = vec![TokenType::Struct; answer.text().len()];
    for r in answer.descs() {
        t[r.clone()].fill(TokenType::Desc);
    }
    for (r, _) in answer.coords() {
        t[r.clone()].fill(TokenType::Coord);
    }
    if let Some(last) = t.last_mut() {
        *last = TokenType::Closure;
    }
    t
}

/// A token's type from the types of its bytes: a coordinate token is `coord`; the token holding
/// the closing brace is `closure`; otherwise `desc` when at least half its bytes are desc bytes,
/// else `struct`.
fn classify(tok: &Token, bytes: &[TokenType], is_coord_id: bool) -> Result<TokenType> {
    let coord_bytes = bytes.iter().filter(|t| **t == TokenType::Coord).count();
    if is_coord_id {
        if coord_bytes != bytes.len() {
            return Err(Error::runtime(format!(
                "coordinate token id {} covers non-coordinate answer text",
                tok.id
            )));
        }
        return Ok(TokenType::Coord);
    }
    if coord_bytes > 0 {
        return Err(Error::runtime("a coordinate literal was tokenized as ordinary text").hint(
            "the tokenizer lacks the coordinate special tokens; run `coordexp model expand-vocab`",
        ));
    }
    if bytes.last() == Some(&TokenType::Closure) {
        return Ok(TokenType::Closure);
    }
    let desc = bytes.iter().filter(|t| **t == TokenType::Desc).count();
    Ok(if 2 * desc >= bytes.len() && desc > 0 { TokenType::Desc } else { TokenType::Struct })
}
