//! Canonical CoordJSON rendering (the training target text).

use super::FieldOrder;
use crate::norm1000::Bin;
use crate::record::{Geometry, Object};

/// Render objects as one CoordJSON line, in the given order; `{"objects": []}` when empty.
pub fn render(objects: &[Object<Bin>], order: FieldOrder) -> String {
    let mut out = String::with_capacity(16 + objects.len() * 96);
    render_into(&mut out, objects, order);
    out
}

/// [`render`], appending to `out`.
pub fn render_into(out: &mut String, objects: &[Object<Bin>], order: FieldOrder) {
    out.push_str("{\"objects\": [");
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        render_object_into(out, o.desc.as_str(), &o.geometry, order);
    }
    out.push_str("]}");
}

/// Append one record `{"desc": …, "bbox_2d": [...]}` (or geometry first). Exposed for callers
/// that splice records into an existing prefix, e.g. missed objects appended after a rollout.
pub fn render_object_into(
    out: &mut String,
    desc: &str,
    geometry: &Geometry<Bin>,
    order: FieldOrder,
) {
    out.push('{');
    match order {
        FieldOrder::DescFirst => {
            push_desc(out, desc);
            out.push_str(", ");
            push_geometry(out, geometry);
        }
        FieldOrder::GeometryFirst => {
            push_geometry(out, geometry);
            out.push_str(", ");
            push_desc(out, desc);
        }
    }
    out.push('}');
}

fn push_desc(out: &mut String, desc: &str) {
    out.push_str("\"desc\": ");
    write_json_string(out, desc);
}

fn push_geometry(out: &mut String, geometry: &Geometry<Bin>) {
    out.push('"');
    out.push_str(geometry.key());
    out.push_str("\": [");
    let mut first = true;
    let mut push = |b: Bin| {
        if !first {
            out.push_str(", ");
        }
        first = false;
        b.write_token(out);
    };
    match geometry {
        Geometry::BBox(c) => c.iter().copied().for_each(&mut push),
        Geometry::Poly(p) => p.points().iter().flatten().copied().for_each(&mut push),
    }
    out.push(']');
}

/// Append `s` as a JSON string literal the way Python's `json.dumps(ensure_ascii=False)` writes
/// it: `"` and `\` escaped, `\b \f \n \r \t` short escapes, other control characters below
/// U+0020 as `\u00xx`, everything else (non-ASCII included, `/` included) raw.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut clean_from = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&s[clean_from..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
        clean_from = i + c.len_utf8();
    }
    out.push_str(&s[clean_from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Desc, Polygon};

    fn k(v: u16) -> Bin {
        Bin::new(v).unwrap()
    }

    fn reference_objects() -> Vec<Object<Bin>> {
        let person = Object::new(
            Desc::new("person").unwrap(),
            Geometry::BBox([k(5), k(120), k(300), k(700)]),
        );
        let poly =
            Polygon::new(vec![[k(400), k(150)], [k(380), k(600)], [k(900), k(610)]]).unwrap();
        let table = Object::new(Desc::new("dining table").unwrap(), Geometry::Poly(poly));
        vec![person, table]
    }

    #[test]
    fn desc_first_matches_the_reference_text_byte_for_byte() {
        assert_eq!(
            render(&reference_objects(), FieldOrder::DescFirst),
            "{\"objects\": [{\"desc\": \"person\", \"bbox_2d\": [<|coord_5|>, <|coord_120|>, <|coord_300|>, <|coord_700|>]}, {\"desc\": \"dining table\", \"poly\": [<|coord_400|>, <|coord_150|>, <|coord_380|>, <|coord_600|>, <|coord_900|>, <|coord_610|>]}]}"
        );
    }

    #[test]
    fn geometry_first_matches_the_reference_text_byte_for_byte() {
        assert_eq!(
            render(&reference_objects(), FieldOrder::GeometryFirst),
            "{\"objects\": [{\"bbox_2d\": [<|coord_5|>, <|coord_120|>, <|coord_300|>, <|coord_700|>], \"desc\": \"person\"}, {\"poly\": [<|coord_400|>, <|coord_150|>, <|coord_380|>, <|coord_600|>, <|coord_900|>, <|coord_610|>], \"desc\": \"dining table\"}]}"
        );
    }

    #[test]
    fn no_objects_render_as_an_empty_list() {
        assert_eq!(render(&[], FieldOrder::DescFirst), "{\"objects\": []}");
    }

    #[test]
    fn strings_are_escaped_like_python_json_dumps_without_ascii_escaping() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c/d é 猫 \u{1}\u{7f}\n");
        assert_eq!(s, "\"a\\\"b\\\\c/d é 猫 \\u0001\u{7f}\\n\"");
    }
}
