//! `sluice consume` and `sluice consumer info`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::NATIVE_ADDR_DEFAULT;
use crate::api::{ConsumerConfig, DeliverPolicy};
use crate::client::Client;

/// Default time a delivered message may go unacked before it is delivered again.
const ACK_WAIT_MS_DEFAULT: u64 = 30_000;

/// Default deliveries before a message is dead-lettered.
const MAX_DELIVER_DEFAULT: u32 = 5;

/// Default unacked messages per partition before delivery pauses.
const MAX_ACK_PENDING_DEFAULT: u32 = 1000;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The stream to consume.
    stream: String,
    /// The durable consumer's name; clients with the same name share its messages.
    #[arg(long)]
    consumer: String,
    /// Ask the broker for this many messages, print them, and exit.
    #[arg(long)]
    count: Option<u64>,
    /// A new consumer starts at this offset in every partition.
    #[arg(long, conflicts_with = "from_time")]
    from_offset: Option<u64>,
    /// A new consumer starts at the first message at or after this time (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    from_time: Option<std::time::SystemTime>,
    #[arg(long, default_value_t = ACK_WAIT_MS_DEFAULT)]
    ack_wait_ms: u64,
    #[arg(long, default_value_t = MAX_DELIVER_DEFAULT)]
    max_deliver: u32,
    #[arg(long, default_value_t = MAX_ACK_PENDING_DEFAULT)]
    max_ack_pending: u32,
    /// Print without acking (each message is delivered again after the ack wait).
    #[arg(long)]
    no_ack: bool,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
    server: String,
}

#[derive(Args, Debug)]
pub struct ConsumerArgs {
    #[command(subcommand)]
    command: ConsumerCommand,
}

#[derive(Subcommand, Debug)]
enum ConsumerCommand {
    /// Pending, ack-pending, redelivered and ack floor of a consumer, per partition.
    Info {
        stream: String,
        name: String,
        /// Server address, or a comma-separated list of them: the first that answers.
        #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
        server: String,
    },
}

fn connect(server: &str) -> Result<Client, String> {
    super::connect(server, "sluice-consume")
}

/// Prints `PARTITION<TAB>OFFSET<TAB>SUBJECT<TAB>PAYLOAD` per message, acking each unless `--no-ack`.
pub fn consume(args: ConsumeArgs) -> Result<(), String> {
    let client = connect(&args.server)?;
    let deliver = match (args.from_offset, args.from_time) {
        (Some(offset), _) => DeliverPolicy::Offset(offset),
        (None, Some(time)) => DeliverPolicy::Time(
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        ),
        (None, None) => DeliverPolicy::All,
    };
    let config = ConsumerConfig {
        stream: args.stream.clone(),
        name: args.consumer.clone(),
        deliver,
        ack_wait_ms: args.ack_wait_ms,
        max_deliver: args.max_deliver,
        max_ack_pending: args.max_ack_pending,
        sid: 0,
        jetstream: None,
    };
    // With --count, ask for exactly that many: the broker sends no more, so nothing is left
    // waiting for its ack wait when this run ends. Without, ask in batches as they are read.
    let consumer = match args.count {
        Some(count) => client.attach_consumer(config).and_then(|c| {
            c.pull(count)?;
            Ok(c)
        }),
        None => client.consume(config),
    }
    .map_err(|e| format!("cannot consume {}: {e}", args.stream))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c) {
        let Some(message) = consumer.next_timeout(Duration::from_millis(200)) else {
            if client.is_closed() {
                return Err("connection closed".into());
            }
            continue;
        };
        let meta = message.stream_meta().unwrap_or(crate::client::StreamMeta {
            partition: 0,
            offset: 0,
            delivered: 0,
        });
        let written = write!(
            out,
            "{}\t{}\t{}\t",
            meta.partition,
            meta.offset,
            message.subject()
        )
        .and_then(|()| out.write_all(message.payload()))
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
        written.map_err(|e| format!("cannot write to stdout: {e}"))?;
        if !args.no_ack {
            consumer
                .ack(&message)
                .map_err(|e| format!("ack failed: {e}"))?;
        }
        seen += 1;
    }
    client.flush().map_err(|e| format!("flush failed: {e}"))
}

pub fn consumer(args: ConsumerArgs) -> Result<(), String> {
    match args.command {
        ConsumerCommand::Info {
            stream,
            name,
            server,
        } => {
            let client = connect(&server)?;
            let info = client
                .consumer_info(&stream, &name)
                .map_err(|e| e.to_string())?;
            if info.kafka_group {
                println!(
                    "kafka group {} on {}  lag {}",
                    info.name,
                    info.stream,
                    info.pending()
                );
            } else {
                println!(
                    "consumer {} of {}  pending {}  ack_pending {}",
                    info.name,
                    info.stream,
                    info.pending(),
                    info.ack_pending()
                );
            }
            let js = info
                .partitions
                .iter()
                .find_map(|p| p.config.as_ref())
                .and_then(|c| c.jetstream.as_deref());
            if let Some(js) = js {
                let filters = js.filters().join(",");
                println!(
                    "jetstream  {}  ack {:?}  deliver {:?}  ack_wait {}  max_deliver {}  \
                     max_ack_pending {}  filter {}",
                    match &js.deliver_subject {
                        Some(subject) => format!("push to {subject}"),
                        None => "pull".to_string(),
                    },
                    js.ack_policy,
                    js.deliver_policy,
                    super::streams::duration_ns(js.ack_wait),
                    js.max_deliver,
                    js.max_ack_pending,
                    if filters.is_empty() { "-" } else { &filters }
                );
            }
            println!("partition\tpending\tack_pending\tredelivered\tack_floor\tdead_lettered");
            for p in &info.partitions {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    p.partition,
                    p.pending,
                    p.ack_pending,
                    p.redelivered,
                    p.ack_floor,
                    p.dead_lettered
                );
            }
            Ok(())
        }
    }
}
