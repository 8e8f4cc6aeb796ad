//! The content phases: DATA (dot-stuffed, up to CRLF.CRLF) and BDAT chunks
//! (counted, RFC 3030), the checks every message must pass before it is
//! offered to the front end, and the front end's access to the message's
//! bytes (the trace header first, drained as they arrive, taken at the end).

use super::{
    ApiMisuse, CODE_BAD_SEQUENCE, CODE_OK, Chunk, Event, Notice, Phase, ServerConfig, ServerSession,
};
use crate::command::Verb;
use crate::params::BodyType;
use crate::reply::{EnhancedCode, Reply};

/// Room made for a message's content when the client did not declare its
/// size: most mail is a few KiB.
const EXPECTED_CONTENT: usize = 8 * 1024;
/// The most room made ahead of the content, whatever size was declared.
const MAX_RESERVED_CONTENT: usize = 64 * 1024;
/// The largest buffer a session keeps for its next message
/// ([`ServerSession::reuse_buffer`]): a typical message's, so that an idle
/// connection holds little.
const MAX_KEPT_BUFFER: usize = 2 * EXPECTED_CONTENT;

impl<C: AsRef<ServerConfig>> ServerSession<C> {
    /// Sets the trace (`Received:`) header that will precede the content.
    /// Call it while [`Event::StartData`] is pending, before accepting.
    pub fn set_trace_header(&mut self, header: &[u8]) -> Result<(), ApiMisuse> {
        if !matches!(self.phase, Phase::Pending(Event::StartData, _)) {
            return Err(ApiMisuse("the trace header is set while DATA is pending"));
        }
        // One allocation for the message rather than one per doubling as
        // it arrives: room for the size the client declared (RFC 1870), or
        // for a typical message, up to a bound (past it the buffer grows as
        // before, and a front end may drain it: `drain_collected`). A
        // declared size is an estimate, often a little short (Postfix counts
        // its queue file, with bare LF line ends): a sixteenth more covers
        // a CR for every line of 16 octets or more, so that a message that
        // fits its declaration is not copied into a buffer twice the size
        // at its last line.
        let room = self
            .transaction
            .as_ref()
            .and_then(|tx| tx.params.size)
            .map_or(EXPECTED_CONTENT, |size| {
                let declared = usize::try_from(size).unwrap_or(usize::MAX);
                declared.saturating_add(declared / 16).max(EXPECTED_CONTENT)
            });
        self.message.clear();
        self.message
            .reserve(header.len() + room.min(MAX_RESERVED_CONTENT));
        self.message.extend_from_slice(header);
        Ok(())
    }

    /// Bytes of the message the session holds now: the trace header and the
    /// content collected since the last [`ServerSession::drain_collected`].
    pub fn collected_len(&self) -> usize {
        self.message.len()
    }

    /// Hands the message bytes collected so far to `keep` and forgets them,
    /// while content is arriving (a front end that keeps large messages on
    /// disk calls it as they grow, so the session holds only what gathered
    /// since). [`ServerSession::take_message`] then gives only the rest.
    /// Outside DATA/BDAT, nothing is collected and `keep` is not called.
    pub fn drain_collected<R>(&mut self, keep: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let collecting = match self.phase {
            Phase::Data(_) | Phase::Chunk { .. } => true,
            // Between the chunks of one BDAT transaction.
            Phase::Command => self.bdat_in_progress,
            _ => false,
        };
        if !collecting || self.message.is_empty() {
            return None;
        }
        let r = keep(&self.message);
        self.message.clear();
        Some(r)
    }

    /// Takes the finished message (trace header + content) while
    /// [`Event::Message`] is pending. The envelope stays until the decision
    /// ([`ServerSession::transaction`]), so the front end can still read it.
    pub fn take_message(&mut self) -> Result<Vec<u8>, ApiMisuse> {
        if !matches!(self.phase, Phase::Pending(Event::Message, _)) {
            return Err(ApiMisuse("the message is taken while it is pending"));
        }
        Ok(std::mem::take(&mut self.message))
    }

    /// Gives back the buffer of a message taken with
    /// [`ServerSession::take_message`], once nothing else reads it, for the
    /// next message to be collected in: a connection that sends one message
    /// after another then allocates its buffer once. Its bytes are
    /// forgotten; a buffer larger than a typical message is freed instead,
    /// and so is one given while a message is being collected.
    pub fn reuse_buffer(&mut self, mut buffer: Vec<u8>) {
        if self.message.capacity() == 0 && buffer.capacity() <= MAX_KEPT_BUFFER {
            buffer.clear();
            self.message = buffer;
        }
    }

    pub(super) fn data(&mut self) {
        match &self.transaction {
            None => self.bad_sequence(Verb::Data, "Need MAIL and RCPT before DATA"),
            // RFC 2920 §3.1: with pipelining, the RCPTs may all have failed; 554 then.
            Some(tx) if tx.recipients.is_empty() => self.error(
                Some(Verb::Data),
                Reply::new(554, Some(EnhancedCode::new(5, 5, 1)), "No valid recipients"),
            ),
            Some(_) if self.bdat_in_progress => {
                self.bad_sequence(Verb::Data, "DATA cannot follow BDAT")
            }
            // RFC 3030 §3: BINARYMIME content can only come in BDAT chunks.
            Some(tx) if tx.body_type() == BodyType::BinaryMime => {
                self.bad_sequence(Verb::Data, "BODY=BINARYMIME requires BDAT")
            }
            Some(_) => self.raise(Event::StartData, None),
        }
    }

