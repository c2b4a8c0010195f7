//! Checking a parsed expression against a schema (bexpr v0.1.2's `validate.go`) and evaluating it
//! on one JSON element (its `evaluate.go`).
//!
//! bexpr evaluates Go values by reflection; here the element is the JSON the endpoint returns.
//! A Go struct field always exists, so a missing or `null` JSON key reads as the field's zero value
//! (`""`, `0`, `false`, empty), and a value of the wrong JSON type reads as the zero value too.
//! Map keys are the exception: a missing key has its own results (`missing_key`).

use regex::Regex;
use serde_json::Value;

use super::parse::{Ast, MatchAst, Op};
use super::schema::{Field, Schema};
use super::strconv::{parse_bool, parse_int, quote};

/// An expression whose selectors, operators and values have been checked against a schema.
#[derive(Debug)]
pub(super) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug)]
pub(super) struct Match {
    selector: Vec<String>,
    op: Op,
    value: Operand,
}

/// A match's value, coerced once to the type of the field it is compared with.
#[derive(Debug)]
enum Operand {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
    Regex(Regex),
}

/// Checks `ast` against `schema` the way bexpr's `validateRecurse` does, left to right, and
/// returns its first error's text.
pub(super) fn compile(ast: Ast, schema: &'static Schema) -> Result<Expr, String> {
    let all = |items: Vec<Ast>| items.into_iter().map(|a| compile(a, schema)).collect::<Result<Vec<_>, _>>();
    Ok(match ast {
        Ast::Or(items) => Expr::Or(all(items)?),
        Ast::And(items) => Expr::And(all(items)?),
        Ast::Not(inner) => Expr::Not(Box::new(compile(*inner, schema)?)),
        Ast::Match(m) => Expr::Match(compile_match(m, schema)?),
    })
}

fn compile_match(m: MatchAst, schema: &'static Schema) -> Result<Match, String> {
    let MatchAst { selector, op, value } = m;
    let shown = quote(&selector.join("."));
    let field = resolve(&selector, schema)?;
    if !field.ops().contains(&op) {
        return Err(format!("Invalid match operator {} for selector {shown}", quote(&op.to_string())));
    }
    let Some(raw) = value else {
        return match op {
            Op::IsEmpty | Op::IsNotEmpty => Ok(Match { selector, op, value: Operand::None }),
            _ => Err(format!("Match operator {} requires a non-nil value", quote(&op.to_string()))),
        };
    };
    let coerce_err = |e: String| format!("Failed to coerce value {} for selector {shown}: {e}", quote(&raw));
    let value = match field {
        Field::Int => Operand::Int(parse_int(&raw).map_err(coerce_err)?),
        Field::Bool => Operand::Bool(parse_bool(&raw).map_err(coerce_err)?),
        // Only strings allow `matches`; the pattern is compiled once, here.
        _ if matches!(op, Op::Matches | Op::NotMatches) => Operand::Regex(Regex::new(&raw).map_err(|e| {
            format!("Failed to compile regular expression {}: {}", quote(&raw), go_regex_error(&raw, &e))
        })?),
        _ => Operand::Str(raw),
    };
    Ok(Match { selector, op, value })
}

