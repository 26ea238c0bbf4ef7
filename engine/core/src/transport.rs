//! The one place in the engine that touches a socket: a driver thread, one per process,
//! runs [`DataPipeline`]s on connected TCP sockets the Python client owns, every
//! connection's from one epoll loop (mio).
//!
//! One loop for every connection, not a blocking thread each: a thread blocked in
//! `recv` sleeps and is woken for every reply, so 32 connections cost two context
//! switches per message (and on a VM a reschedule IPI, an exit each). The loop sleeps
//! only when no connection has anything to do, and one wake-up serves every connection
//! whose replies came meanwhile.
//!
//! A connection's [`Runner`] starts a run and says when it ended: its `ready_fd` turns
//! readable, which the Python client awaits in its event loop. The run gives up, and
//! hands back to the Python client, as soon as anything is not the steady state: a reply
//! that is not plain, the server closing or failing, or a reply (or room to write) not
//! coming within `patience`. The Python client then goes on from that point with its own
//! time limits and error handling, so nothing here decides an outcome the Python client
//! would decide differently.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::pipeline::{DataPipeline, Envelope, Progress};
/// Why a run stopped.
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
    /// The run panicked (a bug): the connection cannot be trusted to be in step.
    Failed,
}

/// What a run leaves for the Python client.
pub struct Handback {
    /// Why it stopped.
    pub stop: Stop,
    /// Bytes of the group in flight that went out (`None`: no group is in flight).
    pub written: Option<usize>,
    /// Bytes received and not taken.
    pub leftover: Vec<u8>,
}

const READ_SIZE: usize = 64 * 1024;

/// Where a connection's run stands.
enum Slot<M> {
    Idle,
    Running,
    Ended(Box<(DataPipeline<M>, Handback)>),
}

/// One connection's way to the driver thread: start a run of a pipeline on its socket,
/// learn that it ended (`ready_fd` turns readable), take the pipeline back with what
/// was left. One run at a time.
pub struct Runner<M> {
    slot: Arc<Mutex<Slot<M>>>,
    ready: UnixStream,
    signal: Arc<UnixStream>,
}

impl<M: Envelope + Send + 'static> Runner<M> {
    /// A runner with its own notification pair (the driver thread starts with the
    /// first run in this process).
    pub fn new() -> std::io::Result<Self> {
        let (ready, signal) = UnixStream::pair()?;
        ready.set_nonblocking(true)?;
        signal.set_nonblocking(true)?;
        Ok(Runner {
            slot: Arc::new(Mutex::new(Slot::Idle)),
            ready,
            signal: Arc::new(signal),
        })
    }

    /// Readable once a run has ended, until [`Runner::finish`] takes it.
    pub fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Run `pipeline` on the socket `fd` (switched to non-blocking) in the driver
    /// thread, waiting at most `patience` for any reply or room to write. The caller
    /// owns `fd` and must neither use nor close it until [`Runner::finish`] returns the
    /// run. Fails when a run is under way or its end not yet taken.
    pub fn start(
        &self,
        fd: RawFd,
        pipeline: DataPipeline<M>,
        patience: Duration,
    ) -> std::io::Result<()> {
        {
            let mut slot = lock(&self.slot);
            if !matches!(*slot, Slot::Idle) {
                return Err(std::io::Error::other(
                    "a pipeline run is under way on this connection",
                ));
            }
            *slot = Slot::Running;
        }
        let run = Run {
            fd,
            pipeline,
            patience: patience.max(Duration::from_millis(1)),
            group: Vec::new(),
            written: None,
            unread: false,
            slot: Arc::clone(&self.slot),
            signal: Arc::clone(&self.signal),
        };
        // The driver thread must never block on the socket.
        let started = borrow_socket(fd)
            .set_nonblocking(true)
            .and_then(|()| driver())
            .and_then(|driver| {
                lock(&driver.queue).push(Box::new(run));
                driver.waker.wake()
            });
        if started.is_err() {
            *lock(&self.slot) = Slot::Idle;
        }
        started
    }

    /// The pipeline and how its run ended, once it has; `None` while it runs (or when
    /// none was started).
    pub fn finish(&self) -> Option<(DataPipeline<M>, Handback)> {
        let mut signals = [0u8; 16];
        while matches!((&self.ready).read(&mut signals), Ok(n) if n > 0) {}
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Idle) {
            Slot::Ended(ended) => Some(*ended),
            other => {
                *slot = other;
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The socket `fd` as a `TcpStream` that does not close it when dropped.
fn borrow_socket(fd: RawFd) -> ManuallyDrop<TcpStream> {
    // SAFETY: the caller of `Runner::start` owns `fd`, an open TCP socket, and does not
    // use or close it until its run has ended; ManuallyDrop keeps it open.
    #[allow(unsafe_code)]
    ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) })
}

/// A run as the driver thread sees it, whatever its messages are.
trait Task: Send {
    fn fd(&self) -> RawFd;
    fn patience(&self) -> Duration;
    /// Go on until the run stops, or must wait for the socket (`None`); and whether
    /// any byte moved.
    fn step(&mut self, chunk: &mut [u8]) -> (Option<Stop>, bool);
    /// Hand the run back to its runner and signal it.
    fn end(self: Box<Self>, stop: Stop);
}

