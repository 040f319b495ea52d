//! OS processes: spawning a child in its own process group with an explicit environment,
//! streaming its output into a log, killing the whole group, and reading `/proc` to measure the
//! group's memory and CPU and to recognise our own processes after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use troupe_model::actor::ProcessMark;

use crate::logs::LogWriter;

/// Spawns `argv` in `cwd` with exactly `env`, in a new process group, with stdin closed and
/// stdout/stderr streamed into `log` line by line (the returned task ends when both close).
pub fn spawn(
    argv: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    log: Arc<LogWriter>,
) -> std::io::Result<(Child, tokio::task::JoinHandle<()>)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pump = tokio::spawn(async move {
        let a = stdout.map(|s| tokio::spawn(pump_lines(s, log.clone())));
        let b = stderr.map(|s| tokio::spawn(pump_lines(s, log.clone())));
        if let Some(a) = a {
            let _ = a.await;
        }
        if let Some(b) = b {
            let _ = b.await;
        }
    });
    Ok((child, pump))
}

/// Longest line kept whole; a longer one is cut into lines of this size.
const MAX_LINE: usize = 64 * 1024;

/// Copies a child's output into its log: reads as much as the pipe holds (up to 128 KiB) and
/// writes all complete lines of it at once, with one timestamp. Lines are written through as
/// soon as the program pauses (a read that did not fill the buffer); while it writes fast they
/// are batched.
async fn pump_lines(mut stream: impl AsyncRead + Unpin, log: Arc<LogWriter>) {
    let mut buf = vec![0u8; 2 * MAX_LINE];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let drained = filled + n < buf.len();
        filled += n;
        let mut consumed = log.lines(&buf[..filled], false);
        if filled - consumed >= MAX_LINE {
            // No newline in sight: cut the line (at a character boundary).
            let cut = char_boundary(&buf[consumed..consumed + MAX_LINE]) + consumed;
            log.lines(&buf[consumed..cut], true);
            consumed = cut;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if drained {
            log.flush();
        }
    }
    if filled > 0 {
        log.lines(&buf[..filled], true);
    }
    log.flush();
}

/// Length of `text` without a UTF-8 sequence cut short at its end.
fn char_boundary(text: &[u8]) -> usize {
    let len = text.len();
    for back in 1..=3.min(len) {
        let byte = text[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead byte
        }
        let width = match byte {
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            b if b >= 0xC0 => 2,
            _ => 1,
        };
        return if width > back { len - back } else { len };
    }
    len
}

/// Sends `signal` to every process of the group led by `pgid`.
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a stale group id only yields ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// True while some process of group `pgid` exists.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 1 && unsafe { libc::killpg(pgid, 0) } == 0
}

/// The kernel boot id (changes on reboot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Fields of `/proc/PID/stat` after the command name: index 0 = state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Start time of `pid` in clock ticks after boot (field 22 of `/proc/PID/stat`).
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// What identifies a process we started, for recognising it after a restart.
pub fn mark(pid: i32) -> ProcessMark {
    ProcessMark {
        pid,
        start_time: start_time(pid).unwrap_or(0),
        boot_id: boot_id(),
    }
}

/// True when `mark` still names the very process we started (same boot, same start time).
pub fn is_ours(mark: &ProcessMark) -> bool {
    mark.boot_id == boot_id() && start_time(mark.pid) == Some(mark.start_time)
}

/// Memory and CPU time of a process group, summed over its live processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupUsage {
    pub rss_bytes: u64,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    pub processes: usize,
}

/// Sums RSS and CPU time of every process whose process group is `pgid`.
pub fn group_usage(pgid: i32) -> GroupUsage {
    let page = page_size();
    let mut usage = GroupUsage::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        // fields[2] = pgrp (field 5), [11]/[12] = utime/stime (14/15), [21] = rss pages (24).
        if fields.get(2).and_then(|s| s.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        if fields.first().map(String::as_str) == Some("Z") {
            continue;
        }
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        usage.cpu_ticks += num(11) + num(12);
        usage.rss_bytes += num(21) * page;
        usage.processes += 1;
    }
    usage
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// Clock ticks per second.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Total memory of the machine in MB (`MemTotal`).
pub fn total_memory_mbytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

/// A free TCP port on 127.0.0.1 (for `ACTOR_WEB_SERVER_PORT`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4321)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Pumps `pieces` (written one by one through a pipe) into a fresh log; returns its lines
    /// without the timestamps.
    async fn pumped(pieces: Vec<Vec<u8>>) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(LogWriter::open(dir.path(), "job", crate::LOG_LIMIT).unwrap());
        let (mut tx, rx) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            for piece in pieces {
                tx.write_all(&piece).await.unwrap();
                tx.flush().await.unwrap();
            }
        });
        pump_lines(rx, log).await;
        writer.await.unwrap();
        let text = std::fs::read_to_string(crate::logs::log_path(dir.path(), "job")).unwrap();
        text.lines()
            .map(|line| {
                assert_eq!(line.as_bytes()[23], b'Z', "{line}");
                line[25..].to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_joined() {
        let lines = pumped(vec![
            b"hel".to_vec(),
            b"lo\r\nwor".to_vec(),
            b"ld\n\nlast".to_vec(),
        ])
        .await;
        assert_eq!(lines, vec!["hello", "world", "", "last"]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let lines = pumped(vec![b"a\xffb\n".to_vec()]).await;
        assert_eq!(lines, vec!["a\u{fffd}b"]);
    }

    #[tokio::test]
    async fn endless_lines_are_cut_at_character_boundaries() {
        // 150,001 two-byte characters with no newline, then a short line.
        let long = "é".repeat(150_001);
        let lines = pumped(vec![long.as_bytes().to_vec(), b"\nshort\n".to_vec()]).await;
        assert!(lines.len() >= 4, "{}", lines.len());
        assert!(lines.iter().all(|line| line.len() <= MAX_LINE));
        assert!(!lines.iter().any(|line| line.contains('\u{fffd}')));
        assert_eq!(lines[..lines.len() - 1].concat(), long);
        assert_eq!(lines.last().unwrap(), "short");
    }

    #[test]
    fn char_boundary_drops_only_a_cut_sequence() {
        assert_eq!(char_boundary(b"abc"), 3);
        assert_eq!(char_boundary("aé".as_bytes()), 3);
        assert_eq!(char_boundary(&"aé".as_bytes()[..2]), 1);
        assert_eq!(char_boundary(&"a€".as_bytes()[..3]), 1);
        assert_eq!(char_boundary(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(char_boundary("a😀".as_bytes()), 5);
        assert_eq!(char_boundary(b"\x80\x80\x80\x80"), 4);
    }
}
