//! JSON ⇄ [`Record`]: structural checks of one line (with every problem collected) and the
//! canonical writer.
//!
//! JSON itself has no NaN or infinity, but Python's `json.dumps` writes `NaN`/`Infinity` and
//! huge exponents overflow `f64`. Rather than reporting such a line as merely "malformed", a line
//! that fails to parse is re-read once with every non-finite literal replaced by a marker
//! string, so the problem is reported at its exact field (`objects[1].bbox_2d[2]: coordinate
//! NaN is not finite`).

use super::check;
use super::{
    BBOX_KEY, Desc, DescError, Geometry, Object, Objects, POLY_KEY, Polygon, Problem, Reason,
    Record,
};
use crate::geometry::ImageSize;
use crate::norm1000::{Bin, TokenError};
use serde_json::{Map, Value};

/// Marker for a non-finite literal (see the module docs); starts with NUL, which no valid
/// string in a record may contain.
const NON_FINITE_MARK: &str = "\u{0}non-finite:";

/// Parse and check one line.
pub(super) fn parse_line(line: &str) -> Result<Record, Vec<Problem>> {
    let value = match serde_json::from_str::<Value>(line) {
        Ok(v) => v,
        Err(e) => {
            match mark_non_finite(line).and_then(|l| serde_json::from_str::<Value>(&l).ok()) {
                Some(v) => v,
                None => return Err(vec![malformed(&e)]),
            }
        }
    };
    let Value::Object(map) = value else {
        return Err(vec![Problem::new(
            "",
            Reason::NotAnObject,
            format!("expected a JSON object, got {}", describe(&value)),
        )]);
    };
    let mut problems = Vec::new();
    let ([images, width, height, objects], extra) =
        split(map, ["images", "width", "height", "objects"]);
    let images = take_images(images, &mut problems);
    let width = take_size(width, "width", &mut problems);
    let height = take_size(height, "height", &mut problems);
    let size = width.zip(height).and_then(|(w, h)| ImageSize::new(w, h));
    let objects = match objects {
        None => {
            problems.push(Problem::new(
                "objects",
                Reason::MissingField,
                "missing required key `objects`",
            ));
            None
        }
        Some(Value::Array(items)) => Some(take_objects(items, size, &mut problems)),
        Some(other) => {
            problems.push(Problem::new(
                "objects",
                Reason::ObjectsNotList,
                format!("expected a list of objects, got {}", describe(&other)),
            ));
            None
        }
    };
    match (images, size, objects) {
        // Every check of `Record::new` has run above (the contract keys were removed from
        // `map`, so the extras cannot shadow them).
        (Some(images), Some(size), Some(objects)) if problems.is_empty() => {
            Ok(Record { images, size, objects, extra })
        }
        _ => Err(problems),
    }
}

fn malformed(e: &serde_json::Error) -> Problem {
    let text = e.to_string();
    let what = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]);
    Problem::new(
        "",
        Reason::MalformedJson,
        format!("malformed JSON at column {}: {what}", e.column()),
    )
}

/// Take the values of `keys` out of `map`; the other entries stay in their original order.
fn split<const N: usize>(
    map: Map<String, Value>,
    keys: [&str; N],
) -> ([Option<Value>; N], Map<String, Value>) {
    let mut found: [Option<Value>; N] = std::array::from_fn(|_| None);
    let mut rest = Map::new();
    for (k, v) in map {
        match keys.iter().position(|c| *c == k) {
            Some(i) => found[i] = Some(v),
            None => {
                rest.insert(k, v);
            }
        }
    }
    (found, rest)
}

fn take_images(value: Option<Value>, out: &mut Vec<Problem>) -> Option<Vec<String>> {
    let value = match value {
        None => {
            out.push(Problem::new("images", Reason::MissingField, "missing required key `images`"));
            return None;
        }
        Some(v) => v,
    };
    let Value::Array(items) = value else {
        out.push(Problem::new(
            "images",
            Reason::InvalidImages,
            format!("expected a list of image paths, got {}", describe(&value)),
        ));
        return None;
    };
    let before = out.len();
    let paths: Vec<String> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Value::String(s) => Some(s),
            other => {
                out.push(Problem::new(
                    format!("images[{i}]"),
                    Reason::InvalidImages,
                    format!("expected a path string, got {}", describe(&other)),
                ));
                None
            }
        })
        .collect();
    check::images(&paths, out);
    (out.len() == before).then_some(paths)
}

