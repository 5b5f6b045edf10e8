//! coordexp-eval: evaluation of detection-as-text models.
//!
//! COCO AP/AR comes from the `hotcoco` engine, which reproduces pycocotools bit for bit; this
//! crate writes no second COCOeval. It owns what a model that *writes* its detections needs
//! around the engine:
//!
//! - [`coco`]: run the engine on COCO files or in-memory datasets; the 12 statistics under
//!   stable names, per-category AP, and the 12-line summary in pycocotools' exact layout
//!   (`coordexp eval coco`).
//! - [`mapping`]: free-text description → category ([`mapping::DescMapper`]; the lexical mapper
//!   tries exact, normalised/plural and synonym matches; unmapped descriptions are counted and
//!   listed, never silently merged).
//! - [`f1`]: F1 at IoU thresholds — per image, an optimal one-to-one assignment (linear sum
//!   assignment from `coordexp_core::assign`) maximising the number of same-category pairs with
//!   IoU ≥ t; micro-averaged precision, recall and F1 plus a category-agnostic variant. The
//!   exact definition, including the empty-image conventions, is in the module docs.
//! - [`preds`]: `coordexp eval preds` — raw model output (CoordJSON text, parsed with the salvage
//!   parser) or decoded objects, joined to JSONL ground truth **by identity** (`id`, else the
//!   image path; never by position), scored with COCO AP/AR and F1, with every parse, join and
//!   mapping counter in the report.

pub mod coco;
pub mod f1;
pub mod mapping;
pub mod preds;
