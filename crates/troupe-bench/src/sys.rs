//! Linux process plumbing: CPU pinning, child servers, CPU time and RSS from /proc.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (and threads it creates later) to one CPU.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Which CPU runs the servers (and the in-process yardsticks) and which runs the load.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub server: Option<usize>,
    pub load: Option<usize>,
}

impl Placement {
    pub fn detect(no_pin: bool) -> Self {
        let cpus = allowed_cpus();
        if no_pin || cpus.len() < 2 {
            return Self {
                server: None,
                load: None,
            };
        }
        Self {
            server: Some(cpus[0]),
            load: Some(cpus[1]),
        }
    }
}

/// A child server, killed (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    pub stderr_path: std::path::PathBuf,
}

impl Server {
    /// Spawns `cmd` pinned to `cpu`, waits for a stdout line starting with `marker` followed by
    /// `http://ADDR`, and returns with the parsed address.
    pub fn start(
        name: &'static str,
        mut cmd: Command,
        cpu: Option<usize>,
        marker: &str,
        stderr_path: &Path,
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(stderr_path)?;
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The server dies with the harness, even when the harness is killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if let Some(cpu) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(rest) = line.strip_prefix(&marker) {
                        let addr = rest
                            .trim_start()
                            .strip_prefix("http://")
                            .and_then(|r| r.split_whitespace().next())
                            .and_then(|a| a.trim_end_matches('/').parse::<SocketAddr>().ok());
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let mut server = Self {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr_path: stderr_path.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => server.addr = addr,
            _ => bail!(
                "{name} did not print its address; stderr:\n{}",
                server.stderr_tail()
            ),
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "[{} stderr]\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time consumed by a process so far, in nanoseconds: the sum of its threads' schedstat
/// run time, and the set of thread ids it was read from. Threads that exit between two samples
/// take their time with them, so [`cpu_delta_ns`] falls back to `/proc/PID/stat` then.
#[derive(Debug, Clone)]
pub struct CpuSample {
    threads_ns: u64,
    tids: BTreeSet<u32>,
    stat_ticks: u64,
}

fn clock_ticks() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn cpu_sample(pid: u32) -> Option<CpuSample> {
    let mut threads_ns = 0;
    let mut tids = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let entry = entry.ok()?;
        let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) {
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                threads_ns += ns;
                tids.insert(tid);
            }
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(CpuSample {
        threads_ns,
        tids,
        stat_ticks: utime + stime,
    })
}

pub fn cpu_delta_ns(before: &CpuSample, after: &CpuSample) -> u64 {
    if before.tids.is_subset(&after.tids) && after.threads_ns >= before.threads_ns {
        after.threads_ns - before.threads_ns
    } else {
        after.stat_ticks.saturating_sub(before.stat_ticks) * 1_000_000_000 / clock_ticks()
    }
}

/// Memory figures of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
}

pub fn mem(pid: u32) -> Mem {
    let mut m = Mem::default();
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return m;
    };
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or("");
        let value: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            "VmRSS:" => m.rss_kb = value,
            "VmHWM:" => m.hwm_kb = value,
            "RssAnon:" => m.anon_kb = value,
            "RssFile:" => m.file_kb = value,
            _ => {}
        }
    }
    m
}

/// Resets the peak-RSS counter (VmHWM) of a process we own; false when the kernel refuses.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Load average (1 min) and the machine's steal time so far (clock ticks).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
