//! What the machine, or the container it runs in, allows this process: used to size
//! defaults (the gateway-wide bound on queued bytes) for where Sluice actually runs.

/// Bytes of memory this process may use: the cgroup's limit when there is one (a container
/// sees the host's RAM in /proc/meminfo, not its own limit), else physical memory.
pub fn memory_available() -> Option<u64> {
    let cgroup_v2 = read_limit("/sys/fs/cgroup/memory.max");
    let cgroup_v1 = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m));
    [cgroup_v2, cgroup_v1, physical].into_iter().flatten().min()
}

/// A cgroup limit file: a number, or `max` (v2) / a huge number (v1) for none.
fn read_limit(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<u64>().ok().filter(|&bytes| bytes < 1 << 60)
}

/// `MemTotal:  24576000 kB` from /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        assert_eq!(mem_total("MemTotal:       2048 kB\nMemFree: 1 kB\n"), Some(2048 * 1024));
        assert_eq!(mem_total("nothing here"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        assert!(memory_available().is_some_and(|b| b > 1 << 20));
    }
}