/// The field `selector` names. Struct fields are looked up by name; below a map any key is valid.
fn resolve(selector: &[String], schema: &'static Schema) -> Result<&'static Field, String> {
    let mut field: Option<&'static Field> = None;
    for (i, part) in selector.iter().enumerate() {
        let next = match field {
            None => lookup(schema, part),
            Some(Field::Struct(fields) | Field::StructList(fields)) => lookup(fields, part),
            Some(Field::Map(value)) => Some(*value),
            Some(_) => None,
        };
        field = Some(next.ok_or_else(|| format!("Selector {} is not valid", quote(&selector[..=i].join("."))))?);
    }
    field.ok_or_else(|| "Invalid selector: \"\"".to_string())
}

fn lookup(fields: &'static Schema, name: &str) -> Option<&'static Field> {
    fields.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
}

/// Whether `element`, one element of type `schema`, matches `expr`. `and` and `or` stop early.
pub(super) fn eval(expr: &Expr, schema: &'static Schema, element: &Value) -> bool {
    match expr {
        Expr::Or(items) => items.iter().any(|e| eval(e, schema, element)),
        Expr::And(items) => items.iter().all(|e| eval(e, schema, element)),
        Expr::Not(inner) => !eval(inner, schema, element),
        Expr::Match(m) => in_struct(m, 0, schema, Some(element)),
    }
}

/// `value` is a struct of `fields`; `m.selector[depth]` names one of them.
fn in_struct(m: &Match, depth: usize, fields: &'static Schema, value: Option<&Value>) -> bool {
    let name = m.selector[depth].as_str();
    // `compile` has resolved every selector, so the lookup cannot fail.
    lookup(fields, name).is_some_and(|field| at(m, depth + 1, field, value.and_then(|v| v.get(name))))
}

/// `value` has type `field`, reached through `m.selector[..depth]`.
fn at(m: &Match, depth: usize, field: &'static Field, value: Option<&Value>) -> bool {
    if depth == m.selector.len() {
        return leaf(m, field, value);
    }
    match field {
        Field::Struct(fields) => in_struct(m, depth, fields, value),
        // Each element is matched on its own and the results OR-ed, negated operators included:
        // `Checks.Status != "passing"` is true if any check is not passing. No element, no match.
        Field::StructList(fields) => list(value).iter().any(|e| in_struct(m, depth, fields, Some(e))),
        Field::Map(inner) => match value.and_then(|v| v.get(&m.selector[depth])) {
            Some(v) => at(m, depth + 1, inner, Some(v)),
            None => missing_key(m.op),
        },
        Field::Str | Field::Int | Field::Bool | Field::StrList => false,
    }
}

/// bexpr v0.1.2's answer for a map key that is not there (`evaluate.go`): `==`, `is not empty`
/// and `in` are false, every other operator is true, **`matches` included**. Later bexpr versions
/// make `matches` false; v0.1.2, the one Consul pins, falls through to true.
fn missing_key(op: Op) -> bool {
    !matches!(op, Op::Equal | Op::IsNotEmpty | Op::In)
}

/// Applies the operator to the selected value; the negated operators negate the plain ones.
fn leaf(m: &Match, field: &Field, value: Option<&Value>) -> bool {
    let (op, negated) = match m.op {
        Op::NotEqual => (Op::Equal, true),
        Op::NotIn => (Op::In, true),
        Op::IsNotEmpty => (Op::IsEmpty, true),
        Op::NotMatches => (Op::Matches, true),
        op => (op, false),
    };
    let s = || value.and_then(Value::as_str).unwrap_or("");
    let result = match (op, field, &m.value) {
        (Op::Equal, Field::Str, Operand::Str(v)) => s() == v,
        (Op::Equal, Field::Int, Operand::Int(v)) => value.and_then(Value::as_i64).unwrap_or(0) == *v,
        (Op::Equal, Field::Bool, Operand::Bool(v)) => value.and_then(Value::as_bool).unwrap_or(false) == *v,
        (Op::In, Field::Str, Operand::Str(v)) => s().contains(v.as_str()),
        (Op::In, Field::StrList, Operand::Str(v)) => list(value).iter().any(|e| e.as_str() == Some(v)),
        (Op::In, Field::Map(_), Operand::Str(v)) => value.and_then(Value::as_object).is_some_and(|o| o.contains_key(v)),
        (Op::IsEmpty, Field::StrList | Field::StructList(_), _) => list(value).is_empty(),
        (Op::IsEmpty, Field::Map(_), _) => value.and_then(Value::as_object).is_none_or(|o| o.is_empty()),
        (Op::Matches, Field::Str, Operand::Regex(re)) => re.is_match(s()),
        // `compile` admits no other combination.
        _ => return false,
    };
    result != negated
}

fn list(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Words a regex error the way Go's `regexp/syntax` does: ``error parsing regexp: <code>: `<expr>` ``.
///
/// Rust's `regex` and Go's RE2 accept nearly the same syntax. They differ at the edges: Go takes
/// `\Q…\E` and a stray `{` as a literal, which Rust refuses; Rust takes `a**` and repeat counts
/// above 1000, which Go refuses; `\d`, `\w`, `\s` and `\b` are ASCII in Go and Unicode here.
fn go_regex_error(pattern: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let kind = text.lines().last().unwrap_or("").trim_start_matches("error: ");
    // Rust shows a one-line pattern indented by four spaces, with carets under the offending part:
    // its position and length in characters.
    let span = || -> Option<(usize, usize)> {
        let carets = text.lines().nth(2)?.strip_prefix("    ")?;
        let start = carets.find('^')?;
        let len = carets[start..].chars().take_while(|&c| c == '^').count();
        (!pattern.contains('\n')).then_some((start, len))
    };
    let part = || span().map(|(start, len)| pattern.chars().skip(start).take(len).collect::<String>());
    let (code, expr) = match kind {
        "unclosed group" => ("missing closing )", Some(pattern.to_string())),
        "unopened group" => ("unexpected )", Some(pattern.to_string())),
        // Go shows the class from its `[` to the end of the pattern.
        "unclosed character class" => {
            ("missing closing ]", span().map(|(start, _)| pattern.chars().skip(start).collect()))
        }
        "repetition operator missing expression" => ("missing argument to repetition operator", part()),
        "invalid repetition count range, the start must be <= the end" => ("invalid repeat count", part()),
        "unrecognized escape sequence" => ("invalid escape sequence", part()),
        "incomplete escape sequence, reached end of pattern prematurely" => {
            ("trailing backslash at end of expression", Some(String::new()))
        }
        "invalid character class range, the start must be <= the end" => ("invalid character class range", part()),
        "look-around, including look-ahead and look-behind, is not supported" | "unrecognized flag" => {
            ("invalid or unsupported Perl syntax", part())
        }
        "invalid capture group character" | "empty capture group name" => ("invalid named capture", part()),
        _ if matches!(e, regex::Error::CompiledTooBig(_)) => ("expression too large", Some(pattern.to_string())),
        other => (other, None),
    };
    format!("error parsing regexp: {code}: `{}`", expr.unwrap_or_else(|| pattern.to_string()))
}