    pub(super) fn bdat(&mut self, chunk: Chunk) {
        // A chunk that would take the message past its limit is refused
        // before a byte of it is read, and the session ends: skipping that
        // many octets would keep the connection busy (and a 2^63-octet chunk
        // forever), and the client would not expect them discarded anyway.
        let limit = self.config().max_message_size;
        if self.content_size.saturating_add(chunk.size) > limit {
            let reply = size_exceeded();
            self.notices.push(Notice::Refused {
                verb: Some(Verb::Bdat),
                reply: reply.clone(),
            });
            let text = format!("{}; closing the connection", reply.text());
            self.close_with(Reply::new(reply.code(), reply.enhanced(), text));
            return;
        }
        let refusal = if !self.config().extensions.chunking {
            Some(Reply::new(
                502,
                Some(EnhancedCode::new(5, 5, 1)),
                "BDAT is not supported",
            ))
        } else {
            match &self.transaction {
                None => Some(Reply::new(
                    503,
                    Some(CODE_BAD_SEQUENCE),
                    "Need MAIL and RCPT before BDAT",
                )),
                Some(tx) if tx.recipients.is_empty() => Some(Reply::new(
                    554,
                    Some(EnhancedCode::new(5, 5, 1)),
                    "No valid recipients",
                )),
                Some(_) => None,
            }
        };
        if let Some(reply) = refusal {
            self.errors += 1;
            self.start_chunk(chunk, Some(reply));
            return;
        }
        if self.bdat_in_progress {
            self.start_chunk(chunk, None);
        } else {
            self.raise(Event::StartData, Some(chunk));
        }
    }

    /// Enters a BDAT chunk. An empty one (`BDAT 0 LAST`, RFC 3030 §2) is
    /// over at once: no octets will come to finish it, and waiting for
    /// some would hang the client.
    pub(super) fn start_chunk(&mut self, chunk: Chunk, discard: Option<Reply>) {
        if chunk.size == 0 {
            self.phase = Phase::Command;
            self.chunk_done(chunk.last, discard);
        } else {
            self.phase = Phase::Chunk {
                remaining: chunk.size,
                last: chunk.last,
                discard,
            };
        }
    }

    /// Takes octets of the current BDAT chunk.
    pub(super) fn chunk_bytes(&mut self, input: &[u8]) -> usize {
        let binary = self
            .transaction
            .as_ref()
            .is_some_and(|tx| tx.body_type() == BodyType::BinaryMime);
        let Phase::Chunk {
            remaining,
            last,
            discard,
        } = &mut self.phase
        else {
            return 0;
        };
        let take = input
            .len()
            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
        let bytes = &input[..take];
        *remaining -= take as u64;
        if discard.is_none() {
            self.content_size += take as u64;
            if !binary {
                self.bdat_check.feed(bytes);
            }
            // Within the size limit: `bdat` refused any chunk that would pass it.
            self.message.extend_from_slice(bytes);
        }
        if *remaining == 0 {
            let last = *last;
            let discard = discard.take();
            self.phase = Phase::Command;
            self.chunk_done(last, discard);
        }
        take
    }

    pub(super) fn chunk_done(&mut self, last: bool, discard: Option<Reply>) {
        if let Some(reply) = discard {
            self.reply(reply);
            if self.bdat_in_progress {
                self.reset_transaction();
            }
            return;
        }
        if !last {
            let text = format!("{} octets received", self.content_size);
            self.reply(Reply::new(250, Some(CODE_OK), text));
        } else {
            let binary = self
                .transaction
                .as_ref()
                .is_some_and(|tx| tx.body_type() == BodyType::BinaryMime);
            let clean = std::mem::take(&mut self.bdat_check).finish();
            if !binary && !clean {
                self.reply(bare_line_ending_refusal());
                self.reset_transaction();
            } else {
                self.raise(Event::Message, None);
            }
        }
    }

    pub(super) fn finish_data(&mut self) {
        let Phase::Data(decoder) = &self.phase else {
            return;
        };
        let (exceeded, bare) = (decoder.exceeded(), decoder.bare_line_ending());
        self.content_size = decoder.size();
        self.phase = Phase::Command;
        if exceeded {
            self.reply(size_exceeded());
            self.reset_transaction();
        } else if bare {
            self.reply(bare_line_ending_refusal());
            self.reset_transaction();
        } else {
            self.raise(Event::Message, None);
        }
    }

    pub(super) fn limit_for_decoder(&self) -> usize {
        usize::try_from(self.config().max_message_size).unwrap_or(usize::MAX)
    }
}

fn size_exceeded() -> Reply {
    Reply::new(
        552,
        Some(EnhancedCode::new(5, 3, 4)),
        "Message size exceeds fixed maximum message size",
    )
}

/// SMTP smuggling defence: see [`crate::data`] for why the message is refused
/// rather than normalised.
fn bare_line_ending_refusal() -> Reply {
    Reply::new(
        550,
        Some(EnhancedCode::new(5, 5, 2)),
        "Message refused: bare CR or LF in the content; lines must end with CRLF (RFC 5321 section 2.3.8)",
    )
}
