//! Rebuilding the index from the segment files at open.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::format::{
    self, KIND_DONE, KIND_JOURNAL, KIND_MESSAGE, SEGMENT_HEADER_LEN, Scanned, Scanner,
    SegmentHeader,
};
use crate::index::{Index, Location, Segment};
use crate::{SpoolError, mmap};

/// What [`Spool::open`](crate::Spool::open) found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments: usize,
    /// Valid records replayed.
    pub records: u64,
    /// Messages still queued after replay.
    pub live_messages: usize,
    /// Bytes cut from the end of the last segment (an append interrupted by a
    /// crash: never acknowledged). A read-only open ignores them instead.
    pub torn_tail_bytes: u64,
    /// Damaged regions skipped inside segments (each logged as a warning).
    pub corrupt_regions: u64,
    /// Records whose checksums were right but whose contents did not decode.
    pub undecodable_records: u64,
    /// Segment files with a damaged header, set aside as `*.damaged`
    /// (read-write open) or ignored (read-only open).
    pub damaged_segments: Vec<PathBuf>,
    /// Segments deleted at open because nothing in them was live any more.
    pub deleted_segments: usize,
    /// Live messages copied forward by compaction at open.
    pub compacted_messages: usize,
}

#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) report: RecoveryReport,
    /// Largest queue id seen (message records and segment headers).
    pub(crate) max_id: u64,
    /// Sequence number of the newest segment seen, damaged ones included, so
    /// a new segment never reuses a name.
    pub(crate) max_seq: u64,
}

/// Lists `seg-*.log` files in sequence order; a writable open also removes
/// `*.tmp` leftovers of a segment creation or preparation interrupted by a
/// crash, and `*.dead` ones of a deletion. A finished prepared segment
/// stays, for the next rotation.
fn list_segments(dir: &Path, writable: bool) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = format::parse_segment_file_name(name) {
            segs.push((seq, entry.path()));
        } else if writable
            && name.starts_with("seg-")
            && (name.ends_with(".log.tmp") || name == crate::prepared::PREPARING)
        {
            tracing::info!(file = %entry.path().display(), "removing unfinished segment file");
            fs::remove_file(entry.path())?;
        } else if writable
            && name.starts_with("seg-")
            && name
                .strip_suffix(crate::reaper::DEAD_SUFFIX)
                .is_some_and(|n| n.ends_with(".log"))
        {
            // Renamed away before the crash (see `reaper`): never read.
            tracing::info!(file = %entry.path().display(), "removing a dead segment file");
            fs::remove_file(entry.path())?;
        }
    }
    segs.sort();
    Ok(segs)
}

/// A read-only opener's hold on a segment file: a shared lock, which the
/// live spool's reaper waits for before it cuts a dead file (see
/// `reaper`), taken while the file still has its name; then the file's
/// metadata. `None`: the segment died meanwhile (renamed away, or being
/// cut): its live messages were copied forward first, so there is nothing
/// in it to read.
fn hold_for_reading(file: &File, path: &Path) -> std::io::Result<Option<fs::Metadata>> {
    use std::os::unix::fs::MetadataExt;
    // A file system without `flock`: no reaper's lock to meet either.
    if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock_shared() {
        return Ok(None);
    }
    let named = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let held = file.metadata()?;
    Ok((held.dev() == named.dev() && held.ino() == named.ino()).then_some(held))
}

/// Whether the first bytes of a live head, `copied`, hold all its
/// records: the chunk copied last (from `chunk_start`) is zeros, and so is
/// everything after the last whole record. A record begins with its magic,
/// never a zero, so zeros there are the unused room of a prepared file (64
/// MiB of which a read-only opener need not copy), not a record cut short.
/// `from` is where the records not yet walked begin: each call walks only
/// what the last one had not (a body of zeros can make many calls).
fn holds_every_record(copied: &[u8], chunk_start: usize, from: &mut usize) -> bool {
    if !format::unused_from(copied, chunk_start) {
        return false;
    }
    let Ok(header) = SegmentHeader::decode(copied) else {
        return false;
    };
    let start = (*from).max(SEGMENT_HEADER_LEN);
    *from = Scanner::new(copied, start, header.seed)
        .filter_map(|item| match item {
            Scanned::Record { end, .. } => Some(end),
            Scanned::Corrupt { .. } => None,
        })
        .last()
        .unwrap_or(start);
    format::unused_from(copied, *from)
}

