//! The standard `process_*` metrics (CPU time, memory, file descriptors, threads, start time),
//! read from `/proc/self` at scrape time. They keep the names every Prometheus client library
//! uses, without the `slotproxy_` prefix, so stock dashboards and alerts work on them. On a
//! system without `/proc` they are simply absent.
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};
use std::sync::Mutex;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`): 100 on every Linux architecture
/// the proxy targets, and fixed by the kernel ABI, so it needs no `sysconf` (and no unsafe).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    /// Serializes collections: the CPU counter is advanced by the difference since the last.
    collecting: Mutex<()>,
}

impl ProcessCollector {
    pub fn new() -> prometheus::Result<ProcessCollector> {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))?;
        let int = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        ))?;
        if let Some(t) = start_time_seconds() {
            start_time.set(t);
        }
        let c = ProcessCollector {
            descs: Vec::new(),
            cpu,
            resident: int(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            )?,
            virtual_memory: int(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            )?,
            open_fds: int("process_open_fds", "Number of open file descriptors.")?,
            max_fds: int(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )?,
            threads: int("process_threads", "Number of OS threads in the process.")?,
            start_time,
            collecting: Mutex::new(()),
        };
        let descs = c
            .parts()
            .iter()
            .flat_map(|m| m.desc().into_iter().cloned())
            .collect();
        Ok(ProcessCollector { descs, ..c })
    }

    fn parts(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.threads,
            &self.start_time,
        ]
    }

    fn update(&self) {
        if let Some(stat) = read_stat() {
            let cpu = (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND;
            let past = self.cpu.get();
            if cpu > past {
                self.cpu.inc_by(cpu - past);
            }
            self.threads.set(stat.threads);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kb) = status_kb(&status, "VmRSS:") {
                self.resident.set(kb * 1024);
            }
            if let Some(kb) = status_kb(&status, "VmSize:") {
                self.virtual_memory.set(kb * 1024);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .as_deref()
            .and_then(max_open_files)
        {
            self.max_fds.set(max);
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return Vec::new();
        }
        let _one = self.collecting.lock().unwrap_or_else(|e| e.into_inner());
        self.update();
        self.parts().iter().flat_map(|m| m.collect()).collect()
    }
}

/// The fields of `/proc/self/stat` used here.
struct Stat {
    utime: u64,
    stime: u64,
    threads: i64,
    /// Ticks after boot.
    start: u64,
}

fn read_stat() -> Option<Stat> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
/// spaces, so fields are counted from the last `)`: the token after it is field 3.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)? as i64,
        start: field(22)?,
    })
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in kB.
fn status_kb(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on the `Max open files` line of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time (`btime` in `/proc/stat`) plus the process's start, in ticks after boot.
fn start_time_seconds() -> Option<f64> {
    let stat = read_stat()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + stat.start as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let text = "1234 (slot proxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 \
                    5 0 9876 123456789 2000 18446744073709551615";
        let s = parse_stat(text).expect("parses");
        assert_eq!((s.utime, s.stime, s.threads, s.start), (250, 30, 5, 9876));
    }

    #[test]
    fn parses_status_and_limits() {
        assert_eq!(
            status_kb("Name:\tx\nVmRSS:\t  5120 kB\n", "VmRSS:"),
            Some(5120)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let c = ProcessCollector::new().expect("valid");
        let names: Vec<String> = c.collect().iter().map(|m| m.name().to_string()).collect();
        assert!(names.contains(&"process_cpu_seconds_total".to_string()));
        assert!(c.resident.get() > 0);
        assert!(c.open_fds.get() > 0);
        assert!(c.start_time.get() > 1.6e9);
    }
}