fn take_size(value: Option<Value>, key: &str, out: &mut Vec<Problem>) -> Option<u32> {
    let Some(v) = value else {
        out.push(Problem::new(key, Reason::MissingField, format!("missing required key `{key}`")));
        return None;
    };
    let ok = v.as_u64().filter(|&n| n > 0).and_then(|n| u32::try_from(n).ok());
    if ok.is_none() {
        out.push(Problem::new(
            key,
            Reason::InvalidSize,
            format!("expected a positive integer, got {}", describe(&v)),
        ));
    }
    ok
}

/// The record's coordinate domain, fixed by the first geometry that parses cleanly.
#[derive(Clone, Copy, PartialEq)]
enum Domain {
    Pixels,
    Bins,
}

fn take_objects(items: Vec<Value>, size: Option<ImageSize>, out: &mut Vec<Problem>) -> Objects {
    let mut pixels = Vec::new();
    let mut bins = Vec::new();
    let mut domain: Option<(Domain, usize)> = None;
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(map) = item else {
            out.push(Problem::new(
                format!("objects[{i}]"),
                Reason::ObjectNotMap,
                format!("expected an object, got {}", describe(&item)),
            ));
            continue;
        };
        match take_object(i, map, &mut domain, out) {
            Some(Parsed::Pixels(o)) => {
                if let Some(size) = size {
                    check::object(i, &o, size, out);
                }
                pixels.push(o);
            }
            Some(Parsed::Bins(o)) => {
                if let Some(size) = size {
                    check::object(i, &o, size, out);
                }
                bins.push(o);
            }
            None => {}
        }
    }
    // With no problems, at most one of the lists is non-empty (mixing is reported above).
    if pixels.is_empty() { Objects::Bins(bins) } else { Objects::Pixels(pixels) }
}

enum Parsed {
    Pixels(Object<f64>),
    Bins(Object<Bin>),
}

/// One coordinate value, typed.
enum Coord {
    Pixel(f64),
    Bin(Bin),
}

fn take_object(
    i: usize,
    map: Map<String, Value>,
    domain: &mut Option<(Domain, usize)>,
    out: &mut Vec<Problem>,
) -> Option<Parsed> {
    let before = out.len();
    let base = format!("objects[{i}]");
    let ([desc, bbox, poly, legacy @ ..], extra) =
        split(map, ["desc", BBOX_KEY, POLY_KEY, "bbox", "polygon", "line", "line_points"]);
    let mut has_legacy = false;
    for (value, key) in legacy.iter().zip(["bbox", "polygon", "line", "line_points"]) {
        if value.is_some() {
            has_legacy = true;
            out.push(legacy_problem(&base, key));
        }
    }
    let desc = match desc {
        None => {
            out.push(Problem::new(format!("{base}.desc"), Reason::MissingDesc, "missing `desc`"));
            None
        }
        Some(Value::String(s)) if !s.starts_with(NON_FINITE_MARK) => match Desc::new(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                let reason = match e {
                    DescError::Empty => Reason::EmptyDesc,
                    DescError::ControlChar(_) => Reason::DescControlChar,
                    DescError::Pattern(_) | DescError::SpecialTokenMarker => Reason::DescPattern,
                };
                out.push(Problem::new(
                    format!("{base}.desc"),
                    reason,
                    format!("{e} (desc = {s:?})"),
                ));
                None
            }
        },
        Some(other) => {
            out.push(Problem::new(
                format!("{base}.desc"),
                Reason::MissingDesc,
                format!("expected a string, got {}", describe(&other)),
            ));
            None
        }
    };
    let geometry = match (bbox, poly) {
        (Some(_), Some(_)) => {
            out.push(Problem::new(
                &base,
                Reason::TwoGeometries,
                "has both `bbox_2d` and `poly`; an object has exactly one geometry",
            ));
            None
        }
        (None, None) => {
            if !has_legacy {
                out.push(Problem::new(
                    &base,
                    Reason::NoGeometry,
                    "has neither `bbox_2d` nor `poly`",
                ));
            }
            None
        }
        (Some(v), None) => take_geometry(&base, BBOX_KEY, v, domain, i, out),
        (None, Some(v)) => take_geometry(&base, POLY_KEY, v, domain, i, out),
    };
    if out.len() != before {
        return None;
    }
    match (desc?, geometry?) {
        (desc, Typed::Pixels(geometry)) => Some(Parsed::Pixels(Object { desc, geometry, extra })),
        (desc, Typed::Bins(geometry)) => Some(Parsed::Bins(Object { desc, geometry, extra })),
    }
}

