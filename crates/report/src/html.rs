//! HTML text helpers: escaping and number formatting.
//!
//! Why one place: every string in the page that comes from a run directory (descriptions,
//! metric names, paths, config text, error messages) is user-controlled, and a description like
//! `<script>` must arrive as text, never as markup. Everything the page builders interpolate goes
//! through [`esc`]; numbers go through [`num`] so tables, hover titles and axes agree.

/// Escape text for HTML element content *and* quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not valid in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A metric value for tables and hover titles: integers as integers, other numbers with about
/// five significant digits, tiny or huge magnitudes in scientific notation.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+inf".into()
        } else {
            "-inf".into()
        };
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if !(1e-3..1e7).contains(&a) {
        return format!("{v:.3e}");
    }
    let magnitude = a.log10().floor() as i32;
    let decimals = (4 - magnitude).clamp(0, 6) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

/// A fixed-precision number (`digits` decimals), `—` when absent or not finite.
pub fn fixed(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "—".into(),
    }
}

/// `1.2300` → `1.23`, `2.000` → `2`.
fn trim_zeros(s: String) -> String {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A byte count for humans.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Seconds as `1 h 02 min`, `3 min 05 s` or `12.3 s`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".into();
    }
    let s = secs.round() as u64;
    match s {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{secs:.1} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_descriptions_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'co'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
        assert_eq!(esc("plain text é"), "plain text é");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(-12.0), "-12");
        assert_eq!(num(0.123456), "0.12346");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(1234.5678), "1234.6");
        assert_eq!(num(0.0002), "2.000e-4");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(fixed(Some(0.5), 3), "0.500");
        assert_eq!(fixed(None, 3), "—");
        assert_eq!(fixed(Some(f64::INFINITY), 3), "—");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
    }
}
