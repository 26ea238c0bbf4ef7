//! The one place in the engine that touches a socket: [`run_pipeline`] drives a
//! [`DataPipeline`] on a connected TCP socket the Python client owns, in the caller's
//! thread (the binding releases the GIL around it).
//!
//! It gives up, and hands back to the Python client, as soon as anything is not the
//! steady state: a reply that is not plain, the server closing or failing, or a reply
//! (or room to write) not coming within `patience`. The Python client then goes on from
//! that point with its own time limits and error handling, so nothing here decides an
//! outcome the Python client would decide differently.

use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

use crate::pipeline::{DataPipeline, Progress};

/// Why [`run_pipeline`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Every message finished.
    Done,
    /// A reply that is not plain, or a recipient that cannot be sent.
    Irregular,
    /// A reply (or room to write) did not come within the patience given.
    Slow,
    /// The server closed the connection.
    Eof,
    /// Writing failed (the OS error number, 0 if none).
    WriteError(i32),
    /// Reading failed (the OS error number, 0 if none).
    ReadError(i32),
}

/// What [`run_pipeline`] leaves for the Python client.
pub struct Handback {
    /// Why it stopped.
    pub stop: Stop,
    /// Bytes of the group in flight that went out (`None`: no group is in flight).
    pub written: Option<usize>,
    /// Bytes received and not taken.
    pub leftover: Vec<u8>,
}

const READ_SIZE: usize = 64 * 1024;

/// Run `pipeline` on the socket `fd` until it is done or must hand back. The socket is
/// switched to blocking with `patience` as its send and receive timeouts for the run,
/// and set back to non-blocking, without timeouts, before returning. `fd` is not closed.
pub fn run_pipeline(fd: RawFd, pipeline: &mut DataPipeline<'_>, patience: Duration) -> Handback {
    // SAFETY: the caller owns `fd`, an open TCP socket, and does not use it until this
    // returns; ManuallyDrop keeps it open.
    #[allow(unsafe_code)]
    let mut sock = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    let patience = patience.max(Duration::from_millis(1));
    let setup = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(patience)))
        .and_then(|()| sock.set_write_timeout(Some(patience)));
    let (stop, written) = match setup {
        Ok(()) => drive(&mut sock, pipeline),
        Err(_) => (Stop::Irregular, None),
    };
    // Back as the Python transport expects it; should this fail, its next call fails too.
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
    let _ = sock.set_nonblocking(true);
    let leftover = pipeline.take_leftover();
    Handback {
        stop,
        written,
        leftover,
    }
}

fn drive(sock: &mut TcpStream, pipeline: &mut DataPipeline<'_>) -> (Stop, Option<usize>) {
    let mut chunk = vec![0u8; READ_SIZE];
    loop {
        if pipeline.done() {
            return (Stop::Done, None);
        }
        let Some(group) = pipeline.next_group() else {
            return (Stop::Irregular, None);
        };
        let mut written = 0;
        while written < group.len() {
            match sock.write(&group[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return (Stop::Slow, Some(written)),
                Err(e) => return (Stop::WriteError(errno(&e)), Some(written)),
            }
        }
        loop {
            match pipeline.take() {
                Progress::Taken => break,
                Progress::Irregular => return (Stop::Irregular, Some(written)),
                Progress::NeedData => {}
            }
            match sock.read(&mut chunk) {
                Ok(0) => return (Stop::Eof, Some(written)),
                Ok(n) => pipeline.receive(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return (Stop::Slow, Some(written)),
                Err(e) => return (Stop::ReadError(errno(&e)), Some(written)),
            }
        }
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    /// A server answering each command line, silent after `answers` messages; the final
    /// reply to message `bad` (counted from 1) is multi-line.
    fn serve(listener: TcpListener, answers: usize, bad: Option<usize>) {
        let (sock, _) = listener.accept().unwrap();
        let mut out = sock.try_clone().unwrap();
        let mut lines = std::io::BufReader::new(sock);
        let (mut in_data, mut count) = (false, 0);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = if in_data {
                if line != b".\r\n" {
                    line.clear();
                    continue;
                }
                in_data = false;
                count += 1;
                if bad == Some(count) {
                    b"250-multi\r\n250 line\r\n"
                } else {
                    b"250 2.0.0 queued\r\n"
                }
            } else if line.starts_with(b"DATA") {
                in_data = true;
                b"354 go\r\n"
            } else {
                b"250 ok\r\n"
            };
            line.clear();
            if count > answers {
                continue; // stops answering
            }
            let _ = out.write_all(reply); // (the client may be gone)
        }
    }

    fn run(answers: usize, bad: Option<usize>) -> (Handback, usize, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve(listener, answers, bad));
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        let content = b"Subject: x\r\n\r\nHi\r\n".repeat(500);
        let msgs = crate::pipeline::test_messages(&content, 4);
        let mut p = DataPipeline::new(&msgs, false);
        let back = run_pipeline(sock.as_raw_fd(), &mut p, Duration::from_millis(200));
        // Non-blocking again: a read with nothing to read does not wait.
        let mut byte = [0u8; 1];
        let nonblocking =
            matches!((&sock).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
        drop(sock);
        server.join().unwrap();
        (back, p.finished.len(), nonblocking)
    }

    #[test]
    fn a_pipeline_runs_on_a_socket_until_done() {
        let (back, finished, nonblocking) = run(usize::MAX, None);
        assert_eq!(back.stop, Stop::Done);
        assert_eq!((finished, back.written), (4, None));
        assert!(back.leftover.is_empty() && nonblocking);
    }

    #[test]
    fn it_hands_back_a_written_group_at_a_reply_that_is_not_plain() {
        let (back, finished, nonblocking) = run(usize::MAX, Some(2));
        assert_eq!(back.stop, Stop::Irregular);
        assert_eq!(finished, 1); // the second's final reply is multi-line
        assert!(back.written.unwrap() > 9_000 && nonblocking);
        assert!(back.leftover.starts_with(b"250-multi\r\n"));
    }

    #[test]
    fn it_hands_back_when_the_server_goes_quiet() {
        let (back, finished, nonblocking) = run(2, None);
        assert_eq!(back.stop, Stop::Slow);
        assert_eq!(finished, 2);
        assert!(back.written.is_some() && nonblocking);
    }
}