struct Run<M> {
    fd: RawFd,
    pipeline: DataPipeline<M>,
    patience: Duration,
    group: Vec<u8>,
    /// Bytes of the group in flight that went out; `None`: no group is in flight.
    written: Option<usize>,
    /// The last read filled the buffer: more may be there without a new event.
    unread: bool,
    slot: Arc<Mutex<Slot<M>>>,
    signal: Arc<UnixStream>,
}

impl<M: Envelope + Send> Task for Run<M> {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn patience(&self) -> Duration {
        self.patience
    }

    fn step(&mut self, chunk: &mut [u8]) -> (Option<Stop>, bool) {
        let mut sock = borrow_socket(self.fd);
        let mut moved = false;
        loop {
            let Some(written) = self.written else {
                if self.pipeline.done() {
                    return (Some(Stop::Done), moved);
                }
                let Some(group) = self.pipeline.next_group() else {
                    return (Some(Stop::Irregular), moved);
                };
                self.group = group;
                self.written = Some(0);
                continue;
            };
            if written < self.group.len() {
                match sock.write(&self.group[written..]) {
                    Ok(n) => {
                        moved = true;
                        self.written = Some(written + n);
                        if written + n == self.group.len() && !self.unread {
                            // Its replies cannot be there yet: wait for them (an event
                            // comes for bytes that arrive from now on).
                            return (None, moved);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return (None, moved),
                    Err(e) => return (Some(Stop::WriteError(errno(&e))), moved),
                }
                continue;
            }
            match self.pipeline.take() {
                Progress::Taken => {
                    self.written = None;
                    continue;
                }
                Progress::Irregular => return (Some(Stop::Irregular), moved),
                Progress::NeedData => {}
            }
            match sock.read(chunk) {
                Ok(0) => return (Some(Stop::Eof), moved),
                Ok(n) => {
                    moved = true;
                    self.unread = n == chunk.len();
                    self.pipeline.receive(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.unread = false;
                    return (None, moved);
                }
                Err(e) => return (Some(Stop::ReadError(errno(&e))), moved),
            }
        }
    }

    fn end(self: Box<Self>, stop: Stop) {
        let Run {
            mut pipeline,
            written,
            slot,
            signal,
            ..
        } = *self;
        let leftover = pipeline.take_leftover();
        let back = Handback {
            stop,
            written,
            leftover,
        };
        *lock(&slot) = Slot::Ended(Box::new((pipeline, back)));
        // (A full buffer already holds a signal.)
        let _ = (&*signal).write(&[1]);
    }
}

/// The process's driver thread: runs submitted through `queue`, `waker` to tell it.
struct Driver {
    queue: Mutex<Vec<Box<dyn Task>>>,
    waker: Waker,
    pid: u32,
}

static DRIVER: Mutex<Option<Arc<Driver>>> = Mutex::new(None);

const WAKE: Token = Token(usize::MAX);

/// This process's driver, started on first use (and again in a forked child, which has
/// the parent's handle but not its thread).
fn driver() -> std::io::Result<Arc<Driver>> {
    let mut current = lock(&DRIVER);
    let pid = std::process::id();
    if let Some(driver) = current.as_ref().filter(|d| d.pid == pid) {
        return Ok(Arc::clone(driver));
    }
    let poll = Poll::new()?;
    let driver = Arc::new(Driver {
        queue: Mutex::new(Vec::new()),
        waker: Waker::new(poll.registry(), WAKE)?,
        pid,
    });
    let shared = Arc::clone(&driver);
    std::thread::Builder::new()
        .name("mailcore smtp".into())
        .spawn(move || drive(poll, &shared))?;
    *current = Some(Arc::clone(&driver));
    Ok(driver)
}

/// A run in the loop and when it gives up waiting.
type Active = HashMap<usize, (Box<dyn Task>, Instant)>;

fn drive(mut poll: Poll, driver: &Driver) {
    let mut events = Events::with_capacity(256);
    let mut active: Active = HashMap::new();
    let mut next_token = 0usize;
    let mut chunk = vec![0u8; READ_SIZE];
    loop {
        let timeout = active
            .values()
            .map(|(_, deadline)| *deadline)
            .min()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                // Not expected from epoll_wait; back off rather than spin.
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        for event in events.iter() {
            if event.token() != WAKE {
                advance(poll.registry(), &mut active, event.token().0, &mut chunk);
                continue;
            }
            let submitted = std::mem::take(&mut *lock(&driver.queue));
            for task in submitted {
                let token = next_token;
                next_token = (next_token + 1) % WAKE.0;
                let interest = Interest::READABLE | Interest::WRITABLE;
                let fd = task.fd();
                if poll
                    .registry()
                    .register(&mut SourceFd(&fd), Token(token), interest)
                    .is_err()
                {
                    task.end(Stop::Irregular); // (the Python client finds out why)
                    continue;
                }
                let deadline = Instant::now() + task.patience();
                active.insert(token, (task, deadline));
                advance(poll.registry(), &mut active, token, &mut chunk);
            }
        }
        let now = Instant::now();
        let expired: Vec<usize> = active
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            finish_run(poll.registry(), &mut active, token, Stop::Slow);
        }
    }
}

/// Step the run of `token`: it waits again (from now, if anything moved), or ends.
fn advance(registry: &Registry, active: &mut Active, token: usize, chunk: &mut [u8]) {
    let Some((task, deadline)) = active.get_mut(&token) else {
        return; // (ended earlier in this round)
    };
    // A panic ends this run, not the thread every connection's runs depend on.
    let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| task.step(chunk)));
    match stepped.unwrap_or((Some(Stop::Failed), false)) {
        (None, moved) => {
            if moved {
                *deadline = Instant::now() + task.patience();
            }
        }
        (Some(stop), _) => finish_run(registry, active, token, stop),
    }
}