fn legacy_problem(base: &str, key: &str) -> Problem {
    let p = Problem::new(
        format!("{base}.{key}"),
        Reason::LegacyKey,
        format!("`{key}` is no longer part of the record contract"),
    );
    match key {
        "bbox" => p.with_hint(
            "rename `bbox` to `bbox_2d` with corners [x1, y1, x2, y2]; COCO's [x, y, w, h] needs \
             x2 = x + w, y2 = y + h (`coordexp data convert coco` does this)",
        ),
        "polygon" => p.with_hint(
            "rename `polygon` to `poly`, a flat list [x1, y1, x2, y2, ...] of at least 3 points",
        ),
        _ => p.with_hint(
            "line geometry was removed; describe the object with `bbox_2d` (its extent) or `poly`",
        ),
    }
}

enum Typed {
    Pixels(Geometry<f64>),
    Bins(Geometry<Bin>),
}

fn take_geometry(
    base: &str,
    key: &'static str,
    value: Value,
    domain: &mut Option<(Domain, usize)>,
    index: usize,
    out: &mut Vec<Problem>,
) -> Option<Typed> {
    let path = format!("{base}.{key}");
    let Value::Array(items) = value else {
        out.push(Problem::new(
            &path,
            Reason::GeometryNotList,
            format!("expected a list of coordinates, got {}", describe(&value)),
        ));
        return None;
    };
    let before = out.len();
    let n = items.len();
    let coords: Vec<Coord> = items
        .iter()
        .enumerate()
        .filter_map(|(j, v)| match coordinate(v) {
            Ok(c) => Some(c),
            Err((reason, message)) => {
                out.push(Problem::new(format!("{path}[{j}]"), reason, message));
                None
            }
        })
        .collect();
    let numbers = coords.iter().filter(|c| matches!(c, Coord::Pixel(_))).count();
    let tokens = coords.len() - numbers;
    let noun = if tokens > numbers { "coordinate tokens" } else { "numbers" };
    if key == BBOX_KEY && n != 4 {
        out.push(Problem::new(&path, Reason::WrongArity, format!("expected 4 {noun}, got {n}")));
    } else if key == POLY_KEY && n % 2 == 1 {
        out.push(Problem::new(
            &path,
            Reason::OddPoly,
            format!("expected an even number of {noun} (x, y pairs), got {n}"),
        ));
    } else if key == POLY_KEY && n < 6 {
        out.push(Problem::new(
            &path,
            Reason::PolyTooShort,
            format!("expected at least 3 points (6 {noun}), got {} points", n / 2),
        ));
    }
    let here = if numbers > 0 && tokens > 0 {
        out.push(Problem::new(
            &path,
            Reason::MixedCoordinates,
            format!("mixes {numbers} pixel numbers with {tokens} coordinate tokens"),
        ));
        None
    } else if numbers > 0 {
        Some(Domain::Pixels)
    } else if tokens > 0 {
        Some(Domain::Bins)
    } else {
        None
    };
    if let Some(d) = here {
        match *domain {
            None => *domain = Some((d, index)),
            Some((first, at)) if first != d => {
                let (this, that) = match d {
                    Domain::Pixels => ("pixel numbers", "coordinate tokens"),
                    Domain::Bins => ("coordinate tokens", "pixel numbers"),
                };
                out.push(Problem::new(
                    &path,
                    Reason::MixedCoordinates,
                    format!("uses {this} but objects[{at}] uses {that}; a record uses one kind"),
                ));
            }
            Some(_) => {}
        }
    }
    if out.len() != before {
        return None;
    }
    Some(match here {
        Some(Domain::Bins) => Typed::Bins(build(
            key,
            coords.iter().filter_map(|c| match c {
                Coord::Bin(b) => Some(*b),
                Coord::Pixel(_) => None,
            }),
        )?),
        _ => Typed::Pixels(build(
            key,
            coords.iter().filter_map(|c| match c {
                Coord::Pixel(v) => Some(*v),
                Coord::Bin(_) => None,
            }),
        )?),
    })
}

/// Assemble a checked flat coordinate list into its geometry.
fn build<C: Copy>(key: &str, values: impl Iterator<Item = C>) -> Option<Geometry<C>> {
    let flat: Vec<C> = values.collect();
    if key == BBOX_KEY {
        <[C; 4]>::try_from(flat).ok().map(Geometry::BBox)
    } else {
        let points = flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        Polygon::new(points).map(Geometry::Poly)
    }
}

