//! The steady state of a DATA pipeline across messages (RFC 2920 §3.1), sans-IO.
//!
//! Each group is the previous message's content (after its 354), `RSET` when the
//! transaction before failed, then this message's `MAIL`, `RCPT`… and `DATA`: one write
//! and one read per message. [`DataPipeline`] builds the groups and takes their replies
//! while every reply is a plain one (a single line, not 421); at anything else it stops
//! with the group's replies unconsumed, so that the Python client (`SmtpConnection`,
//! whose `ClientProtocol` is the reference) replays that group and takes it from there.
//! Its outcomes are what the Python pipeline gives for the same replies; the equivalence
//! is tested from Python. [`crate::transport`] drives it on a socket.

use std::collections::HashMap;

use memchr::memchr;

use crate::smtp::data_group;

/// Longest reply line taken, without its line ending (the Python reader's limit).
pub const MAX_REPLY_LINE: usize = 2000;

/// What the pipeline needs of one message, whoever holds its bytes (borrowed slices in
/// [`PipelineMessage`]; the binding's Python objects, so that a run on the driver thread
/// owns its messages without copying them).
pub trait Envelope {
    /// A recipient as a string.
    type Rcpt: AsRef<str>;
    /// `MAIL FROM:<…>` with its parameters and CRLF.
    fn mail(&self) -> &[u8];
    /// The recipients, one `RCPT TO` each.
    fn rcpts(&self) -> &[Self::Rcpt];
    /// The content as given (framed when it goes).
    fn content(&self) -> &[u8];
    /// SMTPUTF8: the recipients may be UTF-8.
    fn utf8(&self) -> bool;
}

/// One message of the pipeline: its `MAIL` command line (CRLF included), recipients,
/// content (framed when sent) and whether its addresses may be UTF-8 (SMTPUTF8).
#[derive(Clone)]
pub struct PipelineMessage<'a> {
    /// `MAIL FROM:<…>` with its parameters and CRLF.
    pub mail: &'a [u8],
    /// The recipients, one `RCPT TO` each.
    pub rcpts: Vec<&'a str>,
    /// The content as given (framed when it goes).
    pub content: &'a [u8],
    /// SMTPUTF8: the recipients may be UTF-8.
    pub utf8: bool,
}

impl<'a> Envelope for PipelineMessage<'a> {
    type Rcpt = &'a str;

    fn mail(&self) -> &[u8] {
        self.mail
    }

    fn rcpts(&self) -> &[&'a str] {
        &self.rcpts
    }

    fn content(&self) -> &[u8] {
        self.content
    }

    fn utf8(&self) -> bool {
        self.utf8
    }
}

/// How a finished message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// DATA was not answered 354: `last` is DATA's reply.
    Refused,
    /// The content went after the 354: `last` is the reply to its final dot.
    Sent,
    /// 354 came but MAIL or every RCPT had been refused: only the dot went (RFC 2920
    /// §3.1), and its reply is no outcome.
    DotOnly,
}

/// The replies of one finished message, as ids into [`DataPipeline::lines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Its index in the messages given.
    pub index: usize,
    /// MAIL's reply.
    pub mail: u32,
    /// Each RCPT's reply.
    pub rcpts: Vec<u32>,
    /// DATA's reply or the final one, as `ending` says.
    pub last: u32,
    /// How it ended.
    pub ending: Ending,
}

/// The message whose DATA got its 354: its content goes in the next group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// Its index in the messages given.
    pub index: usize,
    /// MAIL's reply.
    pub mail: u32,
    /// Each RCPT's reply.
    pub rcpts: Vec<u32>,
    /// MAIL and at least one RCPT were accepted: the content goes, else only the dot.
    pub deliverable: bool,
}

/// Where reading a group's replies stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every reply of the group was taken: write the next group (if any).
    Taken,
    /// Fewer replies than the group's have come, all plain so far.
    NeedData,
    /// A reply that is not plain (multi-line, malformed, too long, 421) is among them:
    /// nothing of the group was taken.
    Irregular,
}

/// The pipeline over `messages`: which group is next, what the server answered.
pub struct DataPipeline<M> {
    messages: Vec<M>,
    next: usize,
    body: Option<Body>,
    rset: bool,
    in_flight: Option<usize>,
    buf: Vec<u8>,
    ids: HashMap<Vec<u8>, u32>,
    /// Every distinct reply line taken, without its LF (the Python reader's cache key).
    pub lines: Vec<Vec<u8>>,
    /// The messages finished so far, in the order they finished (= their order).
    pub finished: Vec<Finished>,
}

