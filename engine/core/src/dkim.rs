//! DKIM signing (RFC 6376) with `relaxed/relaxed` canonicalization.
//!
//! A [`DkimSigner`] is built once per sending domain: it parses the private key and
//! precomputes the static part of the `DKIM-Signature` field (`v`, `a`, `c`, `d`, `s`).
//! [`DkimSigner::sign`] then canonicalizes one message, hashes it and returns it with the
//! `DKIM-Signature:` field prepended. Signing is pure: the caller supplies the `t=` timestamp.
//!
//! * Algorithms: `rsa-sha256` (RSASSA-PKCS1-v1_5, PKCS#1 or PKCS#8 PEM, ≥ 1024 bits) and
//!   `ed25519-sha256` (RFC 8463, PKCS#8 PEM). Both are deterministic (RSA uses blinding,
//!   which does not change the signature).
//! * Signed fields (`h=`): those of [`SIGNED_HEADERS`] present in the message, in that
//!   order, each listed once (the bottom-most instance is signed, RFC 6376 §5.4.2).
//! * No `l=` (the whole body is signed), no `i=`, no `x=`.
//! * The field is folded to lines of at most 78 characters: `b=` is split inside its base64
//!   value, `h=` after a colon, other tags are never split (only a `d=`/`s=` tag longer than a
//!   line can exceed 78).
//!
//! Messages must use CRLF line endings only (a bare CR or LF is an error: verifiers would
//! canonicalize it differently).

use std::fmt;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::Signer as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedDigestSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::header::{base64_into, MAX_HEADER_LINE};

/// Header fields signed when present, in `h=` order (lowercase).
pub const SIGNED_HEADERS: [&str; 9] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "content-type",
];

/// Minimum accepted RSA modulus size in bits (RFC 8301 §3.2).
pub const MIN_RSA_BITS: usize = 1024;
/// `t=` is at most 12 digits (RFC 6376 §3.5).
pub const MAX_TIMESTAMP: u64 = 999_999_999_999;

/// Batches of at least this many messages are signed on several threads.
pub const PARALLEL_THRESHOLD: usize = 32;