fn coordinate(v: &Value) -> Result<Coord, (Reason, String)> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Coord::Pixel(f)),
            _ => Err((Reason::NonFinite, format!("coordinate {n} is not finite"))),
        },
        Value::String(s) => {
            if let Some(lit) = s.strip_prefix(NON_FINITE_MARK) {
                return Err((Reason::NonFinite, format!("coordinate {lit} is not finite")));
            }
            Bin::parse_token(s).map(Coord::Bin).map_err(|e| match e {
                TokenError::Wildcard => (Reason::WildcardToken, format!("{s:?}: {e}")),
                TokenError::OutOfRange(_) => (Reason::TokenOutOfRange, format!("{s:?}: {e}")),
                TokenError::Malformed => (Reason::BadToken, format!("{s:?} is {e}")),
            })
        }
        other => Err((
            Reason::BadCoordinate,
            format!("expected a number or a coordinate token, got {}", describe(other)),
        )),
    }
}

/// A short description of a JSON value for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => match s.strip_prefix(NON_FINITE_MARK) {
            Some(lit) => lit.to_owned(),
            None if s.chars().count() > 40 => {
                format!("a string {:?}…", s.chars().take(40).collect::<String>())
            }
            None => format!("a string {s:?}"),
        },
        Value::Array(a) => format!("a list of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// Rewrite non-finite literals outside strings (`NaN`, `Infinity`, `-Infinity`, numbers that
/// overflow `f64`) into marker strings; `None` when there are none.
fn mark_non_finite(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 32);
    let mut changed = false;
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c == b'-' || c == b'+' || c == b'N' || c == b'I' || c.is_ascii_digit() => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.'))
                {
                    i += 1;
                }
                let lit = &line[start..i];
                let non_finite = matches!(lit, "NaN" | "Infinity" | "-Infinity" | "+Infinity")
                    || lit.parse::<f64>().is_ok_and(|f| !f.is_finite());
                if non_finite {
                    out.push_str(&line[copied..start]);
                    out.push_str(
                        &serde_json::Value::String(format!("{NON_FINITE_MARK}{lit}")).to_string(),
                    );
                    copied = i;
                    changed = true;
                }
            }
            _ => i += 1,
        }
    }
    if !changed {
        return None;
    }
    out.push_str(line.get(copied..).unwrap_or(""));
    Some(out)
}

/// The canonical compact line for a record.
pub(super) fn write_line(r: &Record) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("{\"images\":");
    push_json(&mut s, &r.images);
    s.push_str(&format!(
        ",\"width\":{},\"height\":{},\"objects\":[",
        r.size.width(),
        r.size.height()
    ));
    match &r.objects {
        Objects::Pixels(v) => write_objects(&mut s, v, |s, x| push_number(s, *x)),
        Objects::Bins(v) => write_objects(&mut s, v, |s, b| {
            s.push('"');
            b.write_token(s);
            s.push('"');
        }),
    }
    s.push(']');
    write_extra(&mut s, &r.extra);
    s.push('}');
    s
}

fn write_objects<C: Copy>(s: &mut String, objects: &[Object<C>], coord: impl Fn(&mut String, &C)) {
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"desc\":");
        push_json(s, o.desc.as_str());
        s.push_str(",\"");
        s.push_str(o.geometry.key());
        s.push_str("\":[");
        for (j, c) in o.geometry.coords().iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            coord(s, c);
        }
        s.push(']');
        write_extra(s, &o.extra);
        s.push('}');
    }
}

/// Append `,"key":value` for each extra key, in the map's order (file order: the workspace
/// enables serde_json's `preserve_order`).
fn write_extra(s: &mut String, extra: &Map<String, Value>) {
    for (k, v) in extra {
        s.push(',');
        push_json(s, k);
        s.push(':');
        push_json(s, v);
    }
}

fn push_json<T: serde::Serialize + ?Sized>(s: &mut String, v: &T) {
    // Serializing strings, string lists and `Value`s cannot fail.
    if let Ok(text) = serde_json::to_string(v) {
        s.push_str(&text);
    }
}

/// Integral values print as integers (`120`, not `120.0`); others in shortest round-trip form.
fn push_number(s: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.push_str(&(v as i64).to_string());
    } else {
        push_json(s, &v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_literals_outside_strings_are_marked() {
        let line = r#"{"a": NaN, "b": "NaN", "c": [1e999, -Infinity, 2]}"#;
        let m = mark_non_finite(line).unwrap();
        let v: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["b"], "NaN");
        assert_eq!(v["a"].as_str().unwrap(), format!("{NON_FINITE_MARK}NaN"));
        assert_eq!(v["c"][0].as_str().unwrap(), format!("{NON_FINITE_MARK}1e999"));
        assert_eq!(v["c"][2], 2);
        assert!(mark_non_finite(r#"{"a": 1}"#).is_none());
    }

    #[test]
    fn numbers_are_written_as_integers_when_integral() {
        let mut s = String::new();
        push_number(&mut s, 120.0);
        s.push(' ');
        push_number(&mut s, 12.5);
        assert_eq!(s, "120 12.5");
    }
}
