//! Job logs: one text file per build or run under `DATA/logs/`, every line prefixed with an
//! ISO-8601 timestamp (`2026-08-21T10:23:31.607Z `), as both clients expect when they re-emit a
//! child's log. A log is capped (by default at [`LOG_LIMIT`] bytes, `--max-log-bytes`); past
//! that one note is written and the rest dropped.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Largest log kept by default (10 M characters).
pub const LOG_LIMIT: u64 = 10_000_000;

/// Path of the log of job `id`.
pub fn log_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{id}.log"))
}

/// Removes what a deleted run leaves on disk: its log and its working folder.
pub fn remove_run_files(data_dir: &Path, run_id: &str) {
    let _ = std::fs::remove_file(log_path(data_dir, run_id));
    let _ = std::fs::remove_dir_all(data_dir.join("runs").join(run_id));
}

const NOTE: &str = "The log reached its limit";

/// True when the log already ends with the limit note (a reopened full log stays full).
fn ends_with_note(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut tail = Vec::new();
    if file.seek(SeekFrom::End(-512)).is_err() {
        return false;
    }
    let _ = file.read_to_end(&mut tail);
    String::from_utf8_lossy(&tail).contains(NOTE)
}

/// Appends timestamped lines to a job's log.
pub struct LogWriter {
    inner: Mutex<(BufWriter<File>, u64, bool)>,
    limit: u64,
    /// Bumped after every flush: followers of the log (`stream=1`) wait on it.
    flushed: watch::Sender<u64>,
}

impl LogWriter {
    /// Opens (appending) the log of job `id`, capped at `limit` bytes.
    pub fn open(data_dir: &Path, id: &str, limit: u64) -> std::io::Result<Self> {
        let path = log_path(data_dir, id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        let full = len >= limit || (len > limit / 2 && ends_with_note(&path));
        Ok(Self {
            inner: Mutex::new((BufWriter::with_capacity(64 * 1024, file), len, full)),
            limit,
            flushed: watch::channel(0).0,
        })
    }

    /// Writes one line (a trailing newline is added; trailing `\r`/`\n` are dropped).
    pub fn line(&self, text: &str) {
        self.lines(text.as_bytes(), true);
    }

    /// Writes every line of `chunk` (output read in one go, so all get the same timestamp);
    /// `last_complete`: whether the text after the last `\n` is a whole line too (else it is
    /// not written). Invalid UTF-8 becomes U+FFFD. Returns the bytes consumed.
    pub fn lines(&self, chunk: &[u8], last_complete: bool) -> usize {
        let mut stamp = [0u8; 25];
        stamp[..24].copy_from_slice(
            troupe_model::format_ts(troupe_model::now_ms())
                .as_bytes()
                .get(..24)
                .unwrap_or(b"1970-01-01T00:00:00.000Z"),
        );
        stamp[24] = b' ';
        let mut guard = self.inner.lock();
        let (file, written, full) = &mut *guard;
        let mut consumed = 0;
        while consumed < chunk.len() {
            let rest = &chunk[consumed..];
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..at], consumed + at + 1),
                None if last_complete => (rest, chunk.len()),
                None => break,
            };
            consumed = next;
            if *full {
                continue;
            }
            let mut end = line.len();
            while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
                end -= 1;
            }
            let text = String::from_utf8_lossy(&line[..end]);
            let size = (stamp.len() + text.len() + 1) as u64;
            if *written + size > self.limit {
                *full = true;
                let note = format!(
                    "{} [troupe] {NOTE} of {} characters; further output is not kept.\n",
                    troupe_model::format_ts(troupe_model::now_ms()),
                    self.limit
                );
                let _ = file.write_all(note.as_bytes());
                let _ = file.flush();
                continue;
            }
            if file.write_all(&stamp).is_ok()
                && file.write_all(text.as_bytes()).is_ok()
                && file.write_all(b"\n").is_ok()
            {
                *written += size;
            }
        }
        consumed
    }

    /// A line from troupe itself (not the program); written through at once.
    pub fn system(&self, text: &str) {
        self.line(&format!("[troupe] {text}"));
        self.flush();
    }

    /// Pushes buffered lines to the file (readers of the log see them from then on) and wakes
    /// its followers.
    pub fn flush(&self) {
        let _ = self.inner.lock().0.flush();
        self.flushed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes after each flush from now on; closed when the writer is dropped.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.flushed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_and_the_log_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogWriter::open(dir.path(), "job", LOG_LIMIT).unwrap();
        log.line("hello\r\n");
        let line = "x".repeat(1000);
        for _ in 0..(LOG_LIMIT / 1000 + 10) {
            log.line(&line);
        }
        log.line("after the cut");
        let text = std::fs::read_to_string(log_path(dir.path(), "job")).unwrap();
        assert!(text.len() as u64 <= LOG_LIMIT + 200);
        let first = text.lines().next().unwrap();
        assert_eq!(first.len(), 24 + 1 + 5, "{first}");
        assert!(first.ends_with(" hello") && first.as_bytes()[23] == b'Z');
        let last = text.lines().last().unwrap();
        assert!(last.contains("reached its limit"), "{last}");
        assert!(!text.contains("after the cut"));
        // Reopening a full log keeps it full.
        let again = LogWriter::open(dir.path(), "job", LOG_LIMIT).unwrap();
        again.line("more");
        again.flush();
        assert!(!std::fs::read_to_string(log_path(dir.path(), "job"))
            .unwrap()
            .contains(" more\n"));
    }
}
