//! Prediction lines for `eval preds`.
//!
//! ```text
//! {"image": "images/0001.png", "text": "{\"objects\": [{\"desc\": \"cat\", \"bbox_2d\": [<|coord_1|>, …]}]}"}
//! {"id": 17, "objects": [{"desc": "cat", "bbox_2d": [12.5, 40, 200, 310], "score": 0.92}]}
//! ```
//!
//! A line names its ground truth by `"id"` (taking precedence) or `"image"`, and carries either
//! the model's raw `"text"` (parsed with the CoordJSON salvage parser, boxes in bins) or
//! `"objects"` with pixel boxes and optional scores. Other keys are ignored. A line that cannot
//! be read is counted as invalid (with its location); an object that cannot be used is dropped
//! and counted by reason. Nothing is skipped silently.

use coordexp_core::geometry::PixelBox;
use serde_json::{Map, Value};

use super::gt::id_text;

/// How a prediction line names its ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Id(String),
    Image(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Id(id) => write!(f, "id {id}"),
            Identity::Image(image) => write!(f, "image {image}"),
        }
    }
}

/// The payload of a prediction line.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Raw model output.
    Text(String),
    /// Already-decoded objects with pixel boxes.
    Objects(Vec<Value>),
}

/// One readable prediction line.
#[derive(Debug, Clone, PartialEq)]
pub struct PredLine {
    pub identity: Identity,
    pub payload: Payload,
    /// `width`/`height` if the line states them (checked against the ground truth).
    pub size: Option<(u64, u64)>,
    /// `object_scores` of a `text` line: one confidence per object the salvage parser keeps,
    /// in order (what `coordexp infer` writes).
    pub object_scores: Option<Vec<f64>>,
}

/// Read one line; `Err` says why it is unusable.
pub fn read_line(text: &str) -> Result<PredLine, String> {
    read_value(serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?)
}

/// Read one prediction already parsed as JSON (what `coordexp infer` and the trainer's
/// evaluation build); `Err` says why it is unusable.
pub fn read_value(value: Value) -> Result<PredLine, String> {
    let Value::Object(mut map) = value else {
        return Err("a prediction line must be a JSON object".into());
    };
    let identity = identity(&map)?;
    let payload = match (map.remove("text"), map.remove("objects")) {
        (Some(Value::String(t)), None) => Payload::Text(t),
        (None, Some(Value::Array(objects))) => Payload::Objects(objects),
        (Some(_), Some(_)) => return Err("give either `text` or `objects`, not both".into()),
        (Some(_), None) => return Err("`text` must be a string".into()),
        (None, Some(_)) => return Err("`objects` must be an array".into()),
        (None, None) => return Err("missing `text` (raw model output) or `objects`".into()),
    };
    let size =
        match (map.get("width").and_then(Value::as_u64), map.get("height").and_then(Value::as_u64))
        {
            (Some(w), Some(h)) => Some((w, h)),
            _ => None,
        };
    let object_scores = match map.get("object_scores") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_f64().filter(|x| x.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .ok_or("`object_scores` must be an array of finite numbers")?,
        ),
        Some(_) => return Err("`object_scores` must be an array of finite numbers".into()),
    };
    Ok(PredLine { identity, payload, size, object_scores })
}

fn identity(map: &Map<String, Value>) -> Result<Identity, String> {
    if let Some(v) = map.get("id") {
        return id_text(v)
            .map(Identity::Id)
            .ok_or_else(|| format!("`id` must be a string or an integer, got {v}"));
    }
    match map.get("image") {
        Some(Value::String(s)) => Ok(Identity::Image(s.clone())),
        Some(v) => Err(format!("`image` must be a string, got {v}")),
        None => Err("missing `id` or `image` (the ground-truth record this line answers)".into()),
    }
}

/// Why an entry of `objects` was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectDrop {
    /// Not an object, or no string `desc`.
    MissingDesc,
    /// `bbox_2d` missing or not 4 finite numbers.
    BadBox,
    /// `score` present but not a finite number.
    BadScore,
}

