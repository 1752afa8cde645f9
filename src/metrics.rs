//! What the server counts for `/metrics`: plain atomics bumped on the message path,
//! read and rendered in the Prometheus text format only when someone scrapes.
//!
//! Nothing here takes a lock. A counter is one relaxed `fetch_add` on a field of a
//! shared struct; a histogram is a fixed set of atomic buckets; the labelled
//! families are arrays indexed by small enums, so the hot path never looks a label
//! up in a map (the registry's `Family` would take a read lock per increment). The
//! scrape builds a `prometheus_client` registry around a snapshot of these values
//! and lets that crate write the exposition format.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// How a connection reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A plain TCP socket speaking newline-delimited frames.
    Tcp,
    /// The same over TLS.
    Tls,
    /// A WebSocket on the HTTP listener.
    Ws,
    /// A WebSocket over HTTPS.
    Wss,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A password login succeeded (`r`/10).
    Ok,
    /// A session token was accepted (`r`/10).
    Resumed,
    /// Wrong name, password or token (`r`/20, or `r`/22 on the connection's last try).
    Failed,
    /// Refused by a failure cap before any check (`r`/22).
    Capped,
    /// The hashing pool or the account was busy (`r`/24).
    Busy,
    /// The store failed (`e`/69).
    Error,
}

impl LoginOutcome {
    const ALL: [LoginOutcome; 6] = [
        LoginOutcome::Ok,
        LoginOutcome::Resumed,
        LoginOutcome::Failed,
        LoginOutcome::Capped,
        LoginOutcome::Busy,
        LoginOutcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            LoginOutcome::Ok => "ok",
            LoginOutcome::Resumed => "resumed",
            LoginOutcome::Failed => "failed",
            LoginOutcome::Capped => "capped",
            LoginOutcome::Busy => "busy",
            LoginOutcome::Error => "error",
        }
    }
}

/// A committed message's kind and what became of it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A direct message pushed to its online recipient (`r`/50).
    DirectDelivered,
    /// A direct message for an offline recipient, kept for later (`r`/51).
    DirectStored,
    /// A broadcast that reached at least one online user.
    BroadcastDelivered,
    /// A broadcast nobody else was online for (kept in history).
    BroadcastStored,
}

impl Accepted {
    const ALL: [Accepted; 4] = [
        Accepted::DirectDelivered,
        Accepted::DirectStored,
        Accepted::BroadcastDelivered,
        Accepted::BroadcastStored,
    ];

    fn labels(self) -> [(&'static str, &'static str); 2] {
        let (kind, outcome) = match self {
            Accepted::DirectDelivered => ("direct", "delivered"),
            Accepted::DirectStored => ("direct", "stored"),
            Accepted::BroadcastDelivered => ("broadcast", "delivered"),
            Accepted::BroadcastStored => ("broadcast", "stored"),
        };
        [("kind", kind), ("outcome", outcome)]
    }
}

/// A histogram with fixed upper bounds and atomic buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the last for `+Inf`; not cumulative (the scrape sums).
    counts: Box<[AtomicU64]>,
    /// The sum of observations, in `1 / SCALE` units, so it can be an integer atomic.
    sum: AtomicU64,
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((value * self.scale).round() as u64, Ordering::Relaxed);
    }

    /// `(sum, count, cumulative buckets)` as the exposition format wants them.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            buckets.push((
                self.bounds.get(i).copied().unwrap_or(f64::INFINITY),
                running,
            ));
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        (sum, running, buckets)
    }
}

/// Store commit latency buckets, seconds: an fsync is 0.1 ms on a fast SSD, tens of
/// milliseconds on a busy disk.
const COMMIT_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Messages per committed batch.
const BATCH_MESSAGES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every value the server counts (see the module doc).
#[derive(Debug)]
pub struct Metrics {
    connections: [AtomicI64; 4],
    logins: [AtomicU64; 6],
    accepted: [AtomicU64; 4],
    deliveries: AtomicU64,
    slow_consumers: AtomicU64,
    rate_limited: AtomicU64,
    /// Seconds each write batch took to commit (and fsync).
    pub commit_seconds: Histogram,
    /// Messages in each committed write batch.
    pub batch_messages: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            connections: Default::default(),
            logins: Default::default(),
            accepted: Default::default(),
            deliveries: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            // Microseconds: sums stay exact for centuries of commits.
            commit_seconds: Histogram::new(COMMIT_SECONDS, 1e6),
            batch_messages: Histogram::new(BATCH_MESSAGES, 1.0),
        }
    }
}

/// Values that are read from elsewhere at scrape time, not counted here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Logins and registrations waiting for a hashing slot.
    pub hash_queue: usize,
    /// Users logged in.
    pub users_online: usize,
}

