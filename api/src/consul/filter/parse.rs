//! bexpr v0.1.2's grammar (`grammar.peg`, a pigeon PEG), parsed the way pigeon parses it, so the
//! same inputs are accepted and the same errors come out with the same positions.
//!
//! pigeon's matchers, sticky errors and positions are in `peg.rs`; this file is the grammar.
//!
//! The grammar's rules re-parse a prefix in several alternatives (`A _ "or" _ B / A`,
//! `"(" _? E _? ")" / … / "(" _? E _? !")"`). A PEG parse of a rule at a position always gives the
//! same result and notes, so each such prefix is parsed once here and its outcome reused; without
//! that, nested parentheses cost exponential time, in pigeon too.

use super::peg::Parser;
use super::strconv;

/// Deepest nesting of parentheses and `not`s accepted: far beyond any hand-written filter, and
/// small enough that parsing, validation and evaluation cannot exhaust the stack.
pub(super) const MAX_DEPTH: usize = 64;

/// A parsed expression, before it is checked against a schema.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ast {
    /// True if any operand is (left to right, stopping at the first true one).
    Or(Vec<Ast>),
    /// True if all operands are (left to right, stopping at the first false one).
    And(Vec<Ast>),
    Not(Box<Ast>),
    Match(MatchAst),
}

/// One match expression: `Selector op Value`, `Selector is [not] empty` or `Value [not] in Selector`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MatchAst {
    pub(super) selector: Vec<String>,
    pub(super) op: Op,
    /// The raw value: a bare word's text, a number's text or a string literal's contents.
    pub(super) value: Option<String>,
}

/// bexpr's match operators; `contains` and `not contains` parse to `In` and `NotIn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl std::fmt::Display for Op {
    /// The names bexpr's errors use (`Invalid match operator "Is Empty" …`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Equal => "Equal",
            Op::NotEqual => "Not Equal",
            Op::In => "In",
            Op::NotIn => "Not In",
            Op::IsEmpty => "Is Empty",
            Op::IsNotEmpty => "Is Not Empty",
            Op::Matches => "Matches",
            Op::NotMatches => "Not Matches",
        })
    }
}

/// Parses `src`; the error is the text bexpr would put after `Failed to create boolean expression
/// evaluator: ` (several errors are joined by newlines, as pigeon joins them).
pub(super) fn parse(src: &str) -> Result<Ast, String> {
    let mut p = Parser::new(src);
    match p.input() {
        Err(TooDeep(at)) => Err(format!(
            "{}: expression nested more than {MAX_DEPTH} levels deep (parentheses and not)",
            p.position(at)
        )),
        Ok(_) if !p.errors.is_empty() => Err(p.errors.join("\n")),
        Ok(Some(ast)) => Ok(ast),
        Ok(None) => Err(p.no_match()),
    }
}

/// Shoal's nesting bound was crossed at this offset; parsing stops at once.
struct TooDeep(usize);

/// The result of a rule that can nest: `Ok(None)` is an ordinary PEG failure.
type Step<T> = Result<Option<T>, TooDeep>;

