//! pigeon's runtime, the part bexpr's generated parser (`grammar.go`) uses, so that errors come
//! out as bexpr's do. Three of its behaviours matter:
//! - **Expected lists.** Every literal and character-class matcher that fails notes what it wanted
//!   at its position; inside a `!` predicate it notes what *matched*, prefixed with `!` (`!.` is
//!   printed as `EOF`). When nothing parses, the error lists the wants at the farthest position.
//! - **Sticky errors.** The grammar's `&{ return false, errors.New(…) }` alternatives record an
//!   error and fail; any recorded error fails the whole parse, even if a later alternative succeeds.
//! - **Positions.** `line:col (offset)`: offset in bytes, column in characters, and a newline
//!   character already counts as column 0 of the next line (pigeon's `read`).

use super::strconv;

/// What a failing matcher wanted, as pigeon prints it.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Lit(&'static str),
    Class(&'static str),
    Any,
}

const WS: &str = "[ \\t\\r\\n]";

/// A parse in progress: pigeon's state, plus the grammar's nesting depth (`parse.rs`).
pub(super) struct Parser<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
    /// Inside an odd number of `!` predicates (pigeon's `maxFailInvertExpected`).
    invert: bool,
    fail_pos: usize,
    /// What was wanted at `fail_pos`, with whether it was noted inside a `!` predicate.
    wants: Vec<(bool, Want)>,
    /// Sticky errors, formatted, in the order first recorded.
    pub(super) errors: Vec<String>,
    /// Parentheses and `not`s open around the current position.
    pub(super) depth: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Parser { src, pos: 0, invert: false, fail_pos: 0, wants: Vec::new(), errors: Vec::new(), depth: 0 }
    }

    fn note(&mut self, matched: bool, at: usize, want: Want) {
        if matched != self.invert || at < self.fail_pos {
            return;
        }
        if at > self.fail_pos {
            self.fail_pos = at;
            self.wants.clear();
        }
        if !self.wants.contains(&(self.invert, want)) {
            self.wants.push((self.invert, want));
        }
    }

    pub(super) fn lit(&mut self, s: &'static str) -> bool {
        let at = self.pos;
        let ok = self.src[at..].starts_with(s);
        if ok {
            self.pos += s.len();
        }
        self.note(ok, at, Want::Lit(s));
        ok
    }

    pub(super) fn class(&mut self, want: &'static str, pred: fn(char) -> bool) -> bool {
        let at = self.pos;
        match self.src[at..].chars().next() {
            Some(c) if pred(c) => {
                self.pos += c.len_utf8();
                self.note(true, at, Want::Class(want));
                true
            }
            _ => {
                self.note(false, at, Want::Class(want));
                false
            }
        }
    }

    pub(super) fn any(&mut self) -> bool {
        let at = self.pos;
        let next = self.src[at..].chars().next();
        if let Some(c) = next {
            self.pos += c.len_utf8();
        }
        self.note(next.is_some(), at, Want::Any);
        next.is_some()
    }

    /// `!e`: succeeds, consuming nothing, where `e` fails.
    pub(super) fn not_ahead(&mut self, e: impl FnOnce(&mut Self) -> bool) -> bool {
        let at = self.pos;
        self.invert = !self.invert;
        let ok = e(self);
        self.invert = !self.invert;
        self.pos = at;
        !ok
    }

    /// A sequence of matchers: on failure the position goes back to where it started.
    pub(super) fn seq(&mut self, e: impl FnOnce(&mut Self) -> bool) -> bool {
        let at = self.pos;
        let ok = e(self);
        if !ok {
            self.pos = at;
        }
        ok
    }

    /// Records a sticky error of the rule with display name `rule`.
    pub(super) fn error(&mut self, at: usize, rule: &str, msg: &str) {
        let e = format!("{}: rule \"{rule}\": {msg}", self.position(at));
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    pub(super) fn position(&self, offset: usize) -> String {
        let (mut line, mut col) = (1, 0);
        for (i, c) in self.src.char_indices() {
            if i > offset {
                break;
            }
            col += 1;
            if c == '\n' {
                line += 1;
                col = 0;
            }
        }
        if offset >= self.src.len() {
            col += 1; // the end of input counts as one more character
        }
        format!("{line}:{col} ({offset})")
    }

    /// pigeon's error when nothing parses: the wants at the farthest failure, sorted, `!.` last as
    /// `EOF`, joined as `a, b or c`.
    pub(super) fn no_match(&self) -> String {
        let mut eof = false;
        let mut list: Vec<String> = Vec::new();
        for &(inverted, want) in &self.wants {
            let text = match want {
                Want::Lit(s) => strconv::quote(s),
                Want::Class(s) => s.to_string(),
                Want::Any => ".".to_string(),
            };
            match (inverted, text.as_str()) {
                (true, ".") => eof = true,
                (true, _) => list.push(format!("!{text}")),
                (false, _) => list.push(text),
            }
        }
        list.sort();
        list.dedup();
        if eof {
            list.push("EOF".to_string());
        }
        let expected = match list.split_last() {
            None => String::new(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        };
        format!("{}: no match found, expected: {expected}", self.position(self.fail_pos))
    }

    /// `_ <- [ \t\r\n]+`
    pub(super) fn ws(&mut self) -> bool {
        if !self.class(WS, is_ws) {
            return false;
        }
        while self.class(WS, is_ws) {}
        true
    }

    /// `EOF <- !.`
    pub(super) fn eof(&mut self) -> bool {
        self.not_ahead(Self::any)
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}