pub(crate) fn recover(
    dir: &Path,
    writable: bool,
    segment_size: u64,
) -> Result<Recovered, SpoolError> {
    let segs = list_segments(dir, writable)?;
    let mut index = Index::default();
    let mut report = RecoveryReport::default();
    let mut max_id = 0u64;
    let mut max_seq = 0u64;
    let last_seq = segs.last().map(|(s, _)| *s);

    for (seq, path) in segs {
        max_seq = max_seq.max(seq);
        let file = match File::open(&path) {
            Ok(f) => f,
            // A read-only open racing with the live spool's compaction: the
            // segment's live messages were copied forward before the delete.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !writable => continue,
            Err(e) => return Err(e.into()),
        };
        let metadata = if writable {
            file.metadata()?
        } else {
            match hold_for_reading(&file, &path)? {
                Some(metadata) => metadata,
                None => continue,
            }
        };
        let file_len = metadata.len();
        let map = if file_len >= SEGMENT_HEADER_LEN as u64 {
            let len = usize::try_from(file_len).map_err(std::io::Error::other)?;
            if !writable && Some(seq) == last_seq {
                let mut from = SEGMENT_HEADER_LEN;
                Some(mmap::snapshot(&file, len, |copied, chunk| {
                    holds_every_record(copied, chunk, &mut from)
                })?)
            } else {
                Some(mmap::map(&file, len)?)
            }
        } else {
            None
        };
        let header = match map.as_deref() {
            Some(bytes) => SegmentHeader::decode(bytes).and_then(|h| {
                if h.seq == seq {
                    Ok(h)
                } else {
                    Err(SpoolError::Corrupt("segment header names another segment"))
                }
            }),
            None => Err(SpoolError::Corrupt("segment shorter than its header")),
        };
        let (map, header) = match (map, header) {
            (Some(map), Ok(header)) => (map, header),
            (_, header) => {
                let why = header.err();
                tracing::warn!(file = %path.display(), ?why, "segment header damaged; setting the file aside");
                if writable {
                    let mut aside = path.clone().into_os_string();
                    aside.push(".damaged");
                    fs::rename(&path, &aside)?;
                    report.damaged_segments.push(PathBuf::from(aside));
                } else {
                    report.damaged_segments.push(path);
                }
                continue;
            }
        };
        report.segments += 1;
        max_id = max_id.max(header.id_floor);
        index.segments.insert(
            seq,
            Segment::new(file, SEGMENT_HEADER_LEN as u64, SEGMENT_HEADER_LEN as u64),
        );

        let mut valid_end = SEGMENT_HEADER_LEN;
        // Damage counts as a skipped region only once a valid record follows
        // it; damage running to the end of the file is the segment's tail.
        let mut damaged: Vec<usize> = Vec::new();
        for item in Scanner::new(&map, SEGMENT_HEADER_LEN, header.seed) {
            match item {
                Scanned::Record {
                    offset,
                    kind,
                    payload,
                    end,
                } => {
                    for at in damaged.drain(..) {
                        tracing::warn!(
                            segment = seq,
                            offset = at,
                            resume = offset,
                            "skipping damaged bytes"
                        );
                        report.corrupt_regions += 1;
                    }
                    valid_end = end;
                    report.records += 1;
                    if let Err(e) = replay(&mut index, seq, offset, kind, payload, &mut max_id) {
                        tracing::warn!(segment = seq, offset, error = %e, "skipping undecodable record");
                        report.undecodable_records += 1;
                    }
                }
                Scanned::Corrupt { offset, .. } => damaged.push(offset),
            }
        }
        if valid_end < map.len() && !format::unused_from(&map, valid_end) {
            let cut = (map.len() - valid_end) as u64;
            if Some(seq) == last_seq {
                // An append that never completed: nothing in it was acknowledged.
                tracing::info!(
                    segment = seq,
                    offset = valid_end,
                    bytes = cut,
                    "cutting torn tail"
                );
                report.torn_tail_bytes += cut;
                if writable {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(valid_end as u64)?;
                    f.sync_all()?;
                }
            } else {
                tracing::warn!(
                    segment = seq,
                    offset = valid_end,
                    bytes = cut,
                    "ignoring damaged end of an older segment"
                );
                report.corrupt_regions += 1;
            }
        }
        let Some(seg) = index.segments.get_mut(&seq) else {
            continue;
        };
        seg.len = valid_end as u64;
        // The scan's mapping serves reads too (it covers every valid record).
        seg.map = Some(std::sync::Arc::new(map));
        seg.map_hint = if writable && Some(seq) == last_seq {
            segment_size.max(valid_end as u64)
        } else {
            valid_end as u64
        };
    }
    report.live_messages = index.messages.len();
    Ok(Recovered {
        index,
        report,
        max_id,
        max_seq,
    })
}

fn replay(
    index: &mut Index,
    seg: u64,
    offset: usize,
    kind: u8,
    payload: &[u8],
    max_id: &mut u64,
) -> Result<(), SpoolError> {
    match kind {
        KIND_MESSAGE => {
            let m = format::decode_message(payload)?;
            let entry = &m.entry;
            *max_id = (*max_id).max(entry.id.0);
            let env_len = format::message_envelope_bytes(payload)?.len() as u64;
            // The payload's length came from a 32-bit field.
            let loc = Location::new(
                seg,
                offset as u64,
                (format::RECORD_HEADER_LEN + payload.len()) as u64,
                env_len as u32,
                (format::RECORD_HEADER_LEN + m.body_offset) as u32,
            );
            index.insert(
                entry.id,
                loc,
                entry.arrival_unix_ms,
                entry.envelope.recipients.len(),
                &m.states,
                m.held,
            );
        }
        KIND_JOURNAL => {
            let ops = format::decode_journal(payload)?;
            let applied = index.apply_journal(seg, &ops);
            if applied.bad_recipient > 0 {
                tracing::warn!(
                    segment = seg,
                    offset,
                    "journal entries for nonexistent recipients ignored"
                );
            }
        }
        KIND_DONE => {
            for id in format::decode_done(payload)? {
                index.remove(id);
            }
        }
        _ => return Err(SpoolError::Corrupt("unknown record type")),
    }
    Ok(())
}
