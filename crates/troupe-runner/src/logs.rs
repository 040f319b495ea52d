//! Job logs: one text file per build or run under `DATA/logs/`, every line prefixed with an
//! ISO-8601 timestamp (`2026-08-21T10:23:31.607Z `), as both clients expect when they re-emit a
//! child's log. A log is capped at [`LOG_LIMIT`] bytes; past that one note is written and the
//! rest dropped.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Largest log kept (10 M characters).
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
}

impl LogWriter {
    /// Opens (appending) the log of job `id`.
    pub fn open(data_dir: &Path, id: &str) -> std::io::Result<Self> {
        let path = log_path(data_dir, id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        let full = len >= LOG_LIMIT || (len > LOG_LIMIT / 2 && ends_with_note(&path));
        Ok(Self {
            inner: Mutex::new((BufWriter::with_capacity(64 * 1024, file), len, full)),
        })
    }

    /// Writes one line (a trailing newline is added; `\r` and `\n` inside are kept as spaces).
    pub fn line(&self, text: &str) {
        let text = text.trim_end_matches(['\n', '\r']);
        let line = format!(
            "{} {}\n",
            troupe_model::format_ts(troupe_model::now_ms()),
            text
        );
        let mut guard = self.inner.lock();
        let (file, written, full) = &mut *guard;
        if *full {
            return;
        }
        if *written + line.len() as u64 > LOG_LIMIT {
            *full = true;
            let note = format!(
                "{} [troupe] {NOTE} of {LOG_LIMIT} characters; further output is not kept.\n",
                troupe_model::format_ts(troupe_model::now_ms())
            );
            let _ = file.write_all(note.as_bytes());
            let _ = file.flush();
            return;
        }
        if file.write_all(line.as_bytes()).is_ok() {
            *written += line.len() as u64;
        }
    }

    /// A line from troupe itself (not the program); written through at once.
    pub fn system(&self, text: &str) {
        self.line(&format!("[troupe] {text}"));
        self.flush();
    }

    /// Pushes buffered lines to the file (readers of the log see them from then on).
    pub fn flush(&self) {
        let _ = self.inner.lock().0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_and_the_log_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogWriter::open(dir.path(), "job").unwrap();
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
        let again = LogWriter::open(dir.path(), "job").unwrap();
        again.line("more");
        again.flush();
        assert!(!std::fs::read_to_string(log_path(dir.path(), "job"))
            .unwrap()
            .contains(" more\n"));
    }
}
