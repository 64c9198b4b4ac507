//! The formats of the lines rch prints, from `tests/fixtures/output-lines.txt`:
//! the docs test checks the documentation's sample lines against them, and
//! tests that run rch check the real lines against them, so a sample line in
//! the docs is one the binary prints.
#![allow(dead_code)]

/// The formats, one a line (comments and blank lines dropped).
pub fn formats() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/output-lines.txt"
    );
    std::fs::read_to_string(path)
        .expect("reading tests/fixtures/output-lines.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The first format `line` matches, if any.
pub fn format_of(line: &str) -> Option<String> {
    formats().into_iter().find(|f| matches(f, line))
}

/// Panic unless `line` (a line rch printed) has a known format.
pub fn assert_printed(line: &str) {
    assert!(
        format_of(line).is_some(),
        "rch printed a line of no known format (add it to tests/fixtures/output-lines.txt): {line}"
    );
}

/// Does `line` have format `format`? A `failed:` line also must not repeat
/// the worker id after `failed:` (rch strips it; the line starts with it).
pub fn matches(format: &str, line: &str) -> bool {
    let tokens = tokenize(format);
    if !match_tokens(&tokens, line) {
        return false;
    }
    match line.split_once(": failed: ") {
        Some((id, rest)) => !rest.starts_with(&format!("{id}: ")),
        None => true,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(String),
    Id,
    Number,
    Duration,
    Any,
}

fn tokenize(format: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = format;
    while let Some(c) = rest.chars().next() {
        let special = [
            ("<id>", Token::Id),
            ("<n>", Token::Number),
            ("<dur>", Token::Duration),
            ("*", Token::Any),
        ]
        .into_iter()
        .find(|(s, _)| rest.starts_with(s));
        match special {
            Some((s, token)) => {
                if !literal.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut literal)));
                }
                tokens.push(token);
                rest = &rest[s.len()..];
            }
            None => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    tokens
}

/// Lengths of the prefixes of `text` that `token` can take.
fn candidates(token: &Token, text: &str) -> Vec<usize> {
    let take_while = |ok: &dyn Fn(char) -> bool| -> usize {
        text.char_indices()
            .find(|(_, c)| !ok(*c))
            .map(|(i, _)| i)
            .unwrap_or(text.len())
    };
    match token {
        Token::Literal(l) => {
            if text.starts_with(l.as_str()) {
                vec![l.len()]
            } else {
                vec![]
            }
        }
        Token::Id => {
            let n = take_while(&|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            (1..=n).rev().collect()
        }
        Token::Number => {
            let n = take_while(&|c| c.is_ascii_digit());
            (1..=n).rev().collect()
        }
        Token::Duration => {
            let n = take_while(&|c| c.is_ascii_digit() || c == '.');
            let unit = ["ms", "s", "µs"]
                .iter()
                .find(|u| text[n..].starts_with(*u))
                .map(|u| u.len());
            match (n, unit) {
                (1.., Some(u)) => vec![n + u],
                _ => vec![],
            }
        }
        Token::Any => text
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .rev()
            .collect(),
    }
}

/// Could a line of format `format` start with `prefix`?
pub fn could_start(format: &str, prefix: &str) -> bool {
    match_prefix(&tokenize(format), prefix)
}

fn match_prefix(tokens: &[Token], text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let Some((first, rest)) = tokens.split_first() else {
        return false;
    };
    if let Token::Literal(l) = first {
        if l.starts_with(text) {
            return true;
        }
    }
    if *first == Token::Any {
        return true;
    }
    candidates(first, text)
        .into_iter()
        .any(|n| match_prefix(rest, &text[n..]))
}

fn match_tokens(tokens: &[Token], text: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    candidates(first, text)
        .into_iter()
        .any(|n| match_tokens(rest, &text[n..]))
}
