//! Quoted-printable body encoding (RFC 2045 §6.7).
//!
//! * Line breaks in the input (CRLF, bare CR, bare LF) become hard CRLF breaks.
//! * `=`, control bytes other than tab, and bytes ≥ 0x7F are encoded as `=XX`
//!   (upper-case hex); a space or tab right before a hard break (or the end) is encoded too.
//! * Soft breaks (`=` CRLF) keep every output line ≤ [`MAX_LINE`] chars; an `=XX` triple is
//!   never split.
//! * Defence in depth: a `.` at the start of an output line is written `=2E` (SMTP
//!   dot-stuffing / smuggling) and the `F` of a line starting with `From ` is written `=46`
//!   (mbox munging). Output therefore never contains `=_`, which makes `=_…` a safe
//!   multipart boundary prefix.
//!
//! [`encode`] encodes one buffer. [`QpStream`] encodes a part that arrives in pieces, some
//! of them [`QpChunk`]s encoded once in advance (a template's literal text): such a chunk's
//! encoding assumes it starts a line, so the stream writes a soft break before it unless the
//! line is empty or the chunk starts with a line break. Where a piece ends, the stream
//! decides what needs the next byte (a space or tab before a break, a CR before an LF) when
//! that byte comes, and is conservative where waiting would not pay: a line-start `F` that
//! a piece end cuts short of `From ` is encoded, and a piece's last byte never takes the
//! 76th column. The decoded text is always exactly the concatenated input.

/// Maximum length of an encoded line, excluding the CRLF (RFC 2045).
pub const MAX_LINE: usize = 76;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `SAFE[b]`: byte `b` may be written literally (anywhere but before a hard break).
const SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7F {
        t[b] = b != b'=' as usize;
        b += 1;
    }
    t[b'\t' as usize] = true;
    t
};

/// Quoted-printable encode `input` into a new buffer.
pub fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimate_len(input.len()));
    encode_into(&mut out, input);
    out
}

/// A cheap capacity estimate for encoding `len` mostly-ASCII bytes.
pub fn estimate_len(len: usize) -> usize {
    len + len / 24 + 16
}

/// Quoted-printable encode `input`, appending to `out`. The output ends with CRLF only
/// when the input ends with a line break.
pub fn encode_into(out: &mut Vec<u8>, input: &[u8]) {
    let n = input.len();
    let is_break = |i: usize| i >= n || input[i] == b'\n' || input[i] == b'\r';
    let mut col = 0;
    let mut i = 0;
    while i < n {
        let b = input[i];
        if b == b'\n' || b == b'\r' {
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            continue;
        }
        if col == 0 && (b == b'.' || (b == b'F' && input[i..].starts_with(b"From "))) {
            // Line start: `.` and the `F` of `From ` are always encoded.
            push_escaped(out, b);
            col = 3;
            i += 1;
            continue;
        }
        // Fast path: a run of literal bytes ending before the soft-break column.
        let limit = n.min(i + (MAX_LINE - 1).saturating_sub(col));
        let mut j = i;
        while j + 8 <= limit {
            let word = u64::from_le_bytes(input[j..j + 8].try_into().unwrap_or_default());
            if !all_plain(word) {
                break;
            }
            j += 8;
        }
        while j < limit && SAFE[usize::from(input[j])] {
            j += 1;
        }
        // Whitespace right before a hard break (or the end) must be encoded.
        if j > i && matches!(input[j - 1], b' ' | b'\t') && is_break(j) {
            j -= 1;
        }
        if j > i {
            out.extend_from_slice(&input[i..j]);
            col += j - i;
            i = j;
            continue;
        }
        // Slow path: a single byte.
        let last = is_break(i + 1);
        let literal = SAFE[usize::from(b)] && !(last && (b == b' ' || b == b'\t'));
        let width = if literal { 1 } else { 3 };
        // A byte that is not the last of its line must leave room for the soft-break `=`.
        let max_col = if last { MAX_LINE } else { MAX_LINE - 1 };
        if col + width > max_col {
            out.extend_from_slice(b"=\r\n");
            col = 0;
            continue;
        }
        if literal {
            out.push(b);
        } else {
            push_escaped(out, b);
        }
        col += width;
        i += 1;
    }
}

