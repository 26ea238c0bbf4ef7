//! A minimal parser for JSON arrays of strings (the stored form of a contact's tags).
//!
//! Accepts exactly RFC 8259 `[ "a", "b" ]` with optional whitespace; strings may use every
//! JSON escape (the two-character ones and `\u` with four hex digits, surrogate pairs
//! combined). Strings without escapes are borrowed from the input.

use std::borrow::Cow;
use std::fmt;

/// Why a JSON string array was rejected, and where (byte offset into the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What was wrong.
    pub message: &'static str,
    /// Byte offset of the problem.
    pub offset: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Parse `input` as a JSON array of strings.
pub fn parse_string_array(input: &[u8]) -> Result<Vec<Cow<'_, str>>, JsonError> {
    let mut out = Vec::new();
    parse_string_array_into(input, &mut out)?;
    Ok(out)
}

/// Parse `input` as a JSON array of strings, appending them to `out`. On error, `out` may
/// hold some of the array's strings.
pub fn parse_string_array_into<'a>(
    input: &'a [u8],
    out: &mut Vec<Cow<'a, str>>,
) -> Result<(), JsonError> {
    let text = validate_utf8(input)?;
    let end = parse_string_array_at(text, 0, out)?;
    let mut p = Parser::new(text, end);
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(())
}

/// `input` as text, or the offset of its first invalid UTF-8 byte. (Validated once, so the
/// strings of a long input of many arrays are slices, not each validated again.)
pub fn validate_utf8(input: &[u8]) -> Result<&str, JsonError> {
    std::str::from_utf8(input).map_err(|e| JsonError {
        message: "invalid UTF-8",
        offset: e.valid_up_to(),
    })
}

/// Parse the JSON array of strings that starts at byte `start` of `text` (after optional
/// whitespace), appending its strings to `out`; returns the offset just past its `]`
/// (whatever follows is not looked at).
pub fn parse_string_array_at<'a>(
    text: &'a str,
    start: usize,
    out: &mut Vec<Cow<'a, str>>,
) -> Result<usize, JsonError> {
    let mut p = Parser::new(text, start);
    p.skip_ws();
    p.expect(b'[', "expected '['")?;
    p.skip_ws();
    if p.peek() == Some(b']') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            out.push(p.string()?);
            p.skip_ws();
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b']') => {
                    p.pos += 1;
                    break;
                }
                _ => return Err(p.err("expected ',' or ']'")),
            }
        }
    }
    Ok(p.pos)
}