impl<M: Envelope> DataPipeline<M> {
    /// `rset`: the transaction before failed and the first group begins with `RSET`.
    pub fn new(messages: Vec<M>, rset: bool) -> Self {
        DataPipeline {
            messages,
            next: 0,
            body: None,
            rset,
            in_flight: None,
            buf: Vec::new(),
            ids: HashMap::new(),
            lines: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// The next group's bytes, its replies now awaited; `None` when every message is
    /// finished, or when the next message has a recipient that cannot go on a command
    /// line (the Python client then says why).
    pub fn next_group(&mut self) -> Option<Vec<u8>> {
        debug_assert!(self.in_flight.is_none());
        let body = self.body.as_ref().map(|b| {
            if b.deliverable {
                self.messages[b.index].content()
            } else {
                &b""[..]
            }
        });
        let (out, need) = match self.messages.get(self.next) {
            Some(msg) => {
                let out = data_group(body, self.rset, msg.mail(), msg.rcpts(), msg.utf8())?;
                let need = usize::from(body.is_some()) + usize::from(self.rset) + msg.rcpts().len();
                (out, need + 2)
            }
            None => (crate::smtp::data_content(body?), 1),
        };
        self.in_flight = Some(need);
        Some(out)
    }

    /// Bytes from the server; then [`DataPipeline::take`].
    pub fn receive(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Take the replies to the group in flight when all have come and are plain.
    pub fn take(&mut self) -> Progress {
        let Some(need) = self.in_flight else {
            return Progress::Taken;
        };
        let mut ends = Vec::with_capacity(need);
        let mut start = 0;
        while ends.len() < need {
            let Some(nl) = memchr(b'\n', &self.buf[start..]) else {
                return if self.buf.len() - start > MAX_REPLY_LINE + 1 {
                    Progress::Irregular
                } else {
                    Progress::NeedData
                };
            };
            if !plain_reply(&self.buf[start..start + nl]) {
                return Progress::Irregular;
            }
            ends.push((start, start + nl));
            start += nl + 1;
        }
        let mut replies: Vec<(u32, u16)> = Vec::with_capacity(need);
        for &(from, to) in &ends {
            let line = &self.buf[from..to];
            let code = reply_code(line);
            let id = match self.ids.get(line) {
                Some(&id) => id,
                None => {
                    let id = self.lines.len() as u32;
                    self.ids.insert(line.to_vec(), id);
                    self.lines.push(line.to_vec());
                    id
                }
            };
            replies.push((id, code));
        }
        self.buf.drain(..start);
        self.in_flight = None;
        self.advance(&replies);
        Progress::Taken
    }

    fn advance(&mut self, replies: &[(u32, u16)]) {
        let mut replies = replies;
        if let Some(body) = self.body.take() {
            let ((last, _), rest) = replies.split_first().expect("a final reply");
            self.finished.push(Finished {
                index: body.index,
                mail: body.mail,
                rcpts: body.rcpts,
                last: *last,
                ending: if body.deliverable {
                    Ending::Sent
                } else {
                    Ending::DotOnly
                },
            });
            replies = rest;
        }
        if replies.is_empty() {
            return; // the last message's content alone
        }
        if self.rset {
            replies = &replies[1..];
            self.rset = false;
        }
        let index = self.next;
        self.next += 1;
        let (mail, mail_code) = replies[0];
        let (&(data, data_code), rcpts) = replies[1..].split_last().expect("DATA's reply");
        let rcpt_ids: Vec<u32> = rcpts.iter().map(|r| r.0).collect();
        if data_code == 354 {
            let deliverable = is_completion(mail_code) && rcpts.iter().any(|r| is_completion(r.1));
            self.body = Some(Body {
                index,
                mail,
                rcpts: rcpt_ids,
                deliverable,
            });
        } else {
            self.finished.push(Finished {
                index,
                mail,
                rcpts: rcpt_ids,
                last: data,
                ending: Ending::Refused,
            });
            self.rset = true; // the transaction may still be open
        }
    }

    /// Index of the next message whose envelope has not been written.
    pub fn next_message(&self) -> usize {
        self.next
    }

    /// The message whose content goes in the next group, if any.
    pub fn body(&self) -> Option<&Body> {
        self.body.as_ref()
    }

    /// Whether the next group begins with `RSET`.
    pub fn rset(&self) -> bool {
        self.rset
    }

    /// Whether a group is written and its replies not yet taken.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether every message is finished.
    pub fn done(&self) -> bool {
        self.in_flight.is_none() && self.body.is_none() && self.next == self.messages.len()
    }

    /// The bytes received and not taken (handed to the Python reader at the end).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn is_completion(code: u16) -> bool {
    (200..300).contains(&code)
}

fn reply_code(line: &[u8]) -> u16 {
    line[..3]
        .iter()
        .fold(0, |n, d| n * 10 + u16::from(d - b'0'))
}

/// Whether `line` (without its LF) is a plain reply: one line, `DDD` or `DDD text`
/// with the first digit 2–5, no other CR, at most [`MAX_REPLY_LINE`] bytes, not 421.
/// Exactly what the Python `ReplyReader.take` accepts.
pub fn plain_reply(line: &[u8]) -> bool {
    let raw = line.strip_suffix(b"\r").unwrap_or(line);
    raw.len() >= 3
        && raw.len() <= MAX_REPLY_LINE
        && matches!(raw[0], b'2'..=b'5')
        && raw[1].is_ascii_digit()
        && raw[2].is_ascii_digit()
        && (raw.len() == 3 || raw[3] == b' ')
        && !raw.contains(&b'\r')
        && &raw[..3] != b"421"
}

/// `count` messages from s@b.test to r@b.test with `content` (for the tests).
#[cfg(test)]
pub(crate) fn test_messages(content: &[u8], count: usize) -> Vec<PipelineMessage<'_>> {
    (0..count)
        .map(|_| PipelineMessage {
            mail: b"MAIL FROM:<s@b.test>\r\n",
            rcpts: vec!["r@b.test"],
            content,
            utf8: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(content: &[u8]) -> Vec<PipelineMessage<'_>> {
        test_messages(content, 3)
    }

    #[test]
    fn groups_carry_the_previous_content_and_replies_finish_messages() {
        let messages = msgs(b"Hi\r\n");
        let mut p = DataPipeline::new(messages, false);
        let envelope = b"MAIL FROM:<s@b.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n";
        assert_eq!(p.next_group().unwrap(), envelope);
        p.receive(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go");
        assert_eq!(p.take(), Progress::NeedData);
        p.receive(b"\r\n");
        assert_eq!(p.take(), Progress::Taken);
        assert_eq!(p.body().map(|b| (b.index, b.deliverable)), Some((0, true)));
        assert_eq!(
            p.next_group().unwrap(),
            [&b"Hi\r\n.\r\n"[..], envelope].concat()
        );
        // The second's RCPT refused: its DATA gets 554, the first is delivered.
        p.receive(b"250 ok: queued\r\n250 2.1.0 Ok\r\n550 no\r\n554 no valid recipients\r\n");
        assert_eq!(p.take(), Progress::Taken);
        assert_eq!(p.finished.len(), 2);
        assert_eq!(p.finished[0].ending, Ending::Sent);
        assert_eq!(p.finished[1].ending, Ending::Refused);
        assert!(p.rset() && p.body().is_none());
        let rset = [&b"RSET\r\n"[..], envelope].concat();
        assert_eq!(p.next_group().unwrap(), rset);
        // A 421 among them: nothing taken.
        p.receive(b"250 Ok\r\n421 bye\r\n");
        assert_eq!(p.take(), Progress::Irregular);
        assert!(p.in_flight() && p.rset());
        assert_eq!(p.take_leftover(), b"250 Ok\r\n421 bye\r\n");
    }

    #[test]
    fn a_354_without_a_valid_recipient_sends_only_the_dot() {
        let messages = msgs(b"Hi\r\n");
        let mut p = DataPipeline::new(messages[..1].to_vec(), false);
        p.next_group().unwrap();
        p.receive(b"250 ok\r\n550 no\r\n354 go\r\n");
        assert_eq!(p.take(), Progress::Taken);
        assert_eq!(p.next_group().unwrap(), b".\r\n");
        p.receive(b"554 no\r\n");
        assert_eq!(p.take(), Progress::Taken);
        assert!(p.done());
        assert_eq!(p.finished[0].ending, Ending::DotOnly);
        assert_eq!(p.lines.len(), 4);
    }

    #[test]
    fn plain_replies_are_what_the_python_reader_takes() {
        for ok in [
            &b"250"[..],
            b"250 ok",
            b"354 go\r",
            b"550 5.1.1 no such user",
        ] {
            assert!(plain_reply(ok), "{ok:?}");
        }
        let long = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE - 3]].concat();
        assert!(plain_reply(&long[..MAX_REPLY_LINE]));
        for bad in [
            &b"250-more"[..],
            b"25",
            b"150 x",
            b"650 x",
            b"2a0 x",
            b"421 bye",
            b"250x",
            b"250 a\rb",
            &long,
        ] {
            assert!(!plain_reply(bad), "{bad:?}");
        }
    }
}
