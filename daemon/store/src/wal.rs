//! The write-ahead log: numbered segment files of length-prefixed, checksummed JSON records.
//!
//! A record is `[len: u32 LE][crc32: u32 LE][len bytes of JSON]`. An append returns once the
//! record is on disk (`fdatasync`). Replay reads every segment in order; a torn record at the end
//! of the last segment (a crash mid-append) is cut off, any other damage is an error.
//!
//! A checkpoint writes the image of what is still pending (open runs, points not yet completed)
//! into its own file, `wal/NNNNNNNN.image` (the records a replay starts from, before segment
//! NNNNNNNN), written whole and renamed into place: never torn.
//!
//! Versioned: a segment (and an image) starts with the record `{"lrid_wal_format": N}` ([`WAL_FORMAT`]).
//! Segments without it were written before the format had a number and are format 1. A
//! segment of a format newer than this lrid's is refused, saying so, and left as it is.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The format of the records this lrid writes; it reads every format up to it.
pub const WAL_FORMAT: u32 = 1;

/// The first record of a segment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentHeader {
    lrid_wal_format: u32,
}

/// A segment file's path: `wal/00000042.wal`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.wal"))
}

/// A checkpoint image's path: `wal/00000042.image` (replayed before segment 42).
pub(crate) fn image_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.image"))
}