fn finish_run(registry: &Registry, active: &mut Active, token: usize, stop: Stop) {
    if let Some((task, _)) = active.remove(&token) {
        // Out of the loop's set before the Python client may close the socket.
        let _ = registry.deregister(&mut SourceFd(&task.fd()));
        task.end(stop);
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
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
        sock.set_nodelay(true).unwrap(); // (each reply its own write: no Nagle delays)
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

    type Msg = crate::pipeline::PipelineMessage<'static>;

    fn content() -> &'static [u8] {
        b"Subject: x\r\n\r\nHi\r\n".repeat(500).leak()
    }

    /// Wait (at most 10 s) for the run to end, as the Python client does: its ready fd
    /// turns readable, then `finish` takes it.
    fn wait(runner: &Runner<Msg>) -> (DataPipeline<Msg>, Handback) {
        let mut poll = Poll::new().unwrap();
        let fd = runner.ready_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        for _ in 0..1000 {
            if let Some(ended) = runner.finish() {
                return ended;
            }
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
        }
        panic!("the run did not end");
    }

    fn run(answers: usize, bad: Option<usize>) -> (Handback, usize, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve(listener, answers, bad));
        // Handed over blocking: the run switches it (the driver must never wait on it).
        let sock = TcpStream::connect(addr).unwrap();
        let msgs = crate::pipeline::test_messages(content(), 4);
        let runner = Runner::new().unwrap();
        assert!(runner.finish().is_none()); // nothing started
        let patience = Duration::from_millis(200);
        runner
            .start(sock.as_raw_fd(), DataPipeline::new(msgs, false), patience)
            .unwrap();
        let (p, back) = wait(&runner);
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

    /// A run (on one end of a socket pair) whose step panics; it says how it ended.
    struct Panicking(std::sync::mpsc::Sender<Stop>, UnixStream);

    impl Task for Panicking {
        fn fd(&self) -> RawFd {
            self.1.as_raw_fd()
        }

        fn patience(&self) -> Duration {
            Duration::from_secs(5)
        }

        fn step(&mut self, _chunk: &mut [u8]) -> (Option<Stop>, bool) {
            panic!("a bug in a step");
        }

        fn end(self: Box<Self>, stop: Stop) {
            self.0.send(stop).unwrap();
        }
    }

    #[test]
    fn a_run_that_panics_ends_failed_and_the_driver_goes_on() {
        let (tx, rx) = std::sync::mpsc::channel();
        let driver = driver().unwrap();
        let (sock, _other) = UnixStream::pair().unwrap();
        lock(&driver.queue).push(Box::new(Panicking(tx, sock)));
        driver.waker.wake().unwrap();
        let ended = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(ended, Stop::Failed);
        let (back, finished, _) = run(usize::MAX, None); // the same driver, still running
        assert_eq!((back.stop, finished), (Stop::Done, 4));
    }

    #[test]
    fn one_driver_runs_many_connections_at_once_and_a_runner_again() {
        let mut servers = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..16 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            servers.push(std::thread::spawn(move || {
                serve(listener, usize::MAX, None)
            }));
            conns.push((TcpStream::connect(addr).unwrap(), Runner::new().unwrap()));
        }
        for round in 0..2 {
            for (sock, runner) in &conns {
                let msgs = crate::pipeline::test_messages(content(), 50);
                let p = DataPipeline::new(msgs, round > 0);
                runner
                    .start(sock.as_raw_fd(), p, Duration::from_secs(5))
                    .unwrap();
                // One run at a time on a connection.
                let again = DataPipeline::new(Vec::new(), false);
                assert!(runner
                    .start(sock.as_raw_fd(), again, Duration::from_secs(5))
                    .is_err());
            }
            for (_, runner) in &conns {
                let (p, back) = wait(runner);
                assert_eq!((back.stop, p.finished.len()), (Stop::Done, 50));
                assert!(p
                    .finished
                    .iter()
                    .all(|f| f.ending == crate::pipeline::Ending::Sent));
            }
        }
        drop(conns);
        for server in servers {
            server.join().unwrap();
        }
    }
}
