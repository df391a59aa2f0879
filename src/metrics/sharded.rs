//! Counters, gauges and latency histograms for the request path, sharded by thread.
//!
//! A counter that every worker thread increments lives on one cache line that the cores pass
//! back and forth: measured on two workers, the prometheus crate's shared counters and
//! histograms (five atomic operations per command on lines every thread writes) cost several
//! percent of the proxy's CPU, and almost nothing on one worker. Here each thread writes its own
//! shard (a cache-line-aligned slot picked once per thread), so an increment is an uncontended
//! atomic add; a scrape sums the shards. A histogram keeps one count per bucket and the sum in
//! nanoseconds: two adds per observation, and its total count is the sum of its buckets, so
//! `_count` always equals the `+Inf` bucket even while threads are observing.
use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Shards per metric: more than the worker threads of any machine this runs on, so threads
/// rarely share one (sharing is still correct, only slower).
pub const SHARDS: usize = 16;

/// Upper bounds, in seconds, of the latency buckets (commands and backend requests): 50 µs to
/// 5 s. The last bucket (`+Inf`) is implicit.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
const BUCKETS: usize = LATENCY_BUCKETS.len();

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard, assigned round-robin on first use.
#[inline]
pub fn shard() -> usize {
    SHARD.with(|s| match s.get() {
        usize::MAX => {
            let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(n);
            n
        }
        n => n,
    })
}

/// One shard on its own cache lines (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

/// A monotonic counter.
pub struct ShardedCounter {
    shards: Box<[Padded<AtomicU64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl ShardedCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A gauge moved up and down by increments, possibly on different threads: the shards' sum is
/// the value (a single shard may go negative).
pub struct ShardedGauge {
    shards: [Padded<AtomicI64>; SHARDS],
}

impl ShardedGauge {
    pub const fn new() -> ShardedGauge {
        ShardedGauge {
            shards: [const { Padded(AtomicI64::new(0)) }; SHARDS],
        }
    }

    #[inline]
    pub fn add(&self, n: i64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[repr(align(128))]
#[derive(Default)]
struct HistogramShard {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// A latency histogram with [`LATENCY_BUCKETS`].
pub struct ShardedHistogram {
    shards: Box<[HistogramShard]>,
}

/// The bucket bounds in nanoseconds, to compare durations without floating point.
const BOUNDS_NANOS: [u64; BUCKETS] = {
    let mut out = [0u64; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        // Every bound is a whole number of microseconds.
        out[i] = (LATENCY_BUCKETS[i] * 1e6 + 0.5) as u64 * 1000;
        i += 1;
    }
    out
};

impl Default for ShardedHistogram {
    fn default() -> Self {
        ShardedHistogram {
            shards: (0..SHARDS).map(|_| HistogramShard::default()).collect(),
        }
    }
}

/// What a histogram holds, summed over shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Non-cumulative counts; the last is `+Inf`.
    pub buckets: [u64; BUCKETS + 1],
    pub sum_nanos: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl ShardedHistogram {
    #[inline]
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // The first bound >= nanos (`le` semantics); BUCKETS (`+Inf`) past the last.
        let i = BOUNDS_NANOS.partition_point(|&b| b < nanos);
        let s = &self.shards[shard()];
        s.buckets[i].fetch_add(1, Ordering::Relaxed);
        s.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot {
            buckets: [0; BUCKETS + 1],
            sum_nanos: 0,
        };
        for s in self.shards.iter() {
            for (o, b) in out.buckets.iter_mut().zip(&s.buckets) {
                *o += b.load(Ordering::Relaxed);
            }
            out.sum_nanos = out
                .sum_nanos
                .wrapping_add(s.sum_nanos.load(Ordering::Relaxed));
        }
        out
    }
}

/// Label name/value pairs of one series.
pub type Labels<'a> = Vec<(&'static str, &'a str)>;

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn metric(labels: &Labels) -> Metric {
    Metric::from_label(
        labels
            .iter()
            .map(|(n, v)| {
                let mut p = LabelPair::default();
                p.set_name(n.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect(),
    )
}

/// The counts of histogram series: a request counter is its latency histogram's count.
pub fn counts<'a>(series: &[(Labels<'a>, Snapshot)]) -> Vec<(Labels<'a>, u64)> {
    series.iter().map(|(l, s)| (l.clone(), s.count())).collect()
}

/// A counter family from `(labels, value)` series.
pub fn counter_family(name: &str, help: &str, series: &[(Labels, u64)]) -> MetricFamily {
    let metrics = series
        .iter()
        .map(|(labels, v)| {
            let mut m = metric(labels);
            let mut c = Counter::default();
            c.set_value(*v as f64);
            m.set_counter(c);
            m
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

/// A gauge family from `(labels, value)` series.
pub fn gauge_family(name: &str, help: &str, series: &[(Labels, i64)]) -> MetricFamily {
    let metrics = series
        .iter()
        .map(|(labels, v)| {
            let mut m = metric(labels);
            let mut g = Gauge::default();
            g.set_value(*v as f64);
            m.set_gauge(g);
            m
        })
        .collect();
    family(name, help, MetricType::GAUGE, metrics)
}

/// A histogram family (bounds in seconds) from `(labels, snapshot)` series.
pub fn histogram_family(name: &str, help: &str, series: &[(Labels, Snapshot)]) -> MetricFamily {
    let metrics = series
        .iter()
        .map(|(labels, snap)| {
            let mut m = metric(labels);
            let mut h = prometheus::proto::Histogram::default();
            let mut cumulative = 0;
            let buckets = LATENCY_BUCKETS
                .iter()
                .zip(&snap.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            h.set_bucket(buckets);
            h.set_sample_count(snap.count());
            h.set_sample_sum(snap.sum_nanos as f64 / 1e9);
            m.set_histogram(h);
            m
        })
        .collect();
    family(name, help, MetricType::HISTOGRAM, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_nanos() {
        assert_eq!(BOUNDS_NANOS[0], 50_000);
        assert_eq!(BOUNDS_NANOS[4], 1_000_000);
        assert_eq!(BOUNDS_NANOS[BUCKETS - 1], 5_000_000_000);
    }

    #[test]
    fn shards_sum_across_threads() {
        let c = std::sync::Arc::new(ShardedCounter::default());
        let h = std::sync::Arc::new(ShardedHistogram::default());
        let g = std::sync::Arc::new(ShardedGauge::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, h, g) = (c.clone(), h.clone(), g.clone());
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        c.add(2);
                        h.observe(Duration::from_micros(i));
                        g.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        g.add(-1000); // decrements land on another shard than the increments
        assert_eq!(c.get(), 8000);
        assert_eq!(g.get(), 3000);
        let s = h.snapshot();
        assert_eq!(s.count(), 4000);
        // 0..=50 µs: 51 per thread; 51..=100 µs: 50; the rest up to 999 µs under 1 ms.
        assert_eq!(s.buckets[0], 4 * 51);
        assert_eq!(s.buckets[1], 4 * 50);
        assert_eq!(s.buckets[BUCKETS], 0);
        assert_eq!(s.sum_nanos, 4 * (0..1000u64).sum::<u64>() * 1000);
    }

    #[test]
    fn slow_observations_go_to_inf() {
        let h = ShardedHistogram::default();
        h.observe(Duration::from_secs(6));
        h.observe(Duration::from_secs(5));
        let s = h.snapshot();
        assert_eq!((s.buckets[BUCKETS], s.buckets[BUCKETS - 1]), (1, 1));
    }
}