/// Maximum length of a `d=` domain (RFC 1035).
const MAX_DOMAIN_LEN: usize = 253;
/// Upper bound of the length of the `DKIM-Signature` field (RSA-4096, all headers).
const FIELD_CAPACITY: usize = 1024;

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256`: RSASSA-PKCS1-v1_5 with SHA-256.
    RsaSha256,
    /// `ed25519-sha256`: Ed25519 over the SHA-256 hash (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// Parse an `a=` tag value (`rsa-sha256` or `ed25519-sha256`, case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        if name.eq_ignore_ascii_case("rsa-sha256") {
            Ok(Algorithm::RsaSha256)
        } else if name.eq_ignore_ascii_case("ed25519-sha256") {
            Ok(Algorithm::Ed25519Sha256)
        } else {
            Err(Error::Dkim(format!(
                "unknown DKIM algorithm {name:?}: expected \"rsa-sha256\" or \"ed25519-sha256\""
            )))
        }
    }
}

#[derive(Clone)]
enum Key {
    Rsa(Box<RsaSigningKey<Sha256>>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// DKIM signer of one sending domain and selector (`relaxed/relaxed`, SHA-256).
#[derive(Clone)]
pub struct DkimSigner {
    algorithm: Algorithm,
    domain: String,
    selector: String,
    key: Key,
    /// The folded static start of the field: `DKIM-Signature: v=1; a=..; c=..; d=..; s=..;`.
    prefix: Vec<u8>,
    /// Column at the end of `prefix`.
    prefix_col: usize,
    /// The DNS TXT record value publishing the public key.
    dns_record: String,
}

impl fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("DkimSigner")
            .field("algorithm", &self.algorithm)
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

fn dkim_err(message: impl Into<String>) -> Error {
    Error::Dkim(message.into())
}

/// Check a `d=`/`s=` value: dot-separated labels of ASCII letters, digits, `-` and `_`, each
/// 1..=63 chars and not starting or ending with `-`; at most 253 chars in all.
fn validate_domain(what: &str, name: &str) -> Result<()> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.is_empty() && name.len() <= MAX_DOMAIN_LEN && name.split('.').all(label_ok) {
        Ok(())
    } else {
        let hint = if name.is_ascii() {
            ""
        } else {
            " (use the A-label/punycode form)"
        };
        Err(dkim_err(format!("invalid DKIM {what} {name:?}{hint}")))
    }
}

fn parse_key(algorithm: Algorithm, pem: &str) -> Result<(Key, String)> {
    let pem = pem.trim();
    let mut record = String::with_capacity(512);
    match algorithm {
        Algorithm::RsaSha256 => {
            let key = if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
                rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                    .map_err(|e| dkim_err(format!("invalid PKCS#1 RSA private key: {e}")))?
            } else {
                rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| {
                    dkim_err(format!(
                        "invalid RSA private key (expected an unencrypted PKCS#1 or PKCS#8 \
                         PEM): {e}"
                    ))
                })?
            };
            let bits = key.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(dkim_err(format!(
                    "RSA key of {bits} bits is too small (minimum {MIN_RSA_BITS})"
                )));
            }
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| dkim_err(format!("cannot encode the RSA public key: {e}")))?;
            record.push_str("v=DKIM1; k=rsa; p=");
            push_base64(&mut record, spki.as_bytes());
            Ok((Key::Rsa(Box::new(RsaSigningKey::new(key))), record))
        }
        Algorithm::Ed25519Sha256 => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
                dkim_err(format!(
                    "invalid Ed25519 private key (expected an unencrypted PKCS#8 PEM): {e}"
                ))
            })?;
            record.push_str("v=DKIM1; k=ed25519; p=");
            push_base64(&mut record, key.verifying_key().as_bytes());
            Ok((Key::Ed25519(Box::new(key)), record))
        }
    }
}

fn push_base64(out: &mut String, bytes: &[u8]) {
    let mut buf = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    base64_into(&mut buf, bytes);
    // base64 output is ASCII.
    out.extend(buf.iter().map(|&b| char::from(b)));
}

/// Writer of a folded tag list; tracks the column of the current line.
struct Folder<'a> {
    out: &'a mut Vec<u8>,
    col: usize,
}

impl Folder<'_> {
    /// Write ` token` (a token is never split), folding first when it would not fit.
    fn token(&mut self, token: &[u8]) {
        if self.col + 1 + token.len() > MAX_HEADER_LINE {
            self.out.extend_from_slice(b"\r\n");
            self.col = 0;
        }
        self.out.push(b' ');
        self.out.extend_from_slice(token);
        self.col += 1 + token.len();
    }

    /// Append `token` to the current line without a space, folding first when needed
    /// (only valid where FWS is allowed before `token`).
    fn glued(&mut self, token: &[u8]) {
        if self.col + token.len() > MAX_HEADER_LINE {
            self.out.extend_from_slice(b"\r\n ");
            self.col = 1;
        }
        self.out.extend_from_slice(token);
        self.col += token.len();
    }

    /// Write base64 `chars`, split anywhere to fill lines.
    fn base64(&mut self, mut chars: &[u8]) {
        while !chars.is_empty() {
            let room = MAX_HEADER_LINE.saturating_sub(self.col);
            if room == 0 {
                self.out.extend_from_slice(b"\r\n ");
                self.col = 1;
                continue;
            }
            let take = room.min(chars.len());
            self.out.extend_from_slice(&chars[..take]);
            self.col += take;
            chars = &chars[take..];
        }
    }
}

#[inline]
fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Append the relaxed canonical form (RFC 6376 §3.4.2) of the field `name: value` to `out`:
/// lowercase name without trailing WSP, `:`, the value unfolded with WSP runs reduced to one
/// space and trimmed, then CRLF.
pub fn relaxed_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let end = name.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1);
    out.extend(name[..end].iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let mut started = false;
    let mut space = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = started,
            _ => {
                if space {
                    out.push(b' ');
                    space = false;
                }
                out.push(b);
                started = true;
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn bare_line_break() -> Error {
    dkim_err("message contains a bare CR or LF (DKIM signing requires CRLF line endings)")
}

/// Feed the relaxed canonical form (RFC 6376 §3.4.4) of `body` to `sink`: WSP runs become
/// one space, WSP at line ends is removed, empty lines at the end are dropped, and a final
/// line without CRLF gets one (as SMTP transmission adds it). An empty body stays empty.
pub fn relaxed_body(body: &[u8], mut sink: impl FnMut(&[u8])) -> Result<()> {
    let mut blank_lines = 0usize;
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && rest[i - 1] == b'\r' => (&rest[..i - 1], &rest[i + 1..]),
            Some(_) => return Err(bare_line_break()),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let end = line.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1);
        let line = &line[..end];
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        if line.contains(&b'\r') {
            return Err(bare_line_break());
        }
        for _ in 0..blank_lines {
            sink(b"\r\n");
        }
        blank_lines = 0;
        // The line ends with a non-WSP byte, so every WSP run is followed by one.
        let mut start = 0;
        let mut i = 0;
        while i < line.len() {
            if is_wsp(line[i]) {
                let mut j = i + 1;
                while is_wsp(line[j]) {
                    j += 1;
                }
                if j - i > 1 || line[i] == b'\t' {
                    sink(&line[start..i]);
                    sink(b" ");
                    start = j;
                }
                i = j;
            } else {
                i += 1;
            }
        }
        sink(&line[start..]);
        sink(b"\r\n");
    }
    Ok(())
}

/// The header fields of a message among [`SIGNED_HEADERS`] (bottom-most instance of each),
/// and the body.
struct Parsed<'a> {
    /// `(name, value)` per [`SIGNED_HEADERS`] entry; `value` excludes the final CRLF.
    fields: [Option<(&'a [u8], &'a [u8])>; SIGNED_HEADERS.len()],
    body: &'a [u8],
}

fn parse(message: &[u8]) -> Result<Parsed<'_>> {
    let mut fields = [None; SIGNED_HEADERS.len()];
    let mut pos = 0;
    let body = loop {
        if message[pos..].starts_with(b"\r\n") {
            break &message[pos + 2..];
        }
        if pos == message.len() {
            break &message[pos..];
        }
        // One field: up to a CRLF not followed by WSP (or the end of the message).
        let start = pos;
        let end = loop {
            match message[pos..].iter().position(|&b| b == b'\n') {
                None => {
                    pos = message.len();
                    break message.len();
                }
                Some(i) => {
                    let lf = pos + i;
                    if lf == 0 || message[lf - 1] != b'\r' {
                        return Err(bare_line_break());
                    }
                    pos = lf + 1;
                    if !message.get(pos).copied().is_some_and(is_wsp) {
                        break lf - 1;
                    }
                }
            }
        };
        let field = &message[start..end];
        if field.last() == Some(&b'\r') || field.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
        {
            return Err(bare_line_break());
        }
        let colon = field.iter().position(|&b| b == b':');
        let (name, value) = match colon {
            Some(c) if c > 0 && !is_wsp(field[0]) => (&field[..c], &field[c + 1..]),
            _ => {
                return Err(dkim_err(format!(
                    "malformed header line {:?}",
                    String::from_utf8_lossy(&field[..field.len().min(80)])
                )))
            }
        };
        let end = name.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1);
        let trimmed = &name[..end];
        if let Some(k) = SIGNED_HEADERS
            .iter()
            .position(|h| h.as_bytes().eq_ignore_ascii_case(trimmed))
        {
            fields[k] = Some((name, value));
        }
    };
    Ok(Parsed { fields, body })
}

impl DkimSigner {
    /// Parse the key and precompute the static part of the signature field.
    ///
    /// `domain` (`d=`) and `selector` (`s=`) are ASCII DNS names; `private_key_pem` is an
    /// unencrypted PEM: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`) for RSA
    /// (≥ [`MIN_RSA_BITS`] bits), PKCS#8 for Ed25519.
    pub fn new(
        domain: &str,
        selector: &str,
        private_key_pem: &str,
        algorithm: Algorithm,
    ) -> Result<Self> {
        validate_domain("domain", domain)?;
        validate_domain("selector", selector)?;
        let (key, dns_record) = parse_key(algorithm, private_key_pem)?;
        let mut prefix = Vec::with_capacity(128);
        prefix.extend_from_slice(b"DKIM-Signature:");
        let mut f = Folder {
            out: &mut prefix,
            col: "DKIM-Signature:".len(),
        };
        f.token(b"v=1;");
        f.token(format!("a={};", algorithm.name()).as_bytes());
        f.token(b"c=relaxed/relaxed;");
        f.token(format!("d={domain};").as_bytes());
        f.token(format!("s={selector};").as_bytes());
        let prefix_col = f.col;
        Ok(DkimSigner {
            algorithm,
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key,
            prefix,
            prefix_col,
            dns_record,
        })
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The TXT record value to publish at `{selector}._domainkey.{domain}`
    /// (`v=DKIM1; k=rsa; p=<SPKI base64>` or `v=DKIM1; k=ed25519; p=<raw key base64>`).
    pub fn dns_record(&self) -> &str {
        &self.dns_record
    }

    /// The complete `DKIM-Signature` field (folded, CRLF-terminated) for `message`.
    pub fn signature_field(&self, message: &[u8], timestamp: u64) -> Result<Vec<u8>> {
        if timestamp > MAX_TIMESTAMP {
            return Err(dkim_err(format!(
                "DKIM timestamp {timestamp} is out of range (at most 12 digits)"
            )));
        }
        let parsed = parse(message)?;
        if parsed.fields[0].is_none() {
            return Err(dkim_err("message has no From header field to sign"));
        }

        let mut body_hash = Sha256::new();
        relaxed_body(parsed.body, |chunk| body_hash.update(chunk))?;
        let mut bh = Vec::with_capacity(44);
        base64_into(&mut bh, &body_hash.finalize());

        let mut field = Vec::with_capacity(FIELD_CAPACITY);
        field.extend_from_slice(&self.prefix);
        let mut f = Folder {
            out: &mut field,
            col: self.prefix_col,
        };
        f.token(format!("t={timestamp};").as_bytes());
        let mut first = true;
        let last = parsed.fields.iter().rposition(Option::is_some).unwrap_or(0);
        for (k, name) in SIGNED_HEADERS.iter().enumerate() {
            if parsed.fields[k].is_none() {
                continue;
            }
            let sep: &[u8] = if k == last { b";" } else { b":" };
            let token = [name.as_bytes(), sep].concat();
            if first {
                f.token(&[b"h=", &token[..]].concat());
                first = false;
            } else {
                f.glued(&token);
            }
        }
        // `bh=` (48 chars) is never split, for verifiers that mishandle FWS inside it.
        f.token(&[b"bh=", &bh[..], b";"].concat());
        f.token(b"b=");
        let b_col = f.col;
        let canonical_end = field.len();

        let mut hashed = Vec::with_capacity(2048);
        for (name, value) in parsed.fields.iter().flatten() {
            relaxed_header(&mut hashed, name, value);
        }
        let name_len = "DKIM-Signature".len();
        relaxed_header(
            &mut hashed,
            &field[..name_len],
            &field[name_len + 1..canonical_end],
        );
        hashed.truncate(hashed.len() - 2);
        let mut hasher = Sha256::new();
        hasher.update(&hashed);

        let signature: Vec<u8> = match &self.key {
            Key::Rsa(key) => key.sign_digest_with_rng(&mut OsRng, hasher).to_vec(),
            Key::Ed25519(key) => key.sign(&hasher.finalize()).to_bytes().to_vec(),
        };
        let mut b = Vec::with_capacity(signature.len().div_ceil(3) * 4);
        base64_into(&mut b, &signature);
        Folder {
            out: &mut field,
            col: b_col,
        }
        .base64(&b);
        field.extend_from_slice(b"\r\n");
        Ok(field)
    }

    /// `message` with the `DKIM-Signature` field prepended.
    pub fn sign(&self, message: &[u8], timestamp: u64) -> Result<Vec<u8>> {
        let field = self.signature_field(message, timestamp)?;
        let mut out = Vec::with_capacity(field.len() + message.len());
        out.extend_from_slice(&field);
        out.extend_from_slice(message);
        Ok(out)
    }

    /// Sign every message (same timestamp); batches of at least [`PARALLEL_THRESHOLD`]
    /// messages are split across the available cores. On error, the error of the first
    /// failing message (in order) is returned.
    pub fn sign_batch<M: AsRef<[u8]> + Sync>(
        &self,
        messages: &[M],
        timestamp: u64,
    ) -> Result<Vec<Vec<u8>>> {
        let threads = if messages.len() >= PARALLEL_THRESHOLD {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            1
        };
        crate::parallel::map_chunks(messages, threads, |chunk| {
            chunk
                .iter()
                .map(|m| self.sign(m.as_ref(), timestamp))
                .collect()
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    /// RFC 8463 Appendix A key (PKCS#8 of the seed `nWGxne/9...`).
    pub(crate) const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
        -----END PRIVATE KEY-----\n";
    const ED_PUB: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const RFC8463_MSG: &[u8] = b"From: Joe SixPack <joe@football.example.com>\r\n\
        To: Suzie Q <suzie@shopping.example.net>\r\n\
        Subject: Is dinner ready?\r\n\
        Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
        Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\
        \r\n\
        Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";

    fn body_canon(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relaxed_body(body, |c| out.extend_from_slice(c)).unwrap();
        out
    }

    fn header_canon(name: &str, value: &str) -> String {
        let mut out = Vec::new();
        relaxed_header(&mut out, name.as_bytes(), value.as_bytes());
        String::from_utf8(out).unwrap()
    }

    fn b64_decode(s: &str) -> Vec<u8> {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let vals: Vec<u32> = s
            .bytes()
            .filter(|b| !b" \t\r\n=".contains(b))
            .map(|b| B64.iter().position(|&x| x == b).unwrap() as u32)
            .collect();
        let mut out = Vec::new();
        for c in vals.chunks(4) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
            out.extend(&n.to_be_bytes()[1..c.len()]);
        }
        out
    }

    /// Tags of a signature field (FWS removed from values).
    fn tags(field: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(field).unwrap();
        let value = text.split_once(':').unwrap().1;
        value
            .split(';')
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                let (k, v) = t.split_once('=').unwrap();
                let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
                (k.trim().to_owned(), v)
            })
            .collect()
    }

    fn tag(field: &[u8], name: &str) -> String {
        tags(field).into_iter().find(|(k, _)| k == name).unwrap().1
    }

    /// Independent verification: recompute the signed data from `h=` and check `b=`.
    fn verify(signed: &[u8], check: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        let end = {
            let mut i = 0;
            loop {
                let lf = i + signed[i..].iter().position(|&b| b == b'\n').unwrap();
                i = lf + 1;
                if !is_wsp(signed[i]) {
                    break i;
                }
            }
        };
        let (field, message) = signed.split_at(end);
        let parsed = parse(message).unwrap();
        let mut body = Sha256::new();
        relaxed_body(parsed.body, |c| body.update(c)).unwrap();
        if b64_decode(&tag(field, "bh")) != body.finalize().to_vec() {
            return false;
        }
        let mut data = Vec::new();
        for name in tag(field, "h").split(':') {
            let k = SIGNED_HEADERS.iter().position(|h| *h == name).unwrap();
            let (n, v) = parsed.fields[k].unwrap();
            relaxed_header(&mut data, n, v);
        }
        let text = std::str::from_utf8(field).unwrap();
        let b_at = text.rfind("b=").unwrap();
        relaxed_header(
            &mut data,
            b"DKIM-Signature",
            &field["DKIM-Signature:".len()..b_at + 2],
        );
        data.truncate(data.len() - 2);
        check(&data, &b64_decode(&tag(field, "b")))
    }

    fn ed_verifier(data: &[u8], sig: &[u8]) -> bool {
        let key: [u8; 32] = b64_decode(ED_PUB).try_into().unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
        key.verify(&Sha256::digest(data), &sig).is_ok()
    }

    /// Fixed test keys (key generation is slow in debug builds).
    const RSA1024_PKCS1: &str = include_str!("../testdata/dkim_rsa1024_pkcs1.pem");
    const RSA2048_PKCS8: &str = include_str!("../testdata/dkim_rsa2048_pkcs8.pem");
    const RSA512_PKCS1: &str = include_str!("../testdata/dkim_rsa512_pkcs1.pem");

    fn rsa_checker(pem: &str) -> impl Fn(&[u8], &[u8]) -> bool {
        let key = match rsa::RsaPrivateKey::from_pkcs1_pem(pem) {
            Ok(key) => key,
            Err(_) => rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap(),
        };
        let public = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.to_public_key());
        move |data, sig| {
            let sig = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
            public.verify(data, &sig).is_ok()
        }
    }

    #[test]
    fn rfc6376_3_4_5_example() {
        // Headers "A: <SP> X <SP>" and "B <SP> : <SP> Y <TAB> CRLF <TAB> Z <SP><SP>".
        assert_eq!(header_canon("A", " X "), "a:X\r\n");
        assert_eq!(header_canon("B ", " Y\t\r\n\tZ  "), "b:Y Z\r\n");
        let body = b" C \r\nD \t E\r\n\r\n\r\n";
        assert_eq!(body_canon(body), b" C\r\nD E\r\n");
        // the same through the message parser
        let msg = b"A: X \r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (_, body) = msg.split_at(msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
        assert_eq!(body_canon(body), b" C\r\nD E\r\n");
    }

    #[test]
    fn relaxed_body_edge_cases() {
        assert_eq!(body_canon(b""), b"");
        assert_eq!(body_canon(b"\r\n\r\n \t\r\n"), b"");
        assert_eq!(body_canon(b"abc"), b"abc\r\n");
        assert_eq!(body_canon(b"abc \t"), b"abc\r\n");
        assert_eq!(body_canon(b"a\r\n  "), b"a\r\n");
        assert_eq!(
            body_canon(b"\r\n\ta\tb\r\n \r\nc\r\n"),
            b"\r\n a b\r\n\r\nc\r\n"
        );
        assert_eq!(body_canon("é  ü\r\n".as_bytes()), "é ü\r\n".as_bytes());
        for bad in [&b"a\nb"[..], b"a\rb\r\n", b"a\r", b"\n"] {
            assert!(relaxed_body(bad, |_| ()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc8463_body_hash_and_signature() {
        let parsed = parse(RFC8463_MSG).unwrap();
        let mut h = Sha256::new();
        relaxed_body(parsed.body, |c| h.update(c)).unwrap();
        let mut bh = Vec::new();
        base64_into(&mut bh, &h.finalize());
        assert_eq!(bh, b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
        // The RFC's own signature verifies against our header canonicalization.
        let field = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
            d=football.example.com; i=@football.example.com;\r\n \
            q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
            subject : date : message-id : from : subject : date;\r\n \
            bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=";
        let b = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
        let mut data = Vec::new();
        for k in 0..5 {
            let (n, v) = parsed.fields[k].unwrap();
            relaxed_header(&mut data, n, v);
        }
        relaxed_header(&mut data, b"DKIM-Signature", &field.as_bytes()[15..]);
        data.truncate(data.len() - 2);
        assert!(ed_verifier(&data, &b64_decode(b)));
        data.push(b'x');
        assert!(!ed_verifier(&data, &b64_decode(b)));
    }

    fn assert_folded(field: &[u8]) {
        let text = std::str::from_utf8(field).unwrap();
        assert!(text.starts_with("DKIM-Signature: v=1; a="));
        assert!(text.ends_with("\r\n"));
        for (i, line) in text[..text.len() - 2].split("\r\n").enumerate() {
            assert!(line.len() <= MAX_HEADER_LINE, "{line:?} in\n{text}");
            assert!(!line.contains(['\r', '\n']));
            if i > 0 {
                assert!(line.starts_with(' ') && line.trim() != "", "{text}");
            }
        }
    }

    #[test]
    fn ed25519_signs_deterministically_and_verifies() {
        let signer = DkimSigner::new(
            "football.example.com",
            "brisbane",
            ED_PEM,
            Algorithm::Ed25519Sha256,
        )
        .unwrap();
        assert_eq!(
            signer.dns_record(),
            format!("v=DKIM1; k=ed25519; p={ED_PUB}")
        );
        let a = signer.sign(RFC8463_MSG, 1_528_637_909).unwrap();
        assert_eq!(a, signer.sign(RFC8463_MSG, 1_528_637_909).unwrap());
        assert!(a.ends_with(RFC8463_MSG));
        let field = &a[..a.len() - RFC8463_MSG.len()];
        assert_folded(field);
        assert_eq!(
            tags(field)
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["v", "a", "c", "d", "s", "t", "h", "bh", "b"]
        );
        assert_eq!(tag(field, "h"), "from:to:subject:date:message-id");
        assert_eq!(tag(field, "t"), "1528637909");
        assert_eq!(
            tag(field, "bh"),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
        );
        assert!(verify(&a, ed_verifier));
        // tampering breaks it
        let tampered: Vec<u8> = String::from_utf8(a.clone())
            .unwrap()
            .replace("dinner", "lunch")
            .into_bytes();
        assert!(!verify(&tampered, ed_verifier));
        let other_time = signer.sign(RFC8463_MSG, 1).unwrap();
        assert_ne!(other_time, a);
        assert!(verify(&other_time, ed_verifier));
    }

    #[test]
    fn rsa_pkcs1_and_pkcs8_sign_deterministically_and_verify() {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(RSA1024_PKCS1).unwrap();
        let pkcs8 = key.to_pkcs8_pem(Default::default()).unwrap();
        let a = DkimSigner::new("x.io", "s1", RSA1024_PKCS1, Algorithm::RsaSha256).unwrap();
        let b = DkimSigner::new("x.io", "s1", &pkcs8, Algorithm::RsaSha256).unwrap();
        assert!(a.dns_record().starts_with("v=DKIM1; k=rsa; p=MI"));
        assert_eq!(a.dns_record(), b.dns_record());
        let sa = a.sign(RFC8463_MSG, 42).unwrap();
        assert_eq!(sa, b.sign(RFC8463_MSG, 42).unwrap());
        assert_folded(&sa[..sa.len() - RFC8463_MSG.len()]);
        let check = rsa_checker(RSA1024_PKCS1);
        assert!(verify(&sa, &check));
        let mut bad = sa.clone();
        bad.extend_from_slice(b"x\r\n");
        assert!(!verify(&bad, &check));
    }

    #[test]
    fn signed_headers_order_presence_and_bottom_most() {
        let signer = DkimSigner::new("a.b", "s", ED_PEM, Algorithm::Ed25519Sha256).unwrap();
        let msg = b"content-type: text/plain\r\nX-Other: 1\r\nSubject: one\r\n\
            FROM : a@b\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
            List-Unsubscribe: <https://u>\r\nSubject: two\r\n\r\nbody\r\n";
        let signed = signer.sign(msg, 7).unwrap();
        let field = &signed[..signed.len() - msg.len()];
        assert_eq!(
            tag(field, "h"),
            "from:subject:list-unsubscribe:list-unsubscribe-post:content-type"
        );
        assert!(verify(&signed, ed_verifier));
        // the bottom-most Subject is the signed one
        let text = String::from_utf8(signed.clone()).unwrap();
        assert!(!verify(
            &text.replace("Subject: two", "Subject: 2").into_bytes(),
            ed_verifier
        ));
        assert!(verify(
            &text.replace("Subject: one", "Subject: 1").into_bytes(),
            ed_verifier
        ));
        // header-only message and empty body
        let signed = signer.sign(b"From: a@b\r\n", 7).unwrap();
        assert!(verify(&signed, ed_verifier));
        assert!(signer.sign(b"From: a@b", 7).is_ok());
    }

    #[test]
    fn folding_long_values() {
        let domain = format!("{}.example.com", "d".repeat(50));
        let selector = "s".repeat(60);
        let signer =
            DkimSigner::new(&domain, &selector, RSA2048_PKCS8, Algorithm::RsaSha256).unwrap();
        let msg = b"From: a@b\r\nTo: c@d\r\nSubject: s\r\nDate: d\r\nMessage-ID: <i>\r\n\
            MIME-Version: 1.0\r\nList-Unsubscribe: <u>\r\n\
            List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nContent-Type: text/plain\r\n\r\nx\r\n";
        let signed = signer.sign(msg, MAX_TIMESTAMP).unwrap();
        let field = &signed[..signed.len() - msg.len()];
        assert_folded(field);
        assert_eq!(tag(field, "h"), SIGNED_HEADERS.join(":"));
        assert_eq!(tag(field, "d"), domain);
        assert_eq!(tag(field, "s"), selector);
        assert_eq!(b64_decode(&tag(field, "b")).len(), 256);
        assert!(verify(&signed, rsa_checker(RSA2048_PKCS8)));
        // Folder unit checks
        let mut out = b"X:".to_vec();
        let mut f = Folder {
            out: &mut out,
            col: 2,
        };
        f.token(&[b'a'; 70]);
        f.token(b"bb");
        f.base64(&[b'c'; 200]);
        f.glued(b";");
        let text = String::from_utf8(out).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= MAX_HEADER_LINE));
        assert_eq!(text.replace("\r\n", "").matches('c').count(), 200);
    }

    #[test]
    fn invalid_inputs() {
        let err = |r: Result<DkimSigner>| match r {
            Err(Error::Dkim(m)) => m,
            other => panic!("expected Dkim error, got {other:?}"),
        };
        let ed = Algorithm::Ed25519Sha256;
        for d in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "ex\u{e4}mple.com",
            "a;b",
            &"a".repeat(64),
        ] {
            err(DkimSigner::new(d, "s", ED_PEM, ed));
            err(DkimSigner::new("a.b", d, ED_PEM, ed));
        }
        assert!(err(DkimSigner::new("exämple.com", "s", ED_PEM, ed)).contains("punycode"));
        err(DkimSigner::new("a.b", "s", "not a key", ed));
        err(DkimSigner::new("a.b", "s", ED_PEM, Algorithm::RsaSha256));
        assert!(err(DkimSigner::new(
            "a.b",
            "s",
            RSA512_PKCS1,
            Algorithm::RsaSha256
        ))
        .contains("512"));
        assert!(Algorithm::parse("rsa-sha1").is_err());
        assert_eq!(Algorithm::parse("ED25519-SHA256").unwrap(), ed);

        let signer = DkimSigner::new("a.b", "s", &format!("  {ED_PEM}  "), ed).unwrap();
        assert!(!format!("{signer:?}").contains("PRIVATE"));
        let sign_err = |m: &[u8], t: u64| match signer.sign(m, t) {
            Err(Error::Dkim(m)) => m,
            other => panic!("expected Dkim error, got {other:?}"),
        };
        sign_err(b"To: a@b\r\n\r\nx\r\n", 1);
        sign_err(b"From: a@b\r\n\r\nx\r\n", MAX_TIMESTAMP + 1);
        sign_err(b"From: a@b\nTo: c\r\n\r\n", 1);
        sign_err(b"From: a@b\r\n\r\nx\ny\r\n", 1);
        sign_err(b"From: a\r@b\r\n\r\n", 1);
        sign_err(b"From: a@b\r\nno colon\r\n\r\n", 1);
        sign_err(b" From: a@b\r\n\r\n", 1);
        sign_err(b"", 1);
    }

    #[test]
    fn batch_matches_single() {
        let signer = DkimSigner::new("a.b", "s", ED_PEM, Algorithm::Ed25519Sha256).unwrap();
        let msgs: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("From: a@b\r\nSubject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
            .collect();
        let batch = signer.sign_batch(&msgs, 5).unwrap();
        for (m, s) in msgs.iter().zip(&batch) {
            assert_eq!(*s, signer.sign(m, 5).unwrap());
        }
        let mut bad = msgs.clone();
        bad[70] = b"To: x\r\n\r\n".to_vec();
        bad[90] = b"bad\n".to_vec();
        assert!(signer
            .sign_batch(&bad, 5)
            .unwrap_err()
            .to_string()
            .contains("no From"));
    }
}
