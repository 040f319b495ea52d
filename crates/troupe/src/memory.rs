//! The server's memory policy (glibc malloc): memory freed after a burst of requests goes back
//! to the operating system instead of staying resident for the life of the process.
//!
//! glibc keeps what a program frees for reuse, and gives a thread its own arena (up to 8 per
//! core); freed chunks in the middle of an arena are only returned by `malloc_trim`. After the
//! benchmark's workloads (pushes, pages read at c=8, 1 MiB KV bodies, exports) the server held
//! ~100 MB of free heap spread over 16 arenas on top of ~45 MB of SQLite page caches. So:
//!
//! - [`configure`] caps the arenas at [`ARENA_MAX`] (on a two-core machine, more arenas only
//!   spread free memory around; tcache keeps small allocations lock-free anyway);
//! - [`spawn_trimmer`] starts a thread that looks at the process once a second and calls
//!   `malloc_trim(0)` when the resident size grew or the heap in use shrank by
//!   [`TRIM_STEP`] since the last trim (one `/proc/self/statm` read and one `mallinfo2` call
//!   per check otherwise).
//!
//! Other allocators/C libraries: both are no-ops.

use std::time::Duration;

/// Upper bound on glibc malloc arenas.
pub const ARENA_MAX: i32 = 2;
/// How often the trimmer looks.
pub const TRIM_CHECK: Duration = Duration::from_secs(1);
/// Growth of resident memory (or drop of heap in use) that makes the trimmer trim.
pub const TRIM_STEP: u64 = 8 << 20;
/// Heap freed since the last trim that is worth a trim once the process is quiet.
pub const QUIET_TRIM_STEP: u64 = 1 << 20;
/// Change of resident size between two checks under which the process counts as quiet.
pub const QUIET_RSS_CHANGE: u64 = 256 << 10;

/// Sets the allocator's limits; call first thing in `main`, before any thread starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// What the trimmer remembers between checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimState {
    /// Resident bytes right after the last trim (or the lowest seen since).
    pub rss_after_trim: u64,
    /// Highest heap-in-use figure seen since the last trim.
    pub peak_in_use: u64,
    /// Resident bytes at the previous check.
    pub last_rss: u64,
}

impl TrimState {
    pub fn new(rss: u64, in_use: u64) -> Self {
        Self {
            rss_after_trim: rss,
            peak_in_use: in_use,
            last_rss: rss,
        }
    }

    /// One check: whether to trim now, given the resident bytes and the heap in use. When this
    /// says yes, call [`TrimState::trimmed`] with the figures after the trim.
    ///
    /// Trims when resident memory grew by a step since the last trim, when the heap in use
    /// shrank by a step, or, once things are quiet (resident size about as at the previous check),
    /// when anything at all was freed since the last trim (the end of a burst that was trimmed
    /// while it still held its buffers).
    pub fn should_trim(&mut self, rss: u64, in_use: u64) -> bool {
        let quiet = rss.abs_diff(self.last_rss) < QUIET_RSS_CHANGE;
        self.last_rss = rss;
        self.rss_after_trim = self.rss_after_trim.min(rss);
        self.peak_in_use = self.peak_in_use.max(in_use);
        rss >= self.rss_after_trim + TRIM_STEP
            || in_use + TRIM_STEP <= self.peak_in_use
            || (quiet && in_use + QUIET_TRIM_STEP <= self.peak_in_use)
    }

    pub fn trimmed(&mut self, rss: u64, in_use: u64) {
        *self = Self::new(rss, in_use);
    }
}

/// Starts the trimmer thread (it runs for the life of the process).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("troupe-mem-trim".into())
            .stack_size(64 * 1024)
            .spawn(|| {
                let mut state = TrimState::new(resident_bytes(), heap_in_use());
                loop {
                    std::thread::sleep(TRIM_CHECK);
                    if state.should_trim(resident_bytes(), heap_in_use()) {
                        // SAFETY: malloc_trim has no preconditions.
                        unsafe { libc::malloc_trim(0) };
                        state.trimmed(resident_bytes(), heap_in_use());
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "memory trimmer not started");
        }
    }
}

/// Resident set size of this process, bytes (0 if /proc is unreadable).
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Bytes the program holds in malloc's arenas (not counting chunks mapped on their own, which
/// go back to the system when freed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 has no preconditions.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn trims_after_growth_or_after_frees_only() {
        let mut s = TrimState::new(30 * MB, 10 * MB);
        // Steady: nothing to do.
        assert!(!s.should_trim(30 * MB, 10 * MB));
        assert!(!s.should_trim(30 * MB + TRIM_STEP - 1, 12 * MB));
        // Resident memory grew by a step: trim.
        assert!(s.should_trim(30 * MB + TRIM_STEP, 12 * MB));
        s.trimmed(32 * MB, 12 * MB);
        assert_eq!(s, TrimState::new(32 * MB, 12 * MB));
        // The heap grew inside memory already resident, then the program freed a step of it
        // while still busy (resident size moving): trim.
        assert!(!s.should_trim(32 * MB, 40 * MB));
        assert!(!s.should_trim(33 * MB, 40 * MB - TRIM_STEP + 1));
        assert!(s.should_trim(34 * MB, 40 * MB - TRIM_STEP));
        s.trimmed(20 * MB, 12 * MB);
        // Memory that went down by itself lowers the mark growth is measured from.
        assert!(!s.should_trim(15 * MB, 12 * MB));
        assert!(s.should_trim(15 * MB + TRIM_STEP, 12 * MB));
        s.trimmed(25 * MB, 14 * MB);
        // Less than a step freed: nothing while busy, one trim once quiet, then nothing.
        assert!(!s.should_trim(26 * MB, 16 * MB));
        assert!(!s.should_trim(27 * MB, 14 * MB));
        assert!(s.should_trim(27 * MB, 14 * MB));
        s.trimmed(24 * MB, 14 * MB);
        assert!(!s.should_trim(24 * MB, 14 * MB));
        assert!(!s.should_trim(24 * MB, 14 * MB));
    }

    #[test]
    fn resident_size_is_read() {
        let rss = resident_bytes();
        assert!(rss > 0 && rss < (1 << 40), "{rss}");
    }
}
