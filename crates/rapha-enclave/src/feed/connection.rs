//! One connection's plumbing: requests cut from a bounded read-ahead buffer (file descriptors
//! passed over the socket closed as they arrive, **I3**), answers queued in request order,
//! pipelined fetches handed to the decoders, and the writer that sends answers and hands every
//! record fed for the first time to fingerprinting (**I4**), even after the trainer hung up.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::SyncSender;

use super::{Shared, FINGERPRINT_BATCH};
use crate::protocol::{self, ErrorCode, FrameError};

/// A record to decode, and where its answer goes.
pub(super) type DecodeJob = (usize, SyncSender<Answer>);

/// An answer in the writer's queue: ready, or being decoded.
pub(super) enum Slot {
    Ready(Answer),
    Decoding(std::sync::mpsc::Receiver<Answer>),
}

/// The reading thread's side of one connection's queues.
pub(super) struct Queues {
    pub(super) answers: SyncSender<Slot>,
    pub(super) jobs: SyncSender<DecodeJob>,
}

impl Queues {
    /// Queues a ready answer. The writer drains its queue until it closes, so this does not
    /// fail; if it ever did, the connection is over.
    pub(super) fn answer(&self, a: Answer) -> Result<(), FrameError> {
        self.answers
            .send(Slot::Ready(a))
            .map_err(|_| FrameError::Closed)
    }

    /// Queues the answer to a fetch of `index` in its place, and the record for decoding.
    pub(super) fn decode(&self, index: usize) -> Result<(), FrameError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send((index, reply))
            .map_err(|_| FrameError::Closed)?;
        self.answers
            .send(Slot::Decoding(answer))
            .map_err(|_| FrameError::Closed)
    }
}

/// One answer on its way from the reading thread to the writer.
pub(super) struct Answer {
    pub(super) header: Vec<u8>,
    pub(super) payload: Option<Shared>,
    /// The record's index when this is its first feed (it goes to fingerprinting).
    pub(super) first_feed: Option<u32>,
}

impl Answer {
    pub(super) fn plain(header: Vec<u8>) -> Self {
        Self {
            header,
            payload: None,
            first_feed: None,
        }
    }

    pub(super) fn error(code: ErrorCode, message: &str) -> Self {
        Self::plain(protocol::error_header(code, message))
    }
}

/// Writes answers in order; records fed for the first time go to the fingerprinting worker in
/// batches of [`FINGERPRINT_BATCH`], and the rest at [`AnswerWriter::finish`], so every fed
/// record is fingerprinted before the feed returns.
pub(super) struct AnswerWriter<'f> {
    stream: UnixStream,
    fingerprint: &'f SyncSender<Vec<(u32, Shared)>>,
    batch: Vec<(u32, Shared)>,
    result: Result<(), FrameError>,
}

impl<'f> AnswerWriter<'f> {
    pub(super) fn new(stream: UnixStream, fingerprint: &'f SyncSender<Vec<(u32, Shared)>>) -> Self {
        Self {
            stream,
            fingerprint,
            batch: Vec::with_capacity(FINGERPRINT_BATCH),
            result: Ok(()),
        }
    }

