//! Resource figures read from the kernel: CPU time of this process's threads by role,
//! CPU time and resident memory of other processes, and the open-file limit.
//!
//! CPU is read from `/proc` rather than measured by wall time so every figure can say who
//! was busy: on a 2-core machine the load client, the gateway and the broker compete,
//! and a figure is only about the gateway when the gateway is the one out of CPU.

use std::fs;

use anyhow::{Context, Result};

/// Name prefix of the runtime threads that read the WebSocket clients.
pub const CLIENT_THREAD: &str = "bench-client";
/// Name of the thread that produces records (librdkafka's own threads start with `rdk:`).
pub const PRODUCER_THREAD: &str = "bench-producer";

/// Raises the soft open-file limit to the hard one: every client connection is a file.
pub fn raise_open_files() -> Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error()).context("setrlimit");
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// CPU seconds (user + system) of this whole process, from getrusage.
pub fn own_cpu() -> f64 {
    // SAFETY: getrusage fills the struct passed in.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds from a `/proc/.../stat` line. The command name (field 2) may
/// hold spaces, so fields are counted from its closing parenthesis.
fn stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// CPU seconds used so far by another process (all its threads, living ones).
pub fn process_cpu(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| stat_cpu(&s)).unwrap_or(0.0)
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a process has had in KiB (VmHWM, kept by the kernel): the
/// true peak, which sampling VmRSS can miss between two readings.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} line"))
}

/// Established TCP connections that process `pid` holds to `port` (a broker's), on any
/// local address. `/proc/PID/net/tcp` lists every socket of the network namespace, not the
/// process's, so its matches are kept only when one of the process's descriptors is that
/// socket (same inode).
pub fn established_to(pid: u32, port: u16) -> Result<usize> {
    const ESTABLISHED: &str = "01";
    let mut wanted = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else { continue };
            let remote_port = remote.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == ESTABLISHED && remote_port == Some(port) {
                if let Ok(inode) = inode.parse::<u64>() {
                    wanted.insert(inode);
                }
            }
        }
    }
    let mut held = 0;
    // Stops as soon as every candidate is found: the broker's connections are among the
    // process's first descriptors, ahead of thousands of client sockets.
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).context("read the process's descriptors")?.flatten() {
        if wanted.is_empty() {
            break;
        }
        let Ok(link) = fs::read_link(fd.path()) else { continue };
        let inode = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok());
        if inode.is_some_and(|i| wanted.remove(&i)) {
            held += 1;
        }
    }
    Ok(held)
}

/// CPU seconds of this process's threads, by role.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnThreads {
    /// The runtime threads that read WebSocket frames.
    pub clients: f64,
    /// The producing thread and librdkafka's threads.
    pub producer: f64,
    /// Everything in the process (getrusage).
    pub total: f64,
}

impl OwnThreads {
    pub fn now() -> OwnThreads {
        let mut t = OwnThreads { total: own_cpu(), ..Default::default() };
        let Ok(tasks) = fs::read_dir("/proc/self/task") else { return t };
        for task in tasks.flatten() {
            let path = task.path();
            let name = fs::read_to_string(path.join("comm")).unwrap_or_default();
            let cpu = fs::read_to_string(path.join("stat")).ok().and_then(|s| stat_cpu(&s)).unwrap_or(0.0);
            let name = name.trim();
            if name.starts_with(CLIENT_THREAD) {
                t.clients += cpu;
            } else if name.starts_with(PRODUCER_THREAD) || name.starts_with("rdk:") {
                t.producer += cpu;
            }
        }
        t
    }

    pub fn since(self, earlier: OwnThreads) -> OwnThreads {
        OwnThreads {
            clients: self.clients - earlier.clients,
            producer: self.producer - earlier.producer,
            total: self.total - earlier.total,
        }
    }
}

/// CPU seconds the whole machine spent busy (all cores, every process), from `/proc/stat`:
/// set beside this run's processes, the rest is load from elsewhere on a shared machine.
pub fn machine_busy() -> f64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else { return 0.0 };
    let Some(line) = stat.lines().next() else { return 0.0 };
    // cpu user nice system idle iowait irq softirq steal ...
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 8 {
        return 0.0;
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    busy / ticks_per_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu(line), Some(300.0 / ticks_per_second()));
    }
}
