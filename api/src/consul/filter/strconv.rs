//! The few pieces of Go's `strconv` that bexpr's behaviour and messages rest on: `Quote` (every `%q`
//! in its errors), `Unquote` (string literals), `ParseInt(s, 0, 64)` and `ParseBool` (value coercion).
//! Each follows Go's source closely so the accepted inputs and the error texts are Go's.

/// Go's `strconv.Quote`: what `%q` prints.
///
/// Go decides "printable" with Unicode tables (`unicode.IsPrint`); this approximation escapes
/// controls, white space other than U+0020 and the common format characters, and prints the rest.
/// It differs only for unassigned or exotic code points.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters (category Cf) and private use, which Go does not print either.
    !matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..)
}

/// Go's `strconv.Unquote` for the two forms bexpr's grammar produces: `` `raw` `` and `"quoted"`.
/// The error is Go's `ErrSyntax` text.
///
/// Go strings may hold any bytes, so `"\xff"` is a one-byte string there; a Rust `String` cannot
/// hold it, and such bytes become U+FFFD. No JSON string the filter is compared with can hold them
/// either, so the only effect is on a value that could never match.
pub(super) fn unquote(text: &str) -> Result<String, &'static str> {
    const SYNTAX: &str = "invalid syntax";
    let (Some(open), Some(close)) = (text.chars().next(), text.chars().last()) else { return Err(SYNTAX) };
    if text.len() < 2 || open != close {
        return Err(SYNTAX);
    }
    let body = &text[1..text.len() - 1];
    match open {
        // Raw strings keep everything but carriage returns, as Go's raw literals do.
        '`' if !body.contains('`') => Ok(body.replace('\r', "")),
        '"' => unescape(body).map_err(|()| SYNTAX),
        _ => Err(SYNTAX),
    }
}