impl Metrics {
    /// A connection of `transport` began serving.
    pub fn connection_opened(&self, transport: Transport) {
        self.connections[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of `transport` ended.
    pub fn connection_closed(&self, transport: Transport) {
        self.connections[transport as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// A login ended with `outcome`.
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A message was committed, with `what` became of it.
    pub fn accepted(&self, what: Accepted) {
        self.accepted[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` pushes were written to a connection.
    pub fn delivered(&self, n: u64) {
        if n > 0 {
            self.deliveries.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A connection was closed as a slow consumer (`e`/67).
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// A message frame was refused by the rate limit (`e`/74).
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A write batch of `messages` committed in `took`.
    pub fn batch_committed(&self, messages: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_messages.observe(messages as f64);
    }

    /// The Prometheus text exposition of everything, with `gauges` read by the caller.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut registry = Registry::with_prefix("moechat");
        registry.register_collector(Box::new(Scrape {
            values: self.snapshot(),
            gauges,
        }));
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections: Transport::ALL.map(|t| {
                (
                    t.name(),
                    self.connections[t as usize].load(Ordering::Relaxed),
                )
            }),
            logins: LoginOutcome::ALL
                .map(|o| (o.name(), self.logins[o as usize].load(Ordering::Relaxed))),
            accepted: Accepted::ALL.map(|a| {
                (
                    a.labels(),
                    self.accepted[a as usize].load(Ordering::Relaxed),
                )
            }),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            commit_seconds: self.commit_seconds.snapshot(),
            batch_messages: self.batch_messages.snapshot(),
        }
    }
}

type HistogramSnapshot = (f64, u64, Vec<(f64, u64)>);

/// The values of one scrape.
#[derive(Debug)]
struct Snapshot {
    connections: [(&'static str, i64); 4],
    logins: [(&'static str, u64); 6],
    accepted: [([(&'static str, &'static str); 2], u64); 4],
    deliveries: u64,
    slow_consumers: u64,
    rate_limited: u64,
    commit_seconds: HistogramSnapshot,
    batch_messages: HistogramSnapshot,
}

#[derive(Debug)]
struct Scrape {
    values: Snapshot,
    gauges: Gauges,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.values;
        let mut family = encoder.encode_descriptor(
            "connections_open",
            "Connections being served, by transport.",
            None,
            MetricType::Gauge,
        )?;
        for (transport, n) in v.connections {
            ConstGauge::new(n).encode(family.encode_family(&[("transport", transport)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "logins",
            "Login requests, by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in v.logins {
            ConstCounter::new(n).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "messages_accepted",
            "Messages committed, by kind and by what became of them at once.",
            None,
            MetricType::Counter,
        )?;
        for (labels, n) in &v.accepted {
            ConstCounter::new(*n).encode(family.encode_family(labels)?)?;
        }
        counter(
            &mut encoder,
            "deliveries",
            "Pushes written to connections (live and catch-up).",
            v.deliveries,
        )?;
        counter(
            &mut encoder,
            "slow_consumers_closed",
            "Connections closed because their outbound queue was full (e/67).",
            v.slow_consumers,
        )?;
        counter(
            &mut encoder,
            "rate_limited_frames",
            "Message frames refused by the per-connection rate limit (e/74).",
            v.rate_limited,
        )?;
        histogram(
            &mut encoder,
            "store_commit_seconds",
            "Time to commit (and fsync) one write batch.",
            &v.commit_seconds,
        )?;
        histogram(
            &mut encoder,
            "store_batch_messages",
            "Messages in one committed write batch.",
            &v.batch_messages,
        )?;
        gauge(
            &mut encoder,
            "hash_queue_depth",
            "Logins and registrations waiting for an argon2 slot.",
            self.gauges.hash_queue as i64,
        )?;
        gauge(
            &mut encoder,
            "users_online",
            "Users logged in.",
            self.gauges.users_online as i64,
        )?;
        let mut info =
            encoder.encode_descriptor("build", "The server's version.", None, MetricType::Info)?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    (sum, count, buckets): &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(*sum, *count, buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_counts_everything() {
        let h = Histogram::new(&[1.0, 10.0], 1.0);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert_eq!(sum, 57.0);
        assert_eq!(buckets, vec![(1.0, 2), (10.0, 3), (f64::INFINITY, 4)]);
    }

    #[test]
    fn render_names_every_family_with_the_prefix() {
        let m = Metrics::default();
        m.connection_opened(Transport::Ws);
        m.login(LoginOutcome::Resumed);
        m.accepted(Accepted::DirectStored);
        m.delivered(3);
        m.batch_committed(5, Duration::from_micros(300));
        let text = m.render(Gauges {
            hash_queue: 2,
            users_online: 1,
        });
        for line in [
            "moechat_connections_open{transport=\"ws\"} 1",
            "moechat_connections_open{transport=\"tcp\"} 0",
            "moechat_logins_total{outcome=\"resumed\"} 1",
            "moechat_messages_accepted_total{kind=\"direct\",outcome=\"stored\"} 1",
            "moechat_deliveries_total 3",
            "moechat_store_commit_seconds_bucket{le=\"0.0005\"} 1",
            "moechat_store_batch_messages_sum 5.0",
            "moechat_hash_queue_depth 2",
            "moechat_users_online 1",
            "moechat_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