/// Whether all 8 bytes of `word` are printable ASCII (0x20..=0x7E) other than `=`.
#[inline]
fn all_plain(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let high = word & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let del = has_zero(word ^ (ONES * 0x7F));
    let equals = has_zero(word ^ (ONES * u64::from(b'=')));
    high | below_space | del | equals == 0
}

#[inline]
fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0F)]]);
}

#[inline]
fn is_break_byte(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

#[inline]
fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether the `F` that starts `rest` at a line start must be encoded: `rest` starts with
/// `From `, or ends before it could tell (what follows in the next piece is not known).
#[inline]
fn from_at(rest: &[u8]) -> bool {
    const FROM: &[u8] = b"From ";
    if rest.len() >= FROM.len() {
        rest.starts_with(FROM)
    } else {
        FROM.starts_with(rest)
    }
}

/// Where a [`QpStream`] writes.
pub trait QpSink {
    /// The buffer encoded bytes are appended to.
    fn bytes(&mut self) -> &mut Vec<u8>;
    /// Append `chunk.encoded()[from..]` (a sink may keep a reference instead of copying).
    fn chunk(&mut self, chunk: &QpChunk, from: usize);
}

impl QpSink for Vec<u8> {
    fn bytes(&mut self) -> &mut Vec<u8> {
        self
    }

    fn chunk(&mut self, chunk: &QpChunk, from: usize) {
        self.extend_from_slice(&chunk.qp[from..]);
    }
}

/// Text encoded once, as a [`QpStream`] would encode it from the start of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QpChunk {
    qp: Box<[u8]>,
    /// The first input byte.
    first: u8,
    /// Column after the encoding.
    end_col: usize,
    /// A final space or tab, not encoded yet (see [`QpStream`]).
    pending: Option<u8>,
    /// Whether the input ends with a CR (an LF that follows belongs to its line break).
    ends_cr: bool,
    /// Caller's tag (e.g. the chunk's index in a table), see [`QpChunk::id`].
    id: u32,
}

impl QpChunk {
    /// Encode `raw` (non-empty); `id` is the caller's tag.
    pub fn new(raw: &[u8], id: u32) -> QpChunk {
        debug_assert!(!raw.is_empty());
        let mut stream = QpStream::new();
        let mut qp = Vec::with_capacity(estimate_len(raw.len()));
        stream.write(&mut qp, raw);
        QpChunk {
            qp: qp.into_boxed_slice(),
            first: raw.first().copied().unwrap_or(b'\n'),
            end_col: stream.col,
            pending: stream.pending,
            ends_cr: stream.after_cr,
            id,
        }
    }

    /// The encoded bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.qp
    }

    /// The tag given to [`QpChunk::new`].
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Quoted-printable encoder of one part written in pieces (see the module docs). Call
/// [`QpStream::finish`] after the last piece.
#[derive(Debug, Clone, Default)]
pub struct QpStream {
    col: usize,
    /// The input's last byte when it is a space or tab: written once the next byte shows
    /// whether it ends a line.
    pending: Option<u8>,
    /// The input so far ends with a CR (already written as a line break).
    after_cr: bool,
}

impl QpStream {
    /// A stream at the start of a part.
    pub fn new() -> QpStream {
        QpStream::default()
    }

    /// Encode `input`, appending to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, mut input: &[u8]) {
        if self.after_cr {
            if input.is_empty() {
                return;
            }
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        let Some((&last, _)) = input.split_last() else {
            return;
        };
        if let Some(ws) = self.pending.take() {
            self.put_ws(out, ws, is_break_byte(input[0]));
        }
        if is_wsp(last) {
            self.encode_run(out, &input[..input.len() - 1]);
            self.pending = Some(last);
        } else {
            self.encode_run(out, input);
            self.after_cr = last == b'\r';
        }
    }

