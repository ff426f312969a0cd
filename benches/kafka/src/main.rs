//! `sluice-kafka-bench`: produce and consume over the Kafka protocol with librdkafka, reported like
//! `sluice bench` (same table columns, same JSON fields), so that a Kafka-API broker can be read
//! beside Sluice's durable publish.
//!
//! ```text
//! sluice-kafka-bench --brokers 127.0.0.1:9092 --scenario produce --msgs 200000 --size 16 \
//!     --acks all --linger-ms 1 --batch-size 65536 --json produce.json
//! sluice-kafka-bench --brokers 127.0.0.1:9092 --scenario consume --msgs 200000
//! ```
//! Produce latency is send to delivery report (the broker's ack under `--acks`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Produce,
    Consume,
}

#[derive(Parser, Debug)]
#[command(name = "sluice-kafka-bench", about = "Kafka-protocol load with sluice bench's report")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, value_enum, default_value = "produce")]
    scenario: Scenario,
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    #[arg(long, default_value_t = 200_000)]
    msgs: u64,
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// The producer's `acks`: all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// The producer's `batch.size` in bytes.
    #[arg(long, default_value_t = 65_536)]
    batch_size: u64,
    /// Most messages sent but not yet acknowledged (as `sluice bench --in-flight`).
    #[arg(long, default_value_t = 256)]
    in_flight: u64,
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Records each delivery report's latency.
struct Reports {
    epoch: Instant,
    hist: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    errors: AtomicU64,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<u64>) {
        match result {
            Ok(_) => {
                let now = self.epoch.elapsed().as_nanos() as u64;
                if let Ok(mut h) = self.hist.lock() {
                    let _ = h.record(now.saturating_sub(*sent).max(1));
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid bounds")
}

fn create_topic(args: &Args) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_lite_block_on(admin.create_topics([&topic], &options))?;
    for result in results {
        if let Err((name, code)) = result {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                eprintln!("creating topic {name}: {code}");
            }
        }
    }
    Ok(())
}

/// Runs one future to completion on this thread (librdkafka's admin calls are futures).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

struct Outcome {
    elapsed: Duration,
    messages: u64,
    errors: u64,
    latency: Histogram<u64>,
}

fn produce(args: &Args) -> Result<Outcome, KafkaError> {
    let reports = Reports {
        epoch: Instant::now(),
        hist: Mutex::new(histogram()),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    };
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .create_with_context(reports)?;
    let mut payload = vec![b'k'; args.size.max(8)];
    let start = Instant::now();
    let epoch = producer.context().epoch;
    let mut i = 0u64;
    let ctx = producer.context();
    while i < args.msgs {
        let acked = ctx.delivered.load(Ordering::Relaxed) + ctx.errors.load(Ordering::Relaxed);
        if i - acked >= args.in_flight.max(1) {
            producer.poll(Duration::from_millis(1));
            continue;
        }
        let stamp = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let record = BaseRecord::with_opaque_to(&args.topic, Box::new(stamp)).payload(&payload[..]);
        match producer.send::<[u8], [u8]>(record) {
            Ok(()) => i += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120))?;
    let elapsed = start.elapsed();
    let latency = ctx.hist.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    Ok(Outcome {
        elapsed,
        messages: ctx.delivered.load(Ordering::Relaxed),
        errors: ctx.errors.load(Ordering::Relaxed),
        latency,
    })
}

fn consume(args: &Args) -> Result<Outcome, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("sluice-bench-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    // Partitions assigned, not a group subscription: the time measured is the fetches', without
    // a coordinator's rebalance delay.
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..args.partitions.max(1) {
        partitions.add_partition_offset(&args.topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&partitions)?;
    let start = Instant::now();
    let (mut n, mut errors, mut idle) = (0u64, 0u64, Instant::now());
    while n < args.msgs && idle.elapsed() < Duration::from_secs(15) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                n += 1;
                idle = Instant::now();
                std::hint::black_box(m.payload());
            }
            Some(Err(_)) => errors += 1,
            None => {}
        }
    }
    Ok(Outcome {
        elapsed: start.elapsed(),
        messages: n,
        errors,
        latency: histogram(),
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = create_topic(&args) {
        eprintln!("sluice-kafka-bench: cannot create the topic: {e}");
    }
    let outcome = match args.scenario {
        Scenario::Produce => produce(&args),
        Scenario::Consume => consume(&args),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sluice-kafka-bench: {e}");
            std::process::exit(1);
        }
    };
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let rate = outcome.messages as f64 / secs;
    let h = &outcome.latency;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let latency = (!h.is_empty()).then(|| {
        serde_json::json!({
            "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p999": us(0.999),
            "p9999": us(0.9999), "max": h.max() as f64 / 1e3,
        })
    });
    let scenario = match args.scenario {
        Scenario::Produce => "produce",
        Scenario::Consume => "consume",
    };
    let label = args.label.clone().unwrap_or_else(|| match args.scenario {
        Scenario::Produce => format!(
            "kafka produce {} B, acks={}, {} in flight",
            args.size, args.acks, args.in_flight
        ),
        Scenario::Consume => format!("kafka consume {} B", args.size),
    });
    let percentiles: Vec<(f64, f64)> = if h.is_empty() {
        Vec::new()
    } else {
        (0..=60)
            .map(|i| 1.0 - 10f64.powf(-(i as f64) / 10.0))
            .map(|q| (q * 100.0, us(q)))
            .collect()
    };
    let result = serde_json::json!({
        "label": label, "scenario": scenario, "protocol": "kafka", "server": args.brokers,
        "msgs": args.msgs, "size": args.size, "pubs": 1, "subs": 1, "rate": null,
        "in_flight": args.in_flight, "subjects": 1, "elapsed_s": secs, "msgs_per_s": rate,
        "mb_per_s": rate * args.size as f64 / 1e6, "deliveries_per_s": rate,
        "lost": args.msgs.saturating_sub(outcome.messages), "errors": outcome.errors,
        "rss_bytes": null, "latency_us": latency, "percentiles": percentiles,
        "acks": args.acks, "linger_ms": args.linger_ms, "batch_size": args.batch_size,
    });
    let l = |k: &str| {
        result["latency_us"][k]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.1}"))
    };
    println!(
        "{:<34} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "run", "msgs/s", "MB/s", "p50 us", "p99 us", "p99.9 us", "max us"
    );
    println!(
        "{:<34} {:>11.0} {:>8.1} {:>9} {:>9} {:>9} {:>9}",
        label,
        rate,
        rate * args.size as f64 / 1e6,
        l("p50"),
        l("p99"),
        l("p999"),
        l("max")
    );
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, format!("{result:#}\n")) {
            eprintln!("sluice-kafka-bench: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if outcome.errors > 0 || outcome.messages < args.msgs {
        eprintln!(
            "sluice-kafka-bench: {} of {} messages, {} errors",
            outcome.messages, args.msgs, outcome.errors
        );
        std::process::exit(1);
    }
}