impl Parser<'_> {
    /// Counts one level of nesting (the `(` or `not` at `at`), refusing to go deeper than `MAX_DEPTH`.
    fn enter(&mut self, at: usize) -> Result<(), TooDeep> {
        if self.depth >= MAX_DEPTH {
            return Err(TooDeep(at));
        }
        self.depth += 1;
        Ok(())
    }

    /// `Input <- _? "(" _? OrExpression _? ")" _? EOF / _? OrExpression _? EOF`
    fn input(&mut self) -> Step<Ast> {
        self.ws();
        if self.lit("(") {
            self.ws();
            if let Some(e) = self.or_expr()? {
                self.ws();
                if self.lit(")") {
                    self.ws();
                    if self.eof() {
                        return Ok(Some(e));
                    }
                }
            }
        }
        self.pos = 0;
        self.ws();
        if let Some(e) = self.or_expr()? {
            self.ws();
            if self.eof() {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// `OrExpression <- AndExpression _ "or" _ OrExpression / AndExpression`, as a loop.
    fn or_expr(&mut self) -> Step<Ast> {
        self.chain("or", Self::and_expr, Ast::Or)
    }

    /// `AndExpression <- NotExpression _ "and" _ AndExpression / NotExpression`, as a loop.
    fn and_expr(&mut self) -> Step<Ast> {
        self.chain("and", Self::not_expr, Ast::And)
    }

    fn chain(&mut self, word: &'static str, item: fn(&mut Self) -> Step<Ast>, join: fn(Vec<Ast>) -> Ast) -> Step<Ast> {
        let Some(first) = item(self)? else { return Ok(None) };
        let mut items = vec![first];
        loop {
            let at = self.pos;
            if self.ws()
                && self.lit(word)
                && self.ws()
                && let Some(next) = item(self)?
            {
                items.push(next);
                continue;
            }
            // The right operand did not parse: the rule's second alternative keeps what came before.
            self.pos = at;
            break;
        }
        Ok(Some(if items.len() == 1 { items.remove(0) } else { join(items) }))
    }

    /// `NotExpression <- "not" _ NotExpression / ParenthesizedExpression`; `not not x` is `x`.
    fn not_expr(&mut self) -> Step<Ast> {
        let at = self.pos;
        if self.lit("not") && self.ws() {
            self.enter(at)?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            match inner {
                Some(Ast::Not(x)) => return Ok(Some(*x)),
                Some(x) => return Ok(Some(Ast::Not(Box::new(x)))),
                None => {}
            }
        }
        self.pos = at;
        self.paren()
    }

    /// `ParenthesizedExpression "grouping" <- "(" _? OrExpression _? ")" / MatchExpression
    ///     / "(" _? OrExpression _? !")" &{ Unmatched parentheses }`
    fn paren(&mut self) -> Step<Ast> {
        let at = self.pos;
        let mut unclosed = None;
        if self.lit("(") {
            self.ws();
            self.enter(at)?;
            let inner = self.or_expr()?;
            self.depth -= 1;
            if let Some(inner) = inner {
                self.ws();
                if self.lit(")") {
                    return Ok(Some(inner));
                }
                unclosed = Some(self.pos);
            }
            self.pos = at;
        }
        if let Some(m) = self.match_expr() {
            return Ok(Some(Ast::Match(m)));
        }
        // The third alternative repeats the first one's prefix; `!")"` notes nothing when `)` is absent.
        if let Some(end) = unclosed {
            self.error(end, "grouping", "Unmatched parentheses");
        }
        Ok(None)
    }

    /// `MatchExpression "match" <- MatchSelectorOpValue / MatchSelectorOp / MatchValueOpSelector`
    fn match_expr(&mut self) -> Option<MatchAst> {
        let at = self.pos;
        // MatchSelectorOpValue <- Selector (== / != / contains / not contains / matches / not matches) Value
        if let Some(selector) = self.selector()
            && let Some(op) = self.value_op()
            && let Some(value) = self.value()
        {
            return Some(MatchAst { selector, op, value: Some(value) });
        }
        self.pos = at;
        // MatchSelectorOp <- Selector (is empty / is not empty)
        if let Some(selector) = self.selector() {
            let op = if self.words(&["is", "empty"], false) {
                Some(Op::IsEmpty)
            } else if self.words(&["is", "not", "empty"], false) {
                Some(Op::IsNotEmpty)
            } else {
                None
            };
            if let Some(op) = op {
                return Some(MatchAst { selector, op, value: None });
            }
        }
        self.pos = at;
        // MatchValueOpSelector <- Value (in / not in) Selector / Value (in / not in) !Selector &{ Invalid selector }
        if let Some(value) = self.value() {
            let op = if self.words(&["in"], true) {
                Some(Op::In)
            } else if self.words(&["not", "in"], true) {
                Some(Op::NotIn)
            } else {
                None
            };
            if let Some(op) = op {
                let sel_at = self.pos;
                if let Some(selector) = self.selector() {
                    return Some(MatchAst { selector, op, value: Some(value) });
                }
                // The second alternative repeats this prefix. Its `!Selector` notes are moot: the
                // error recorded here fails the parse whatever else is noted.
                self.error(sel_at, "match", "Invalid selector");
            }
        }
        self.pos = at;
        None
    }

    /// The operators that take a value after the selector, in the grammar's order.
    fn value_op(&mut self) -> Option<Op> {
        for (sym, op) in [("==", Op::Equal), ("!=", Op::NotEqual)] {
            // `_? "==" _?`
            if self.seq(|p| {
                p.ws();
                p.lit(sym)
            }) {
                self.ws();
                return Some(op);
            }
        }
        let worded: [(&[&'static str], Op); 4] = [
            (&["contains"], Op::In),
            (&["not", "contains"], Op::NotIn),
            (&["matches"], Op::Matches),
            (&["not", "matches"], Op::NotMatches),
        ];
        worded.into_iter().find(|(words, _)| self.words(words, true)).map(|(_, op)| op)
    }

    /// `_ "w1" _ "w2" … [_]`: keywords, each preceded by white space.
    fn words(&mut self, words: &[&'static str], trailing_ws: bool) -> bool {
        self.seq(|p| words.iter().all(|w| p.ws() && p.lit(w)) && (!trailing_ws || p.ws()))
    }

    /// `Selector "selector" <- Identifier ("." Identifier / IndexExpression)*`
    fn selector(&mut self) -> Option<Vec<String>> {
        let mut parts = vec![self.identifier()?];
        loop {
            let at = self.pos;
            if self.lit(".") {
                if let Some(id) = self.identifier() {
                    parts.push(id);
                    continue;
                }
                self.pos = at;
            }
            match self.index() {
                Some(key) => parts.push(key),
                None => return Some(parts),
            }
        }
    }

    /// `Identifier <- [a-zA-Z] [a-zA-Z0-9_]*`
    fn identifier(&mut self) -> Option<String> {
        let at = self.pos;
        if !self.class("[a-zA-Z]", |c| c.is_ascii_alphabetic()) {
            return None;
        }
        while self.class("[a-zA-Z0-9_]", |c| c.is_ascii_alphanumeric() || c == '_') {}
        Some(self.src[at..self.pos].to_string())
    }

    /// `IndexExpression "index" <- "[" _? StringLiteral _? "]"
    ///     / "[" _? !StringLiteral &{ Invalid index } / "[" _? StringLiteral _? !"]" &{ Unclosed index expression }`
    fn index(&mut self) -> Option<String> {
        let at = self.pos;
        if !self.lit("[") {
            return None;
        }
        self.ws();
        let key_at = self.pos;
        match self.string_literal() {
            Some(key) => {
                self.ws();
                if self.lit("]") {
                    return Some(key);
                }
                self.error(self.pos, "index", "Unclosed index expression");
            }
            None => self.error(key_at, "index", "Invalid index"),
        }
        self.pos = at;
        None
    }

    /// `Value "value" <- Selector / NumberLiteral / StringLiteral`; a selector-shaped word is
    /// taken as its text, parts joined by `.`.
    fn value(&mut self) -> Option<String> {
        if let Some(sel) = self.selector() {
            return Some(sel.join("."));
        }
        self.number().or_else(|| self.string_literal())
    }

    /// `NumberLiteral "number" <- "-"? IntegerOrFloat &AfterNumbers
    ///     / "-"? IntegerOrFloat !AfterNumbers &{ Invalid number literal }`
    fn number(&mut self) -> Option<String> {
        let at = self.pos;
        self.lit("-");
        if self.integer_or_float() {
            let end = self.pos;
            // `AfterNumbers <- &(_ / EOF / ")")`
            if self.seq(|p| p.ws() || p.eof() || p.lit(")")) {
                self.pos = end;
                return Some(self.src[at..end].to_string());
            }
            self.error(end, "number", "Invalid number literal");
        }
        self.pos = at;
        None
    }

    /// `IntegerOrFloat <- ("0" / [1-9][0-9]*) ("." [0-9]+)?`
    fn integer_or_float(&mut self) -> bool {
        if !self.lit("0") {
            if !self.class("[1-9]", |c| c.is_ascii_digit() && c != '0') {
                return false;
            }
            while self.class("[0-9]", |c| c.is_ascii_digit()) {}
        }
        if self.seq(|p| p.lit(".") && p.class("[0-9]", |c| c.is_ascii_digit())) {
            while self.class("[0-9]", |c| c.is_ascii_digit()) {}
        }
        true
    }

    /// `StringLiteral "string" <- ('`' RawStringChar* '`' / '"' DoubleStringChar* '"') { strconv.Unquote }
    ///     / ('`' RawStringChar* / '"' DoubleStringChar*) EOF &{ Unterminated string literal }`
    ///
    /// There is no escape for the quote itself: `"a\"b"` ends at the second `"`, and its
    /// `strconv.Unquote` fails with `invalid syntax`.
    fn string_literal(&mut self) -> Option<String> {
        let at = self.pos;
        for quote in ["`", "\""] {
            if self.lit(quote) {
                self.string_body(quote);
                if self.lit(quote) {
                    // pigeon keeps an action's value when the action errs; the error fails the parse.
                    return Some(strconv::unquote(&self.src[at..self.pos]).unwrap_or_else(|e| {
                        self.error(at, "string", e);
                        String::new()
                    }));
                }
                self.pos = at;
            }
        }
        for quote in ["`", "\""] {
            if self.lit(quote) {
                // The body stops only at its quote or at the end, and there was no closing quote.
                self.string_body(quote);
                if self.eof() {
                    self.error(self.pos, "string", "Unterminated string literal");
                }
                break;
            }
        }
        self.pos = at;
        None
    }

    /// `RawStringChar <- !'`' .` or `DoubleStringChar <- !'"' .`, repeated.
    fn string_body(&mut self, quote: &'static str) {
        while self.seq(|p| p.not_ahead(|p| p.lit(quote)) && p.any()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(selector: &[&str], op: Op, value: Option<&str>) -> Ast {
        Ast::Match(MatchAst {
            selector: selector.iter().map(|s| s.to_string()).collect(),
            op,
            value: value.map(str::to_string),
        })
    }

    #[test]
    fn parses() {
        let a = || m(&["a"], Op::Equal, Some("1"));
        let b = || m(&["b"], Op::Equal, Some("2"));
        let c = || m(&["c"], Op::Equal, Some("3"));
        let not = |x: Ast| Ast::Not(Box::new(x));
        let cases: Vec<(&str, &str, Ast)> = vec![
            (
                "not binds tighter than and, and than or",
                "a == 1 and not b == 2 or c == 3",
                Ast::Or(vec![Ast::And(vec![a(), not(b())]), c()]),
            ),
            ("parentheses group", "a == 1 and (b == 2 or c == 3)", Ast::And(vec![a(), Ast::Or(vec![b(), c()])])),
            ("not not collapses", "not not a == 1", a()),
            ("not of parentheses", "not (a == 1)", not(a())),
            ("whole input in parentheses", " ( a == 1 ) ", a()),
            ("operators need no spaces", "a==1", a()),
            ("free white space", "\t\r\n a \n==\t 1 \r\n", a()),
            ("in", "\"x\" in a", m(&["a"], Op::In, Some("x"))),
            ("not in", "x not in a", m(&["a"], Op::NotIn, Some("x"))),
            ("contains is in", "a contains x", m(&["a"], Op::In, Some("x"))),
            ("not contains is not in", "a not contains x", m(&["a"], Op::NotIn, Some("x"))),
            ("matches", "a matches `^x`", m(&["a"], Op::Matches, Some("^x"))),
            ("not matches", "a not matches \"^x\"", m(&["a"], Op::NotMatches, Some("^x"))),
            ("is empty", "a is empty", m(&["a"], Op::IsEmpty, None)),
            ("is not empty", "a is not empty", m(&["a"], Op::IsNotEmpty, None)),
            (
                "dotted and indexed selector",
                "x in a.b[\"c-d e\"][ `f` ]",
                m(&["a", "b", "c-d e", "f"], Op::In, Some("x")),
            ),
            ("bare word value with dots", "a == b.c", m(&["a"], Op::Equal, Some("b.c"))),
            ("negative float", "a == -0.5", m(&["a"], Op::Equal, Some("-0.5"))),
            ("go escapes", r#"a == "\x41\t\u00e9""#, m(&["a"], Op::Equal, Some("A\té"))),
            ("raw string keeps backslashes", r"a == `\d+`", m(&["a"], Op::Equal, Some(r"\d+"))),
            ("keyword prefix is a selector", "notes == x", m(&["notes"], Op::Equal, Some("x"))),
            ("not alone is a selector", "not == x", m(&["not"], Op::Equal, Some("x"))),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse(input), Ok(want), "case {name}");
        }
    }

    #[test]
    fn syntax_errors() {
        let deep_parens = format!("{}a == 1{}", "(".repeat(100), ")".repeat(100));
        let deep_nots = format!("{}a == 1", "not ".repeat(100));
        let unclosed = format!("{}a == 1", "(".repeat(60));
        let cases: Vec<(&str, &str, &str)> = vec![
            // bexpr v0.1.2's own grammar_test.go cases, verbatim
            ("unterminated double-quoted", "foo == \"12x", "1:12 (11): rule \"string\": Unterminated string literal"),
            ("unterminated raw", "foo == `12x", "1:12 (11): rule \"string\": Unterminated string literal"),
            ("invalid number", "foo == 3x", "1:9 (8): rule \"number\": Invalid number literal"),
            ("invalid index", "foo[3] == abc", "1:5 (4): rule \"index\": Invalid index"),
            ("unclosed index at end", "x in foo[\"abc\"", "1:15 (14): rule \"index\": Unclosed index expression"),
            ("unclosed index", "foo[\"abc\" == 3", "1:11 (10): rule \"index\": Unclosed index expression"),
            ("number after in", "x in 32", "1:6 (5): rule \"match\": Invalid selector"),
            ("number selector", "32 == 32", r#"1:4 (3): no match found, expected: "in", "not" or [ \t\r\n]"#),
            ("number is empty", "32 is empty", r#"1:4 (3): no match found, expected: "in", "not" or [ \t\r\n]"#),
            ("junk at the end", "x in foo abc", r#"1:10 (9): no match found, expected: "and", "or", [ \t\r\n] or EOF"#),
            (
                "dangling and",
                "x in foo and ",
                r#"1:14 (13): no match found, expected: "(", "-", "0", "\"", "`", "not", [ \t\r\n], [1-9] or [a-zA-Z]"#,
            ),
            (
                "dangling or",
                "x in foo or ",
                r#"1:13 (12): no match found, expected: "(", "-", "0", "\"", "`", "not", [ \t\r\n], [1-9] or [a-zA-Z]"#,
            ),
            (
                "dangling not",
                "x in foo or not ",
                r#"1:17 (16): no match found, expected: "!=", "(", "-", "0", "==", "\"", "`", "contains", "in", "is", "matches", "not", [ \t\r\n], [1-9] or [a-zA-Z]"#,
            ),
            ("unmatched parentheses", "(foo == 4", "1:10 (9): rule \"grouping\": Unmatched parentheses"),
            // Consul's documented examples and the usual mistakes
            (
                "selector alone",
                "foo",
                r#"1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \t\r\n] or [a-zA-Z0-9_]"#,
            ),
            (
                "bare word with a dash",
                "Node == host-1",
                r#"1:13 (12): no match found, expected: ".", "[", [ \t\r\n], [a-zA-Z0-9_] or EOF"#,
            ),
            ("bare address", "Address == 10.0.0.5", "1:16 (15): rule \"number\": Invalid number literal"),
            (
                "upper-case keyword",
                "Node == a AND Node == b",
                r#"1:11 (10): no match found, expected: "and", "or", [ \t\r\n] or EOF"#,
            ),
            ("escaped quote ends the string", r#"Node == "a\"b""#, "1:9 (8): rule \"string\": invalid syntax"),
            ("bad escape", r#"Node == "\q""#, "1:9 (8): rule \"string\": invalid syntax"),
            (
                "empty input",
                "",
                r#"1:1 (0): no match found, expected: "(", "-", "0", "\"", "`", "not", [ \t\r\n], [1-9] or [a-zA-Z]"#,
            ),
            ("column after a newline", "a == 1\nand", r#"2:4 (10): no match found, expected: [ \t\r\n]"#),
            // Each level is parsed once: were alternatives re-parsed, this would take 2^60 steps.
            ("many unclosed parentheses", unclosed.as_str(), "1:67 (66): rule \"grouping\": Unmatched parentheses"),
            // Input's own parentheses are not counted: the 66th `(` is the 65th level.
            (
                "parentheses too deep",
                deep_parens.as_str(),
                "1:66 (65): expression nested more than 64 levels deep (parentheses and not)",
            ),
            (
                "nots too deep",
                deep_nots.as_str(),
                "1:257 (256): expression nested more than 64 levels deep (parentheses and not)",
            ),
            (
                "errors accumulate",
                r#"a == "\q" or b == 2y"#,
                "1:6 (5): rule \"string\": invalid syntax\n1:20 (19): rule \"number\": Invalid number literal",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse(input), Err(want.to_string()), "case {name}");
        }
    }
}