/// The body of a `"…"` literal with Go's escapes (`strconv.UnquoteChar` with quote `"`).
fn unescape(body: &str) -> Result<String, ()> {
    let bytes = body.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' || c == b'"' {
            return Err(());
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let esc = *bytes.get(i + 1).ok_or(())?;
        i += 2;
        let simple = match esc {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match esc {
            b'x' | b'u' | b'U' => {
                let n = match esc {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let digits = bytes.get(i..i + n).ok_or(())?;
                let mut v: u32 = 0;
                for &d in digits {
                    v = v << 4 | (d as char).to_digit(16).ok_or(())?;
                }
                i += n;
                if esc == b'x' {
                    // A single byte, possibly not UTF-8 on its own.
                    out.push(v as u8);
                } else {
                    let r = char::from_u32(v).ok_or(())?;
                    out.extend_from_slice(r.encode_utf8(&mut [0; 4]).as_bytes());
                }
            }
            b'0'..=b'7' => {
                let digits = bytes.get(i..i + 2).ok_or(())?;
                let mut v = u32::from(esc - b'0');
                for &d in digits {
                    if !(b'0'..=b'7').contains(&d) {
                        return Err(());
                    }
                    v = v << 3 | u32::from(d - b'0');
                }
                i += 2;
                out.push(u8::try_from(v).map_err(|_| ())?);
            }
            _ => return Err(()),
        }
    }
    Ok(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then decimal, `0x`/`0o`/`0b` or a leading-`0` octal
/// number, with `_` separators; the error is Go's `*NumError` text.
pub(super) fn parse_int(s: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", quote(s));
    let range = || format!("strconv.ParseInt: parsing {}: value out of range", quote(s));
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let un = match parse_uint(digits) {
        Ok(un) => un,
        Err(UintError::Syntax) => return Err(syntax()),
        Err(UintError::Range) => return Err(range()),
    };
    let cutoff = 1u64 << 63;
    match (neg, un) {
        (false, un) if un >= cutoff => Err(range()),
        (true, un) if un > cutoff => Err(range()),
        (true, un) => Ok((un as i64).wrapping_neg()),
        (false, un) => Ok(un as i64),
    }
}

enum UintError {
    Syntax,
    Range,
}

/// Go's `strconv.ParseUint(s, 0, 64)`; like Go, it reports overflow as soon as it sees it.
fn parse_uint(s0: &str) -> Result<u64, UintError> {
    if s0.is_empty() {
        return Err(UintError::Syntax);
    }
    let b = s0.as_bytes();
    let (base, s): (u64, &[u8]) = if b[0] == b'0' {
        match b.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if b.len() >= 3 => (2, &b[2..]),
            Some(b'o') if b.len() >= 3 => (8, &b[2..]),
            Some(b'x') if b.len() >= 3 => (16, &b[2..]),
            _ => (8, &b[1..]),
        }
    } else {
        (10, b)
    };
    let cutoff = u64::MAX / base + 1;
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in s {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = match (c as char).to_digit(36) {
            Some(d) if u64::from(d) < base => u64::from(d),
            _ => return Err(UintError::Syntax),
        };
        if n >= cutoff {
            return Err(UintError::Range);
        }
        n = (n * base).checked_add(d).ok_or(UintError::Range)?;
    }
    if underscores && !underscore_ok(s0) {
        return Err(UintError::Syntax);
    }
    Ok(n)
}

/// Go's rule for `_` in number literals: only between digits, or between a base prefix and a digit.
fn underscore_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    // What came last: '^' the start, '0' a digit or base prefix, '_' an underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || hex && c.is_ascii_hexdigit() {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {}: invalid syntax", quote(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_follows_go() {
        let cases: &[(&str, &str, Result<i64, &str>)] = &[
            ("decimal", "8080", Ok(8080)),
            ("negative", "-1", Ok(-1)),
            ("plus sign", "+7", Ok(7)),
            ("hex prefix", "0x10", Ok(16)),
            ("upper-case hex prefix", "0XfF", Ok(255)),
            ("octal by leading zero", "010", Ok(8)),
            ("octal prefix", "0o17", Ok(15)),
            ("binary prefix", "0b101", Ok(5)),
            ("zero", "0", Ok(0)),
            ("separators", "1_000", Ok(1000)),
            ("separator after prefix", "0x_1f", Ok(31)),
            ("min", "-9223372036854775808", Ok(i64::MIN)),
            ("word", "abc", Err("strconv.ParseInt: parsing \"abc\": invalid syntax")),
            ("float", "1.5", Err("strconv.ParseInt: parsing \"1.5\": invalid syntax")),
            ("empty", "", Err("strconv.ParseInt: parsing \"\": invalid syntax")),
            ("bad octal digit", "08", Err("strconv.ParseInt: parsing \"08\": invalid syntax")),
            ("prefix alone", "0x", Err("strconv.ParseInt: parsing \"0x\": invalid syntax")),
            ("double separator", "1__0", Err("strconv.ParseInt: parsing \"1__0\": invalid syntax")),
            ("trailing separator", "10_", Err("strconv.ParseInt: parsing \"10_\": invalid syntax")),
            (
                "max plus one",
                "9223372036854775808",
                Err("strconv.ParseInt: parsing \"9223372036854775808\": value out of range"),
            ),
            (
                "too long",
                "99999999999999999999",
                Err("strconv.ParseInt: parsing \"99999999999999999999\": value out of range"),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse_int(input), want.map_err(str::to_string), "case {name}");
        }
    }

    #[test]
    fn unquote_follows_go() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("plain", r#""abc""#, Some("abc")),
            ("named escapes", r#""a\tb\nc\\""#, Some("a\tb\nc\\")),
            ("hex escape", r#""\x41""#, Some("A")),
            ("octal escape", r#""\101""#, Some("A")),
            ("short unicode", r#""\u00e9""#, Some("é")),
            ("long unicode", r#""\U0001F600""#, Some("😀")),
            ("raw keeps backslashes", r"`a\nb`", Some(r"a\nb")),
            ("raw drops carriage returns", "`a\r\nb`", Some("a\nb")),
            ("unknown escape", r#""\q""#, None),
            ("single-quote escape", r#""\'""#, None),
            ("surrogate", r#""\ud800""#, None),
            ("octal above 255", r#""\400""#, None),
            ("newline", "\"a\nb\"", None),
            ("trailing backslash", r#""a\""#, None),
        ];
        for (name, input, want) in cases {
            assert_eq!(unquote(input).ok().as_deref(), *want, "case {name}");
        }
    }

    #[test]
    fn quote_follows_go() {
        let cases = [
            ("plain", "web", "\"web\""),
            ("quote and backslash", "a\"b\\", "\"a\\\"b\\\\\""),
            ("controls", "\t\n\u{1}\u{7f}", "\"\\t\\n\\x01\\x7f\""),
            ("printable unicode", "åß∂", "\"åß∂\""),
            ("no-break space", "\u{a0}", "\"\\u00a0\""),
        ];
        for (name, input, want) in cases {
            assert_eq!(quote(input), want, "case {name}");
        }
    }
}
