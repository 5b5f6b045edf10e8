//! The system and user prompts: built-in wording per variant, or the user's own text.
//!
//! The prompts tell the model the answer format (one CoordJSON object), the field order of a
//! record, how objects are ordered and, for `coco80`, the closed class list. The wording is our
//! own. The config may replace either prompt, inline (`prompt.system` / `prompt.user`) or from a
//! file (`prompt.system_file` / `prompt.user_file`); the exact resolved text goes into the run
//! manifest, so what a model was trained with is never in doubt.

use crate::config::schema::{FieldOrder, ObjectOrdering, Prompt, PromptVariant};
use crate::norm1000::Bin;
use crate::{Error, Result};
use std::path::Path;

/// The 80 COCO class names in category-id order (the `coco80` closed vocabulary).
pub const COCO80_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Where a prompt's text came from (recorded next to the text in the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSource {
    /// The built-in wording for the configured variant, field order and ordering.
    BuiltIn,
    /// `prompt.system` / `prompt.user` in the config.
    Inline,
    /// Read from this file (trailing line breaks removed).
    File(std::path::PathBuf),
}

/// The resolved prompt pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    pub system: String,
    pub system_source: PromptSource,
    pub user: String,
    pub user_source: PromptSource,
}

impl Prompts {
    /// Resolve the config's `prompt` section: built-in text unless overridden inline or by file.
    pub fn resolve(cfg: &Prompt) -> Result<Prompts> {
        let (system, system_source) =
            pick("prompt.system", cfg.system.as_deref(), cfg.system_file.as_deref(), || {
                builtin_system(cfg.variant, cfg.field_order, cfg.object_ordering)
            })?;
        let (user, user_source) =
            pick("prompt.user", cfg.user.as_deref(), cfg.user_file.as_deref(), || {
                builtin_user(cfg.variant, cfg.field_order, cfg.object_ordering)
            })?;
        Ok(Prompts { system, system_source, user, user_source })
    }
}

fn pick(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    builtin: impl FnOnce() -> String,
) -> Result<(String, PromptSource)> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::input(format!("both `{key}` and `{key}_file` are set"))
            .at(key)
            .hint(format!("keep one of `{key}` (inline text) or `{key}_file` (a text file)"))),
        (Some(text), None) => {
            if text.trim().is_empty() {
                return Err(Error::input(format!("`{key}` is empty"))
                    .at(key)
                    .hint("remove the key to use the built-in prompt"));
            }
            Ok((text.to_owned(), PromptSource::Inline))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io("read", path, &e).at(format!("{key}_file")))?;
            let text = text.trim_end_matches(['\n', '\r']).to_owned();
            if text.trim().is_empty() {
                return Err(Error::input(format!("prompt file {} is empty", path.display()))
                    .at(format!("{key}_file")));
            }
            Ok((text, PromptSource::File(path.to_path_buf())))
        }
        (None, None) => Ok((builtin(), PromptSource::BuiltIn)),
    }
}

fn coord(k: u16) -> String {
    Bin::new(k).map(Bin::token).unwrap_or_default()
}

