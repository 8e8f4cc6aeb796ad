//! The spool's one error type.

use std::io;
use std::sync::Arc;

use crate::QueueId;

/// Everything that can go wrong in the spool.
///
/// It is `Clone` because one failed batch fails every submitter in it: the
/// same I/O error is handed to each completion (hence the `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The disk (or the file size limit, or a quota) is full: `ENOSPC`,
    /// `EFBIG` or `EDQUOT`. Nothing of the failed batch was kept; earlier
    /// messages are intact and later submits may succeed once space is back.
    #[error("spool storage is full: {0}")]
    StorageFull(#[source] Arc<io::Error>),
    /// Any other I/O error.
    #[error("spool I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// A record or encoded value failed to decode: the bytes are not what the
    /// spool wrote (bit rot, truncation, or a file that is not a segment).
    #[error("corrupt spool data: {0}")]
    Corrupt(&'static str),
    /// Another process holds the spool directory's lock (`spool.lock`).
    #[error("the spool directory is locked by another process")]
    Locked,
    /// The writer thread has stopped: the spool was shut down (or dropped).
    #[error("the spool is shut down")]
    ShutDown,
    /// The spool was opened with [`Spool::open_read_only`](crate::Spool::open_read_only).
    #[error("the spool is open read-only")]
    ReadOnly,
    /// The message does not fit into one record (the length field is 32 bits).
    #[error("message of {0} bytes is too large for the spool")]
    TooLarge(u64),
    /// A submit reused the queue id of a message that is still queued.
    #[error("queue id {0} is already in the spool")]
    DuplicateId(QueueId),
    /// A journal entry names a recipient index the message does not have.
    #[error("message {id} has no recipient #{recipient}")]
    NoSuchRecipient {
        /// The message.
        id: QueueId,
        /// The index that was out of range.
        recipient: u32,
    },
}

impl SpoolError {
    /// Classifies an I/O error: storage exhaustion versus everything else.
    pub(crate) fn from_io(err: io::Error) -> Self {
        let full = matches!(
            err.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
        ) || matches!(
            err.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
        );
        if full {
            SpoolError::StorageFull(Arc::new(err))
        } else {
            SpoolError::Io(Arc::new(err))
        }
    }

    /// True when the failure is lack of space: the SMTP front end answers
    /// `452 4.3.1 Insufficient system storage`. Every other error of a submit
    /// is a local processing error (`451 4.3.0`).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, SpoolError::StorageFull(_))
    }
}

impl From<io::Error> for SpoolError {
    fn from(err: io::Error) -> Self {
        SpoolError::from_io(err)
    }
}
