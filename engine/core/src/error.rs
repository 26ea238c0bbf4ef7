//! The single error type of the engine.

use std::fmt;

/// Every fallible engine operation returns this error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A template failed to compile.
    Template {
        /// Human message without the position, e.g. `unknown field 'foo'`.
        message: String,
        /// The offending field path when the error is about a field.
        field: Option<String>,
        /// Offset, in chars (not bytes), of the `{{` that opens the offending tag.
        offset: usize,
    },
    /// Overflow, negative amount/count, or malformed decimal text.
    Money(String),
    /// Invalid audience-index input (e.g. mismatched batch lengths).
    Audience(String),
    /// Invalid message-rendering input (addresses, headers, missing email, batch lengths).
    Mime(String),
    /// Invalid DKIM configuration (key, domain, selector, algorithm) or unsignable message.
    Dkim(String),
}

/// `Result` specialised to the engine [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Template {
                message, offset, ..
            } => write!(f, "{message} at offset {offset}"),
            Error::Money(m) | Error::Audience(m) | Error::Mime(m) | Error::Dkim(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_template_includes_offset() {
        let e = Error::Template {
            message: "unknown field 'foo'".into(),
            field: Some("foo".into()),
            offset: 12,
        };
        assert_eq!(e.to_string(), "unknown field 'foo' at offset 12");
    }

    #[test]
    fn display_other_variants_are_the_message() {
        assert_eq!(Error::Money("overflow".into()).to_string(), "overflow");
        assert_eq!(Error::Audience("bad".into()).to_string(), "bad");
        assert_eq!(Error::Mime("no email".into()).to_string(), "no email");
        assert_eq!(Error::Dkim("bad key".into()).to_string(), "bad key");
    }
}