/// One example record in the configured field order.
fn example_record(field_order: FieldOrder) -> String {
    let bbox = format!("[{}, {}, {}, {}]", coord(110), coord(310), coord(410), coord(705));
    match field_order {
        FieldOrder::DescFirst => format!(r#"{{"desc": "black cat", "bbox_2d": {bbox}}}"#),
        FieldOrder::GeometryFirst => format!(r#"{{"bbox_2d": {bbox}, "desc": "black cat"}}"#),
    }
}

/// The built-in system prompt.
pub fn builtin_system(
    variant: PromptVariant,
    field_order: FieldOrder,
    ordering: ObjectOrdering,
) -> String {
    let fields = match field_order {
        FieldOrder::DescFirst => {
            "\"desc\" (a short description of the object) first, then exactly one geometry key, \"bbox_2d\" or \"poly\""
        }
        FieldOrder::GeometryFirst => {
            "exactly one geometry key, \"bbox_2d\" or \"poly\", first, then \"desc\" (a short description of the object)"
        }
    };
    let order = match ordering {
        ObjectOrdering::Sorted => {
            "List objects from top to bottom, and left to right among objects at the same height, using the top-left corner of a box or the top-most (then left-most) vertex of a polygon."
        }
        ObjectOrdering::Random => "Objects may be listed in any order.",
    };
    let mut s = format!(
        "You find objects in images and report them as one CoordJSON object, with no other text.\n\
         Answer format: {{\"objects\": [record, ...]}} on a single line. Each record has two keys: {fields}.\n\
         - bbox_2d is [x1, y1, x2, y2]: the top-left and bottom-right corners, with x1 <= x2 and y1 <= y2.\n\
         - poly is [x1, y1, x2, y2, ...]: at least three vertices, walked along the outline.\n\
         Each coordinate is a bare token <|coord_N|>, N an integer from 0 (left or top edge) to 999 (right or bottom edge); never put quotes around it.\n\
         Separate items with \", \" and put \": \" after each key, for example: {example}\n\
         {order}\n\
         When no object is visible, answer {{\"objects\": []}}.",
        example = example_record(field_order),
    );
    if variant == PromptVariant::Coco80 {
        s.push_str("\nEach desc must be exactly one of these class names: ");
        s.push_str(&COCO80_CLASSES.join(", "));
        s.push('.');
    }
    s
}

/// The built-in user prompt.
pub fn builtin_user(
    variant: PromptVariant,
    field_order: FieldOrder,
    ordering: ObjectOrdering,
) -> String {
    let order = match ordering {
        ObjectOrdering::Sorted => ", ordered from top to bottom, then left to right",
        ObjectOrdering::Random => "",
    };
    let mut s = format!(
        "Detect every object in this image and list them as one CoordJSON object{order}. Write each record like {}.",
        example_record(field_order)
    );
    if variant == PromptVariant::Coco80 {
        s.push_str(" Use only COCO class names for desc.");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prompts_follow_the_field_order() {
        let d = builtin_user(PromptVariant::Default, FieldOrder::DescFirst, ObjectOrdering::Sorted);
        assert!(d.contains(r#"{"desc": "black cat", "bbox_2d": [<|coord_110|>, <|coord_310|>, <|coord_410|>, <|coord_705|>]}"#), "{d}");
        let g = builtin_system(
            PromptVariant::Default,
            FieldOrder::GeometryFirst,
            ObjectOrdering::Random,
        );
        assert!(g.contains(r#"{"bbox_2d": [<|coord_110|>, <|coord_310|>, <|coord_410|>, <|coord_705|>], "desc": "black cat"}"#), "{g}");
        assert!(g.contains("any order"));
    }

    #[test]
    fn coco80_variant_lists_all_classes_in_the_system_prompt() {
        let s =
            builtin_system(PromptVariant::Coco80, FieldOrder::DescFirst, ObjectOrdering::Sorted);
        assert!(s.ends_with("hair drier, toothbrush."));
        assert!(COCO80_CLASSES.iter().all(|c| s.contains(c)));
        let unique: std::collections::BTreeSet<_> = COCO80_CLASSES.iter().collect();
        assert_eq!(unique.len(), 80);
    }

    #[test]
    fn overrides_come_inline_or_from_a_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("user.txt");
        std::fs::write(&file, "Find the cats.\n\n").unwrap();
        let cfg = Prompt {
            system: Some("Be brief.".into()),
            user_file: Some(file.clone()),
            ..Prompt::default()
        };
        let p = Prompts::resolve(&cfg).unwrap();
        assert_eq!(p.system, "Be brief.");
        assert_eq!(p.system_source, PromptSource::Inline);
        assert_eq!(p.user, "Find the cats.");
        assert_eq!(p.user_source, PromptSource::File(file.clone()));

        let both = Prompt { user: Some("x".into()), user_file: Some(file), ..Prompt::default() };
        let err = Prompts::resolve(&both).unwrap_err();
        assert_eq!(err.location(), Some("prompt.user"));
    }

    #[test]
    fn default_config_uses_builtin_text() {
        let p = Prompts::resolve(&Prompt::default()).unwrap();
        assert_eq!(p.system_source, PromptSource::BuiltIn);
        assert!(p.system.contains("CoordJSON"));
        assert!(!p.system.ends_with('\n'));
    }
}