struct Parser<'a> {
    text: &'a str,
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, pos: usize) -> Self {
        Parser {
            text,
            input: text.as_bytes(),
            pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn err(&self, message: &'static str) -> JsonError {
        JsonError {
            message,
            offset: self.pos,
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, message: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(message))
        }
    }

    /// `text[start..end]`; both ends are at ASCII delimiters, so always char boundaries.
    fn slice(&self, start: usize, end: usize) -> Result<&'a str, JsonError> {
        self.text.get(start..end).ok_or(JsonError {
            message: "invalid UTF-8",
            offset: start,
        })
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = self.slice(start, self.pos)?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
        let mut buf = String::with_capacity(self.pos - start + 8);
        buf.push_str(self.slice(start, self.pos)?);
        loop {
            let run = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            buf.push_str(self.slice(run, self.pos)?);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(buf));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    buf.push(self.escape()?);
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self) -> Result<char, JsonError> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let at = self.pos - 1;
                self.pos += 1;
                let hi = self.hex4()?;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(JsonError {
                                message: "unpaired surrogate",
                                offset: at,
                            });
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(JsonError {
                                message: "unpaired surrogate",
                                offset: at,
                            });
                        }
                        0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(JsonError {
                            message: "unpaired surrogate",
                            offset: at,
                        })
                    }
                    _ => u32::from(hi),
                };
                // Surrogates are excluded above, so this always succeeds.
                return char::from_u32(code).ok_or(JsonError {
                    message: "invalid \\u escape",
                    offset: at,
                });
            }
            _ => return Err(self.err("invalid escape")),
        };
        self.pos += 1;
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v: u16 = 0;
        for (i, d) in digits.iter().enumerate() {
            let n = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => {
                    return Err(JsonError {
                        message: "invalid hex digit in \\u escape",
                        offset: self.pos + i,
                    })
                }
            };
            v = v << 4 | u16::from(n);
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Vec<String> {
        parse_string_array(input.as_bytes())
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    fn bad(input: &[u8]) -> JsonError {
        parse_string_array(input).expect_err(&format!("{input:?} should be rejected"))
    }

    #[test]
    fn plain_arrays() {
        assert!(ok("[]").is_empty());
        assert!(ok(" [ ] ").is_empty());
        assert_eq!(ok(r#"["a"]"#), ["a"]);
        assert_eq!(ok(r#"["a","bc",""]"#), ["a", "bc", ""]);
        assert_eq!(ok(" [ \"a\" ,\n\t\"b\"\r ] "), ["a", "b"]);
        assert_eq!(ok(r#"["é","日本","😀"]"#), ["é", "日本", "😀"]);
    }

    #[test]
    fn unescaped_strings_are_borrowed() {
        let v = parse_string_array(br#"["abc","a\nb"]"#).unwrap();
        assert!(matches!(v[0], Cow::Borrowed("abc")));
        assert!(matches!(&v[1], Cow::Owned(s) if s == "a\nb"));
    }

    #[test]
    fn escapes() {
        assert_eq!(ok(r#"["\"\\\/\b\f\n\r\t"]"#), ["\"\\/\u{8}\u{c}\n\r\t"]);
        assert_eq!(ok(r#"["x\"y","a\\"]"#), ["x\"y", "a\\"]);
        assert_eq!(ok(r#"["\u0041\u00e9\u00E9\u65e5"]"#), ["Aéé日"]);
        assert_eq!(ok(r#"["\u0000"]"#), ["\0"]);
        assert_eq!(ok(r#"["a\ud83d\ude00b"]"#), ["a😀b"]);
        assert_eq!(ok(r#"["\uD834\uDD1E"]"#), ["𝄞"]);
        assert_eq!(ok(r#"["é\n日"]"#), ["é\n日"]);
    }

    #[test]
    fn malformed() {
        for input in [
            &b""[..],
            b" ",
            b"[",
            b"]",
            b"[\"a\"",
            b"[\"a\",]",
            b"[,\"a\"]",
            b"[\"a\" \"b\"]",
            b"[\"a\"]x",
            b"[\"a\"][]",
            b"[1]",
            b"[null]",
            b"[[\"a\"]]",
            b"{\"a\":1}",
            b"\"a\"",
            b"[\"a]",
            b"[\"a\\\"]",
            b"[\"\\x\"]",
            b"[\"\\u12\"]",
            b"[\"\\u12g4\"]",
            b"[\"\\ud83d\"]",
            b"[\"\\ud83dx\"]",
            b"[\"\\ud83d\\u0041\"]",
            b"[\"\\ude00\"]",
            b"[\"a\nb\"]",
            b"[\"a\tb\"]",
            b"[\"\xff\"]",
            b"[\"\xc3\"]",
            b"[\"a\\n\xff\"]",
        ] {
            bad(input);
        }
        let e = bad(br#"["ab", 7]"#);
        assert_eq!(e.offset, 7);
        assert_eq!(e.to_string(), "expected a string at byte 7");
    }

    #[test]
    fn round_trips_arbitrary_strings() {
        // Encode with a tiny reference encoder that escapes everything it may.
        let samples = [
            "",
            "plain",
            "q\"b\\s/",
            "\u{1}\u{1f}\u{7f}",
            "é日😀𝄞",
            "\u{ffff}",
        ];
        let mut json = String::from("[");
        for (i, s) in samples.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push('"');
            for unit in s.encode_utf16() {
                json.push_str(&format!("\\u{unit:04x}"));
            }
            json.push('"');
        }
        json.push(']');
        assert_eq!(ok(&json), samples);
    }
}
