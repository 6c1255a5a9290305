//! Just enough JSON for the load generator: parse fio's `--output-format=json` and write our own
//! result files. Kept here rather than pulling serde into the broker's binary crate.
//!
//! The parser accepts RFC 8259 JSON; nesting is bounded by [`DEPTH_MAX`] so a hostile file
//! cannot overflow the stack. Numbers are `f64` (fio's byte counts fit 2^53 for any run here).

use std::fmt::{self, Write as _};

/// Deepest nesting accepted.
const DEPTH_MAX: usize = 64;

/// A JSON value. Objects keep their keys in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Follows a path of object keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter().try_fold(self, |value, key| value.get(key))
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(number) => Some(*number),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(entries: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key.into(), value))
                .collect(),
        )
    }
}

impl From<f64> for Json {
    fn from(value: f64) -> Self {
        Json::Number(value)
    }
}

impl From<u64> for Json {
    fn from(value: u64) -> Self {
        Json::Number(value as f64)
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Self {
        Json::Bool(value)
    }
}

impl From<&str> for Json {
    fn from(value: &str) -> Self {
        Json::String(value.to_owned())
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(value: Option<T>) -> Self {
        value.map_or(Json::Null, Into::into)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => out.write_str("null"),
            Json::Bool(value) => write!(out, "{value}"),
            Json::Number(value) if value.is_finite() => write!(out, "{value}"),
            Json::Number(_) => out.write_str("null"),
            Json::String(value) => write_string(out, value),
            Json::Array(items) => {
                out.write_char('[')?;
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        out.write_str(", ")?;
                    }
                    write!(out, "{item}")?;
                }
                out.write_char(']')
            }
            Json::Object(entries) => {
                out.write_char('{')?;
                for (position, (key, value)) in entries.iter().enumerate() {
                    if position > 0 {
                        out.write_str(", ")?;
                    }
                    write_string(out, key)?;
                    write!(out, ": {value}")?;
                }
                out.write_char('}')
            }
        }
    }
}

fn write_string(out: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    out.write_char('"')?;
    for character in value.chars() {
        match character {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            control if (control as u32) < 0x20 => write!(out, "\\u{:04x}", control as u32)?,
            other => out.write_char(other)?,
        }
    }
    out.write_char('"')
}

/// Why a document did not parse: the byte position and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    position: usize,
    expected: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            out,
            "invalid JSON at byte {}: expected {}",
            self.position, self.expected
        )
    }
}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Json, ParseError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        position: 0,
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position != parser.bytes.len() {
        return Err(parser.error("end of document"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &'static str) -> ParseError {
        ParseError {
            position: self.position,
            expected,
        }
    }

    fn skip_whitespace(&mut self) {
        while self
            .bytes
            .get(self.position)
            .is_some_and(|byte| byte.is_ascii_whitespace())
        {
            self.position += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.bytes.get(self.position) == Some(&byte) {
            self.position += 1;
            return true;
        }
        false
    }

    fn eat_literal(&mut self, literal: &str, value: Json) -> Result<Json, ParseError> {
        if self.bytes[self.position..].starts_with(literal.as_bytes()) {
            self.position += literal.len();
            return Ok(value);
        }
        Err(self.error("a literal"))
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        if depth > DEPTH_MAX {
            return Err(self.error("shallower nesting"));
        }
        self.skip_whitespace();
        match self.bytes.get(self.position) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.eat_literal("true", Json::Bool(true)),
            Some(b'f') => self.eat_literal("false", Json::Bool(false)),
            Some(b'n') => self.eat_literal("null", Json::Null),
            Some(_) => self.number(),
            None => Err(self.error("a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.position += 1; // '{'
        let mut entries = Vec::new();
        if self.eat(b'}') {
            return Ok(Json::Object(entries));
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            if !self.eat(b':') {
                return Err(self.error("':'"));
            }
            entries.push((key, self.value(depth + 1)?));
            if self.eat(b'}') {
                return Ok(Json::Object(entries));
            }
            if !self.eat(b',') {
                return Err(self.error("',' or '}'"));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, ParseError> {
        self.position += 1; // '['
        let mut items = Vec::new();
        if self.eat(b']') {
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            if self.eat(b']') {
                return Ok(Json::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.error("',' or ']'"));
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        if self.bytes.get(self.position) != Some(&b'"') {
            return Err(self.error("a string"));
        }
        self.position += 1;
        let mut out = String::new();
        loop {
            let start = self.position;
            while self
                .bytes
                .get(self.position)
                .is_some_and(|&byte| byte != b'"' && byte != b'\\')
            {
                self.position += 1;
            }
            // The input is a &str and we split only at ASCII bytes, so this is valid UTF-8.
            out.push_str(std::str::from_utf8(&self.bytes[start..self.position]).expect("utf-8"));
            match self.bytes.get(self.position) {
                Some(b'"') => {
                    self.position += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.position += 1;
                    out.push(self.escape()?);
                }
                _ => return Err(self.error("closing '\"'")),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        let Some(&byte) = self.bytes.get(self.position) else {
            return Err(self.error("an escape"));
        };
        self.position += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = self
                    .bytes
                    .get(self.position..self.position + 4)
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .and_then(|digits| u32::from_str_radix(digits, 16).ok())
                    .ok_or_else(|| self.error("4 hex digits"))?;
                self.position += 4;
                // Surrogate pairs do not occur in fio's output; map a lone one to U+FFFD.
                char::from_u32(hex).unwrap_or('\u{fffd}')
            }
            _ => return Err(self.error("a valid escape")),
        })
    }

    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.position;
        while self
            .bytes
            .get(self.position)
            .is_some_and(|byte| matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.position += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.position])
            .ok()
            .and_then(|digits| digits.parse::<f64>().ok())
            .map(Json::Number)
            .ok_or(ParseError {
                position: start,
                expected: "a number",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_documents_and_writes_them_back() {
        let text = r#" {"jobs": [{"write": {"bw_bytes": 1.5e8, "ok": true, "n": null}}],
                         "name": "a\"b\\c\u0041", "empty": {}, "list": []} "#;
        let value = parse(text).expect("valid");
        assert_eq!(
            value
                .path(&["jobs"])
                .and_then(Json::as_array)
                .and_then(|jobs| jobs[0].path(&["write", "bw_bytes"]))
                .and_then(Json::as_f64),
            Some(1.5e8)
        );
        assert_eq!(value.get("name"), Some(&Json::String("a\"b\\cA".into())));
        assert_eq!(parse(&value.to_string()), Ok(value));
    }

    #[test]
    fn rejects_malformed_documents() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "\"open",
            "tru",
            "1 2",
            "{\"a\":-}",
        ] {
            assert!(parse(text).is_err(), "{text:?} must not parse");
        }
        let deep = "[".repeat(DEPTH_MAX + 2) + &"]".repeat(DEPTH_MAX + 2);
        assert!(parse(&deep).is_err());
    }
}