/// The checkpoint images present in `dir`.
pub(crate) fn images(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(seqs);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(seq) = name
            .to_string_lossy()
            .strip_suffix(".image")
            .and_then(|s| s.parse().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Writes the image replayed before segment `seq`: the whole file, made durable, then renamed
/// into place.
pub(crate) fn write_image<R: Serialize>(dir: &Path, seq: u64, records: &[R]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = image_path(dir, seq);
    let tmp = path.with_extension("image.tmp");
    {
        let mut w = WalWriter {
            file: File::create(&tmp).map_err(|e| Error::io(&tmp, e))?,
            path: tmp.clone(),
            seq,
            sync: false,
            buf: Vec::new(),
        };
        w.append(&[SegmentHeader {
            lrid_wal_format: WAL_FORMAT,
        }])?;
        w.append(records)?;
        w.file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

/// Reads the image replayed before segment `seq` (any damage is an error: it is never torn).
pub(crate) fn read_image<R: for<'de> Deserialize<'de>>(dir: &Path, seq: u64) -> Result<Vec<R>> {
    read_records(&image_path(dir, seq), false)
}

/// The segments present in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    if !dir.exists() {
        return Ok(seqs);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// An open segment being appended to.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: File,
    path: PathBuf,
    pub(crate) seq: u64,
    sync: bool,
    buf: Vec<u8>,
}

impl WalWriter {
    pub(crate) fn create(dir: &Path, seq: u64, sync: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let empty = file.metadata().map_err(|e| Error::io(&path, e))?.len() == 0;
        let mut writer = Self {
            file,
            path,
            seq,
            sync,
            buf: Vec::new(),
        };
        if empty {
            writer.append(&[SegmentHeader {
                lrid_wal_format: WAL_FORMAT,
            }])?;
        }
        if sync {
            sync_dir(dir)?;
        }
        Ok(writer)
    }

    /// Appends records and returns once they are durable.
    pub(crate) fn append<R: Serialize>(&mut self, records: &[R]) -> Result<()> {
        self.buf.clear();
        for r in records {
            let json = serde_json::to_vec(r).expect("records serialise");
            self.buf
                .extend_from_slice(&(json.len() as u32).to_le_bytes());
            self.buf
                .extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
            self.buf.extend_from_slice(&json);
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}

/// Reads every record of segment `seq`. A torn tail is cut off when `last` (it can only come
/// from a crash during the final append); otherwise it is an error.
pub(crate) fn read_segment<R: for<'de> Deserialize<'de>>(
    dir: &Path,
    seq: u64,
    last: bool,
) -> Result<Vec<R>> {
    read_records(&segment_path(dir, seq), last)
}

fn read_records<R: for<'de> Deserialize<'de>>(path: &Path, last: bool) -> Result<Vec<R>> {
    let path = path.to_path_buf();
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let total = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut reader, &mut head).map_err(|e| Error::io(&path, e))? {
            0 => break,
            8 => {}
            _ => return torn(&path, offset, total, last, records),
        }
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
        if offset + 8 + len as u64 > total {
            return torn(&path, offset, total, last, records);
        }
        let mut body = vec![0u8; len];
        reader
            .read_exact(&mut body)
            .map_err(|e| Error::io(&path, e))?;
        if crc32fast::hash(&body) != crc {
            if last && offset + 8 + len as u64 == total {
                return torn(&path, offset, total, last, records);
            }
            return Err(Error::Corrupt(format!(
                "{}: checksum mismatch in the record at byte {offset}",
                path.display()
            )));
        }
        if offset == 0
            && let Ok(header) = serde_json::from_slice::<SegmentHeader>(&body)
        {
            if header.lrid_wal_format > WAL_FORMAT {
                return Err(Error::NewerFormat(format!(
                    "{} is write-ahead-log format {}; this lrid ({}) reads formats 1 to {WAL_FORMAT}: run a newer lrid on this data folder (nothing was changed)",
                    path.display(),
                    header.lrid_wal_format,
                    env!("CARGO_PKG_VERSION")
                )));
            }
            offset += 8 + len as u64;
            continue;
        }
        let record = serde_json::from_slice(&body).map_err(|e| {
            Error::Corrupt(format!(
                "{}: undecodable record at byte {offset}: {e}",
                path.display()
            ))
        })?;
        records.push(record);
        offset += 8 + len as u64;
    }
    Ok(records)
}

fn torn<R>(path: &Path, offset: u64, total: u64, last: bool, records: Vec<R>) -> Result<Vec<R>> {
    if !last {
        return Err(Error::Corrupt(format!(
            "{}: record at byte {offset} is cut short, and later segments exist",
            path.display()
        )));
    }
    tracing::warn!(
        path = %path.display(),
        offset,
        lost_bytes = total - offset,
        "cutting off a torn record at the end of the write-ahead log (a crash during an append; it was never acknowledged)"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.set_len(offset).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(records)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Makes a directory's entries (new or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, true).unwrap();
        w.append(&["a".to_string(), "b".to_string()]).unwrap();
        w.append(&["c".to_string()]).unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let full = std::fs::read(&path).unwrap();
        // A crash in the middle of a fourth append.
        let mut torn_bytes = full.clone();
        torn_bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &torn_bytes).unwrap();
        let got: Vec<String> = read_segment(dir.path(), 1, true).unwrap();
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(std::fs::read(&path).unwrap(), full, "tail cut off");
        // The same damage in an earlier segment is an error.
        std::fs::write(&path, &torn_bytes).unwrap();
        let e = read_segment::<String>(dir.path(), 1, false).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        // A flipped bit inside a record is detected.
        let mut bad = full.clone();
        bad[full.len() - 3] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let e = read_segment::<String>(dir.path(), 1, false).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert_eq!(segments(dir.path()).unwrap(), [1]);
    }

    /// Raw records, as a segment without a header (written before the format had a number).
    fn raw(records: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(r.as_bytes()).to_le_bytes());
            out.extend_from_slice(r.as_bytes());
        }
        out
    }

    #[test]
    fn segments_carry_their_format_and_older_ones_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, false).unwrap();
        w.append(&["a".to_string()]).unwrap();
        drop(w);
        let bytes = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        assert_eq!(&bytes[8..8 + 21], br#"{"lrid_wal_format":1}"#);
        // Reopening a segment does not write a second header.
        let mut w = WalWriter::create(dir.path(), 1, false).unwrap();
        w.append(&["b".to_string()]).unwrap();
        let got: Vec<String> = read_segment(dir.path(), 1, true).unwrap();
        assert_eq!(got, ["a", "b"]);
        // A segment from before the header: format 1, read as it is.
        std::fs::write(segment_path(dir.path(), 2), raw(&["\"x\"", "\"y\""])).unwrap();
        let got: Vec<String> = read_segment(dir.path(), 2, true).unwrap();
        assert_eq!(got, ["x", "y"]);
        // A newer format is refused, and the file is left as it was.
        let newer = raw(&[r#"{"lrid_wal_format":2}"#, "\"z\""]);
        std::fs::write(segment_path(dir.path(), 3), &newer).unwrap();
        let e = read_segment::<String>(dir.path(), 3, true).unwrap_err();
        assert!(matches!(e, Error::NewerFormat(_)), "{e}");
        assert!(
            e.to_string()
                .contains("is write-ahead-log format 2; this lrid"),
            "{e}"
        );
        assert_eq!(std::fs::read(segment_path(dir.path(), 3)).unwrap(), newer);
    }
}