    /// Writes one answer. After a write error nothing more is written (the socket is shut,
    /// so the reading side stops too), but every answered record is still fingerprinted: a
    /// frame cut off mid-payload may have reached the trainer in part.
    pub(super) fn write(&mut self, a: Answer) -> Result<(), FrameError> {
        if self.result.is_ok() {
            let bytes: &[u8] = a.payload.as_deref().map_or(&[], Vec::as_slice);
            self.result = protocol::write_frame(&mut self.stream, &a.header, bytes);
            if self.result.is_err() {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        if let (Some(index), Some(bytes)) = (a.first_feed, a.payload) {
            self.batch.push((index, bytes));
            if self.batch.len() >= FINGERPRINT_BATCH {
                // Fails only if the worker is gone, which `serve` turns into a panic anyway.
                let _ = self.fingerprint.send(std::mem::take(&mut self.batch));
            }
        }
        if self.result.is_err() {
            return Err(FrameError::Closed);
        }
        Ok(())
    }

    /// Ends the connection: nothing more is written (answers still queued are only
    /// fingerprinted).
    pub(super) fn abort(&mut self, why: &str) {
        if self.result.is_ok() {
            self.result = Err(FrameError::Io(std::io::Error::other(why.to_owned())));
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Hands the last records to fingerprinting; the first write error, if any.
    pub(super) fn finish(self) -> Result<(), FrameError> {
        if !self.batch.is_empty() {
            // Fails only if the worker is gone, which `serve` turns into a panic anyway.
            let _ = self.fingerprint.send(self.batch);
        }
        self.result
    }
}

/// Bytes of requests the node reads ahead of the one it is answering.
const READ_AHEAD: usize = 64 << 10;

/// The request side of one connection: frames are cut from a bounded read-ahead buffer, so
/// the node can count the requests a pipelining trainer has already sent
/// ([`RequestReader::queued`]) without ever buffering more than [`READ_AHEAD`] bytes beyond
/// the largest allowed request.
pub(super) struct RequestReader {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl RequestReader {
    pub(super) fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: vec![0; READ_AHEAD],
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Appends what one `recvmsg` of at most `want` bytes returns; with `nonblocking` it
    /// returns `Ok(false)` when nothing is waiting. EOF is [`FrameError::Closed`]. File
    /// descriptors the trainer passed along (`SCM_RIGHTS`) are closed as they arrive and end
    /// the connection ([`FrameError::PassedDescriptors`]): a socket of the trainer's kept in
    /// the node would outlive the trainer.
    fn recv(&mut self, want: usize, nonblocking: bool) -> Result<bool, FrameError> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + want {
            // Only a frame larger than the read-ahead grows the buffer, to exactly its size.
            self.buf.resize(self.end + want, 0);
        }
        let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
        if nonblocking {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        let fd = self.stream.as_raw_fd();
        let mut control = nix::cmsg_space!([std::os::fd::RawFd; 8]);
        loop {
            let mut iov = [std::io::IoSliceMut::new(
                &mut self.buf[self.end..self.end + want],
            )];
            let (n, passed) = match recvmsg::<()>(fd, &mut iov, Some(&mut control), flags) {
                Ok(msg) => {
                    // More descriptors than fit are closed by the kernel (MSG_CTRUNC).
                    let mut passed = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    for c in msg.cmsgs().into_iter().flatten() {
                        passed = true;
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                    }
                    (msg.bytes, passed)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) if nonblocking => return Ok(false),
                Err(e) => return Err(FrameError::Io(std::io::Error::from(e))),
            };
            if passed {
                return Err(FrameError::PassedDescriptors);
            }
            if n == 0 {
                return Err(FrameError::Closed);
            }
            self.end += n;
            return Ok(true);
        }
    }

    /// The next request's header bytes (blocks until the whole frame is here).
    pub(super) fn next_header(&mut self) -> Result<Vec<u8>, FrameError> {
        loop {
            let have = self.pending().len();
            let want = match protocol::request_frame_len(self.pending())? {
                Some(n) if have >= n => {
                    let header = self.pending()[4..n].to_vec();
                    self.start += n;
                    return Ok(header);
                }
                Some(n) if n > READ_AHEAD => n - have,
                _ => READ_AHEAD - have,
            };
            self.recv(want, false)?;
        }
    }

    /// Complete requests already received behind the current one. When none is buffered,
    /// reads what has arrived without waiting (up to the read-ahead limit): a trainer over
    /// the in-flight limit is seen as soon as its requests reach the node.
    pub(super) fn queued(&mut self) -> Result<usize, FrameError> {
        if protocol::complete_requests(self.pending()) > 0 {
            return Ok(protocol::complete_requests(self.pending()));
        }
        while self.pending().len() < READ_AHEAD {
            match self.recv(READ_AHEAD - self.pending().len(), true) {
                Ok(true) => {}
                // The peer may close after its last request; what it sent is still answered.
                Ok(false) | Err(FrameError::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(protocol::complete_requests(self.pending()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: a panic is a failure
    use std::io::Read;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn records_answered_after_the_trainer_hung_up_mid_payload_are_still_fingerprinted() {
        let (node, mut trainer) = UnixStream::pair().unwrap();
        // Reads the start of the first frame, then hangs up while the node is still writing
        // its payload (far larger than any socket buffer).
        let peer = std::thread::spawn(move || {
            let mut start = vec![0u8; 64 << 10];
            trainer.read_exact(&mut start).unwrap();
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let mut w = AnswerWriter::new(node, &tx);
        let answer = |index: u32| Answer {
            header: br#"{"ok":true}"#.to_vec(),
            payload: Some(Arc::new(vec![index as u8; 16 << 20])),
            first_feed: Some(index),
        };
        assert!(w.write(answer(3)).is_err(), "the frame was cut off");
        peer.join().unwrap();
        assert!(
            w.write(answer(4)).is_err(),
            "nothing is written after an error"
        );
        assert!(w.finish().is_err());
        drop(tx);
        let fingerprinted: Vec<u32> = rx.iter().flatten().map(|(index, _)| index).collect();
        assert_eq!(fingerprinted, [3, 4]);
    }
}
