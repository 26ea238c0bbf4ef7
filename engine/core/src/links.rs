//! Signed link tokens: `base64url(payload ‖ HMAC-SHA256(key, payload)[..16])`, unpadded,
//! where the payload is a kind byte and LEB128 varints. The same tokens as
//! `mailcore.tokens.TokenSigner.sign_payload` makes; a batch of them here, for the links
//! of every message a render call writes.

use sha2::{Digest, Sha256};

const MAC_BYTES: usize = 16;
const URLSAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// HMAC-SHA256 under one key (RFC 2104), its keyed inner and outer states computed once.
#[derive(Clone)]
pub struct LinkSigner {
    inner: Sha256,
    outer: Sha256,
}

impl LinkSigner {
    /// The signer of `key` (hashed first when longer than the 64-byte block, per RFC 2104).
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut hash = Sha256::new();
            hash.update(block.map(|b| b ^ byte));
            hash
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5C),
        }
    }

    /// HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// Appends the token of `payload` to `out`.
    pub fn token_into(&self, payload: &[u8], out: &mut String) {
        let mac = self.mac(payload);
        let mut raw = Vec::with_capacity(payload.len() + MAC_BYTES);
        raw.extend_from_slice(payload);
        raw.extend_from_slice(&mac[..MAC_BYTES]);
        base64url_into(&raw, out);
    }

    /// `head` followed by the token of `prefix ‖ varint(n)`, for each of `numbers`.
    pub fn sign_many(&self, prefix: &[u8], numbers: &[u64], head: &str) -> Vec<String> {
        let mut payload = prefix.to_vec();
        numbers
            .iter()
            .map(|&n| {
                payload.truncate(prefix.len());
                varint_into(n, &mut payload);
                let mut out =
                    String::with_capacity(head.len() + (payload.len() + MAC_BYTES) * 4 / 3 + 3);
                out.push_str(head);
                self.token_into(&payload, &mut out);
                out
            })
            .collect()
    }
}

/// Unsigned LEB128 of `n`, appended to `out`.
pub fn varint_into(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// URL-safe base64 of `bytes` without padding, appended to `out`.
pub fn base64url_into(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(URLSAFE[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (
                u64::MAX,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (n, expected) in cases {
            let mut out = Vec::new();
            varint_into(n, &mut out);
            assert_eq!(out, expected, "{n}");
        }
    }

    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (&[0xFB, 0xFF, 0xBF], "-_-_"),
        ];
        for (bytes, expected) in cases {
            let mut out = String::new();
            base64url_into(bytes, &mut out);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn mac_is_hmac_sha256() {
        // RFC 4231, test cases 2 and 6 (a key longer than the block).
        let signer = LinkSigner::new(b"Jefe");
        let mac = signer.mac(b"what do ya want for nothing?");
        assert_eq!(mac[..8], [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e]);
        let signer = LinkSigner::new(&[0xAA; 131]);
        let mac = signer.mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(mac[..8], [0x60, 0xe4, 0x31, 0x59, 0x1e, 0xe0, 0xb6, 0x7f]);
    }
}
