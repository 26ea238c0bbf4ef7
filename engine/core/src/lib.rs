//! Pure-Rust core of the mailcore email-campaign engine.
//!
//! * [`money`]: integer micro-dollar arithmetic, formatting and parsing.
//! * [`template`]: the merge-tag template language (`{{ path | default: "x" }}`).
//! * [`audience`]: roaring-bitmap audience index (tags × statuses); [`json`] parses the
//!   stored tag arrays for its bulk load.
//! * [`mime`]: per-recipient MIME message rendering ([`header`], [`qp`] and [`text`] helpers;
//!   [`tracking`] instruments the HTML part for open and click tracking; [`dkim`] signs it).
//! * [`links`]: signed link tokens (unsubscribe, tracking) for a batch of recipients.
//! * [`smtp`]: SMTP content framing (newlines, dot-stuffing) in one pass; [`pipeline`]: the
//!   steady state of a DATA pipeline across messages, sans-IO; [`transport`] runs it on
//!   sockets the Python client hands over, every connection's from one driver thread (the
//!   only code here that touches a socket).
//!
//! This crate has no Python dependency; `engine/py` is a thin pyo3 binding over it.

// Unsafe only where `transport` borrows the Python client's socket by its descriptor.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod audience;
pub mod dkim;
pub mod error;
pub mod header;
pub mod html;
pub mod json;
pub mod links;
pub mod mime;
pub mod money;
mod parallel;
pub mod pipeline;
pub mod qp;
pub mod smtp;
pub mod template;
pub mod text;
mod textpart;
pub mod tracking;
pub mod transport;

pub use audience::{AudienceIndex, ContactId, Query, Status};
pub use dkim::{Algorithm as DkimAlgorithm, DkimSigner};
pub use error::{Error, Result};
pub use mime::{MessageRenderer, MessageSpec, Recipient, RenderPlan};
pub use money::{
    checked_decimals, cost_micros, format_micros, parse_usd, MICROS_PER_USD, PRICE_PER_EMAIL_MICROS,
};
pub use template::{html_escape_into, Escape, FieldPath, Segment, Template};
pub use tracking::Tracking;