impl ObjectDrop {
    pub fn code(self) -> &'static str {
        match self {
            ObjectDrop::MissingDesc => "object_missing_desc",
            ObjectDrop::BadBox => "object_bad_bbox",
            ObjectDrop::BadScore => "object_bad_score",
        }
    }
}

/// A usable predicted object from the `objects` form.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelObject {
    pub desc: String,
    pub bbox: PixelBox,
    pub score: Option<f64>,
}

/// Decode one entry of `objects`.
pub fn read_object(v: &Value) -> Result<PixelObject, ObjectDrop> {
    let Value::Object(o) = v else { return Err(ObjectDrop::MissingDesc) };
    let desc = match o.get("desc") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ObjectDrop::MissingDesc),
    };
    let coords: Vec<f64> = match o.get("bbox_2d") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_f64).collect(),
        _ => return Err(ObjectDrop::BadBox),
    };
    let [x1, y1, x2, y2] = coords[..] else { return Err(ObjectDrop::BadBox) };
    if !coords.iter().all(|c| c.is_finite()) {
        return Err(ObjectDrop::BadBox);
    }
    let score = match o.get("score") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() => Some(s),
            _ => return Err(ObjectDrop::BadScore),
        },
    };
    Ok(PixelObject { desc, bbox: PixelBox::new(x1, y1, x2, y2), score })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_scores_are_optional_finite_numbers() {
        let l = read_line(r#"{"image": "a.png", "text": ""}"#).unwrap();
        assert_eq!(l.object_scores, None);
        let l = read_line(r#"{"image": "a.png", "text": "", "object_scores": [0.5, 1]}"#).unwrap();
        assert_eq!(l.object_scores, Some(vec![0.5, 1.0]));
        assert!(read_line(r#"{"image": "a.png", "text": "", "object_scores": ["x"]}"#).is_err());
        assert!(read_line(r#"{"image": "a.png", "text": "", "object_scores": 3}"#).is_err());
    }

    #[test]
    fn id_takes_precedence_over_image() {
        let l = read_line(r#"{"id": 7, "image": "a.png", "text": ""}"#).unwrap();
        assert_eq!(l.identity, Identity::Id("7".into()));
        let l = read_line(r#"{"image": "a.png", "objects": []}"#).unwrap();
        assert_eq!(l.identity, Identity::Image("a.png".into()));
        assert_eq!(l.payload, Payload::Objects(vec![]));
    }

    #[test]
    fn unusable_lines_say_why() {
        for (line, why) in [
            ("{", "invalid JSON"),
            ("[1]", "JSON object"),
            (r#"{"text": "x"}"#, "missing `id` or `image`"),
            (r#"{"image": "a", "text": "x", "objects": []}"#, "not both"),
            (r#"{"image": "a"}"#, "missing `text`"),
            (r#"{"image": "a", "objects": {}}"#, "must be an array"),
            (r#"{"id": 1.5, "text": ""}"#, "`id` must be"),
        ] {
            let e = read_line(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn objects_are_decoded_or_dropped_with_a_reason() {
        let ok = read_object(&json!({"desc": " cat ", "bbox_2d": [1, 2.5, 3, 4], "score": 0.5}))
            .unwrap();
        assert_eq!(
            (ok.desc.as_str(), ok.bbox.xyxy(), ok.score),
            ("cat", [1.0, 2.5, 3.0, 4.0], Some(0.5))
        );
        assert_eq!(read_object(&json!({"bbox_2d": [1, 2, 3, 4]})), Err(ObjectDrop::MissingDesc));
        assert_eq!(
            read_object(&json!({"desc": "a", "bbox_2d": [1, 2, 3]})),
            Err(ObjectDrop::BadBox)
        );
        assert_eq!(
            read_object(&json!({"desc": "a", "bbox_2d": [1, 2, "3", 4]})),
            Err(ObjectDrop::BadBox)
        );
        assert_eq!(
            read_object(&json!({"desc": "a", "bbox_2d": [1, 2, 3, 4], "score": "high"})),
            Err(ObjectDrop::BadScore)
        );
    }
}