    /// Append a precomputed chunk: a soft break first unless the line is empty or the chunk
    /// starts with a line break.
    pub fn write_chunk<S: QpSink + ?Sized>(&mut self, sink: &mut S, chunk: &QpChunk) {
        if self.after_cr && chunk.first == b'\n' {
            // The chunk's encoding starts with the CRLF of that LF: already written.
            sink.chunk(chunk, 2);
        } else {
            let starts_line = is_break_byte(chunk.first);
            if let Some(ws) = self.pending.take() {
                self.put_ws(sink.bytes(), ws, starts_line);
            }
            if self.col != 0 && !starts_line {
                sink.bytes().extend_from_slice(b"=\r\n");
            }
            sink.chunk(chunk, 0);
        }
        self.col = chunk.end_col;
        self.pending = chunk.pending;
        self.after_cr = chunk.ends_cr;
    }

    /// End the part (a pending space or tab is encoded: it ends the text).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(ws) = self.pending.take() {
            self.put_ws(out, ws, true);
        }
        self.after_cr = false;
    }

    /// The current column.
    pub fn col(&self) -> usize {
        self.col
    }

    fn put_ws(&mut self, out: &mut Vec<u8>, ws: u8, before_break: bool) {
        let (width, max_col) = if before_break {
            (3, MAX_LINE)
        } else {
            (1, MAX_LINE - 1)
        };
        if self.col + width > max_col {
            out.extend_from_slice(b"=\r\n");
            self.col = 0;
        }
        if before_break {
            push_escaped(out, ws);
        } else {
            out.push(ws);
        }
        self.col += width;
    }

    /// [`encode_into`]'s loop for a run whose end is not a line end (more may follow).
    fn encode_run(&mut self, out: &mut Vec<u8>, input: &[u8]) {
        let n = input.len();
        let is_break = |i: usize| i < n && is_break_byte(input[i]);
        let mut col = self.col;
        let mut i = 0;
        while i < n {
            let b = input[i];
            if is_break_byte(b) {
                out.extend_from_slice(b"\r\n");
                col = 0;
                i += if b == b'\r' && input.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                continue;
            }
            if col == 0 && (b == b'.' || (b == b'F' && from_at(&input[i..]))) {
                push_escaped(out, b);
                col = 3;
                i += 1;
                continue;
            }
            let limit = n.min(i + (MAX_LINE - 1).saturating_sub(col));
            let mut j = i;
            while j + 8 <= limit {
                let word = u64::from_le_bytes(input[j..j + 8].try_into().unwrap_or_default());
                if !all_plain(word) {
                    break;
                }
                j += 8;
            }
            while j < limit && SAFE[usize::from(input[j])] {
                j += 1;
            }
            if j > i && is_wsp(input[j - 1]) && is_break(j) {
                j -= 1;
            }
            if j > i {
                out.extend_from_slice(&input[i..j]);
                col += j - i;
                i = j;
                continue;
            }
            let last = is_break(i + 1);
            let literal = SAFE[usize::from(b)] && !(last && is_wsp(b));
            let width = if literal { 1 } else { 3 };
            let max_col = if last { MAX_LINE } else { MAX_LINE - 1 };
            if col + width > max_col {
                out.extend_from_slice(b"=\r\n");
                col = 0;
                continue;
            }
            if literal {
                out.push(b);
            } else {
                push_escaped(out, b);
            }
            col += width;
            i += 1;
        }
        self.col = col;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Strict decoder used by the tests: returns the decoded bytes with CRLF line breaks.
    pub(crate) fn decode(encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lines = encoded.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let is_last = lines.peek().is_none();
            let line = if is_last {
                line
            } else {
                line.strip_suffix(b"\r").expect("bare LF in QP output")
            };
            assert!(!line.contains(&b'\r'), "bare CR in QP output");
            let (body, soft) = match line.strip_suffix(b"=") {
                Some(body) => (body, true),
                None => (line, false),
            };
            let mut i = 0;
            while i < body.len() {
                if body[i] == b'=' {
                    let hex = std::str::from_utf8(&body[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(body[i]);
                    i += 1;
                }
            }
            if !soft && !is_last {
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn normalise_breaks(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' => {
                    out.extend_from_slice(b"\r\n");
                    if input.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        out
    }

    fn check(input: &[u8]) -> Vec<u8> {
        let enc = encode(input);
        check_encoding(&enc, input);
        enc
    }

    /// The output rules of the module docs, and that `enc` decodes to `input`.
    pub(crate) fn check_encoding(enc: &[u8], input: &[u8]) {
        for line in enc.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                line.len() <= MAX_LINE,
                "line too long: {:?}",
                String::from_utf8_lossy(line)
            );
            assert!(!line.starts_with(b"."), "line starts with '.'");
            assert!(!line.starts_with(b"From "), "line starts with 'From '");
            assert!(
                !line.ends_with(b" ") && !line.ends_with(b"\t"),
                "trailing whitespace"
            );
            assert!(line
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7F).contains(&b)));
            // `=` only starts a triple or a soft break.
            let mut i = 0;
            while i < line.len() {
                if line[i] == b'=' {
                    if i + 1 == line.len() {
                        break;
                    }
                    assert!(line[i + 1..i + 3].iter().all(|b| HEX.contains(b)));
                    i += 3;
                } else {
                    i += 1;
                }
            }
        }
        assert!(!enc.windows(2).any(|w| w == b"=_"));
        assert_eq!(decode(enc), normalise_breaks(input), "{input:?}");
    }

    #[test]
    fn swar_plain_check_matches_table() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = *b"abcdefgh";
                word[pos] = b;
                let expect = (0x20..0x7F).contains(&b) && b != b'=';
                assert_eq!(
                    all_plain(u64::from_le_bytes(word)),
                    expect,
                    "{b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn simple_and_specials() {
        assert_eq!(encode(b""), b"");
        assert_eq!(encode(b"hello world"), b"hello world");
        assert_eq!(encode(b"a=b"), b"a=3Db");
        assert_eq!(encode("é".as_bytes()), b"=C3=A9");
        assert_eq!(encode(b"a\x00\x7f"), b"a=00=7F");
        assert_eq!(encode(b"tab\tin"), b"tab\tin");
        check(b"a=b \xc3\xa9 \x01");
    }

    #[test]
    fn line_breaks_are_normalised() {
        assert_eq!(encode(b"a\nb\r\nc\rd\n"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(encode(b"\n\n"), b"\r\n\r\n");
        assert_eq!(encode(b"\r\r\n"), b"\r\n\r\n");
    }

    #[test]
    fn trailing_whitespace_encoded_before_breaks() {
        assert_eq!(encode(b"a \nb\t\r\nc "), b"a=20\r\nb=09\r\nc=20");
        assert_eq!(encode(b"a  b"), b"a  b");
        assert_eq!(encode(b" "), b"=20");
    }

    #[test]
    fn dot_and_from_at_line_start() {
        assert_eq!(encode(b".\n..x\n"), b"=2E\r\n=2E.x\r\n");
        assert_eq!(
            encode(b"From me\nFrom\nFromage"),
            b"=46rom me\r\nFrom\r\nFromage"
        );
        assert_eq!(encode(b"x.From y"), b"x.From y");
    }

    #[test]
    fn soft_breaks_keep_lines_short() {
        let enc = check(&[b'a'; 200]);
        let lines: Vec<&[u8]> = enc.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0], [&[b'a'; 75][..], b"=\r"].concat());
        assert_eq!(lines.len(), 3);
        // exactly 76 fits on one line
        assert_eq!(encode(&[b'b'; 76]), vec![b'b'; 76]);
        assert_eq!(check(&[b'b'; 77]).len(), 77 + 3);
    }

    #[test]
    fn soft_break_never_splits_triples_and_reencodes_dots() {
        for pad in 0..80 {
            let mut input = vec![b'x'; pad];
            input.extend_from_slice("é=.From .".repeat(20).as_bytes());
            input.extend_from_slice(b" \n");
            check(&input);
        }
        // a dot that lands at the start of a soft-broken line is encoded
        let mut input = vec![b'x'; 75];
        input.extend_from_slice(b".From x");
        let enc = check(&input);
        assert!(
            enc.ends_with(b"=\r\n=2EFrom x"),
            "{}",
            String::from_utf8_lossy(&enc)
        );
        let mut input = vec![b'x'; 75];
        input.extend_from_slice(b"From x");
        let enc = check(&input);
        assert!(
            enc.ends_with(b"=\r\n=46rom x"),
            "{}",
            String::from_utf8_lossy(&enc)
        );
    }

    #[test]
    fn round_trip_assorted() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: &[u8] = b"ab .=F\t\r\n\xc3\xa9\x00From ";
        for len in 0..400 {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            check(&input);
        }
    }

    /// xorshift64 (deterministic test inputs without a dependency).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Encode `pieces` with a stream: `(true, p)` as a precomputed chunk, else written.
    fn stream(pieces: &[(bool, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = QpStream::new();
        for &(chunk, p) in pieces {
            if chunk {
                s.write_chunk(&mut out, &QpChunk::new(p, 0));
            } else {
                s.write(&mut out, p);
            }
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn stream_of_one_write_matches_encode_but_for_the_last_column() {
        for input in [
            &b"hello"[..],
            b"a \n b\t",
            b"x=y\r\n.z",
            b"From me",
            b"\xc3\xa9 ",
        ] {
            assert_eq!(stream(&[(false, input)]), encode(input));
        }
        // the last byte of a piece never takes column 76
        assert_eq!(encode(&[b'b'; 76]), vec![b'b'; 76]);
        let s = stream(&[(false, &[b'b'; 76])]);
        assert_eq!(s, [&[b'b'; 75][..], b"=\r\nb"].concat());
    }

    #[test]
    fn pieces_resolve_what_needs_the_next_byte() {
        // a space before a break in the next piece is encoded; before text it is not
        assert_eq!(stream(&[(false, b"a "), (false, b"\nb")]), b"a=20\r\nb");
        assert_eq!(
            stream(&[(false, b"a "), (false, b""), (false, b"b")]),
            b"a b"
        );
        assert_eq!(stream(&[(false, b"a\t")]), b"a=09");
        // a CR and an LF in the next piece are one line break
        assert_eq!(stream(&[(false, b"a\r"), (false, b"\nb")]), b"a\r\nb");
        assert_eq!(stream(&[(false, b"a\r"), (true, b"\nb")]), b"a\r\nb");
        assert_eq!(stream(&[(false, b"a\r"), (false, b"\r\nb")]), b"a\r\n\r\nb");
        // an F cut short of `From ` at a line start is encoded
        assert_eq!(stream(&[(false, b"Fro"), (false, b"m x")]), b"=46rom x");
        assert_eq!(stream(&[(false, b"Fr"), (false, b"ed")]), b"=46red");
        assert_eq!(stream(&[(false, b"Fred")]), b"Fred");
    }

    #[test]
    fn chunks_start_lines() {
        let chunk: &[u8] = b".b c";
        assert_eq!(stream(&[(true, chunk)]), b"=2Eb c");
        assert_eq!(stream(&[(false, b"a"), (true, chunk)]), b"a=\r\n=2Eb c");
        assert_eq!(stream(&[(false, b"a\n"), (true, chunk)]), b"a\r\n=2Eb c");
        assert_eq!(stream(&[(false, b"a "), (true, chunk)]), b"a =\r\n=2Eb c");
        assert_eq!(stream(&[(false, b"a "), (true, b"\nx")]), b"a=20\r\nx");
        // a chunk's own pending space and CR carry over
        assert_eq!(stream(&[(true, b"x \r"), (false, b"\n")]), b"x=20\r\n");
        assert_eq!(stream(&[(true, b"x "), (false, b"y")]), b"x y");
    }

    #[test]
    fn random_pieces_round_trip() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let alphabet: &[u8] = b"ab .=F\t\r\n\xc3\xa9\x00From mo";
        for round in 0..3000 {
            let len = rng.below(300);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let take = 1 + rng.below(if round % 2 == 0 { 8 } else { 120 });
                let end = input.len().min(at + take);
                pieces.push((rng.below(3) == 0, &input[at..end]));
                at = end;
            }
            let enc = stream(&pieces);
            check_encoding(&enc, &input);
            // a chunk's encoding is what a stream at a line start writes
            for &(_, p) in &pieces {
                let c = QpChunk::new(p, 7);
                let mut s = QpStream::new();
                let mut out = Vec::new();
                s.write(&mut out, p);
                assert_eq!(c.encoded(), &out[..]);
                assert_eq!(c.id(), 7);
            }
        }
    }
}
