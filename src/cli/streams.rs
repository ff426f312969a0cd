//! `sluice stream ...`: managing streams from the command line.

use clap::{Args, Subcommand};

use super::NATIVE_ADDR_DEFAULT;
use crate::api::{StreamConfig, StreamInfo};

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(subcommand)]
    command: StreamCommand,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT, global = true)]
    server: String,
}

#[derive(Subcommand, Debug)]
enum StreamCommand {
    /// Create a stream.
    Add {
        name: String,
        /// Subject patterns it captures, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        subjects: Vec<String>,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete segments older than this, e.g. 24h, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<std::time::Duration>,
        /// Keep each partition under this size, e.g. 10GiB.
        #[arg(long, value_parser = parse_size)]
        max_bytes: Option<u64>,
        /// Copies of each partition on the nodes of a cluster (1, or the cluster's size).
        #[arg(long, default_value_t = 1)]
        replicas: u8,
    },
    /// List the streams.
    Ls,
    /// Show a stream's messages, bytes and offsets per partition.
    Info { name: String },
    /// Delete a stream and its data.
    Rm { name: String },
    /// Move a replicated stream's copy from one node to another (a member holding none): the
    /// new node catches up from the others, then the old one drops its copy.
    Move {
        name: String,
        from: String,
        to: String,
    },
}

/// Parses a size such as `512MiB`, `10GiB`, `1GB` or `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// A JetStream duration (nanoseconds; 0 is none) as humans read it.
pub fn duration_ns(ns: i64) -> String {
    match u64::try_from(ns) {
        Ok(0) | Err(_) => "-".into(),
        Ok(ns) => humantime::format_duration(std::time::Duration::from_nanos(ns)).to_string(),
    }
}

fn print_info(info: &StreamInfo) {
    let c = &info.config;
    println!(
        "stream {}  subjects {}  partitions {}  messages {}  bytes {}",
        c.name,
        c.subjects.join(","),
        c.partitions,
        info.messages(),
        info.bytes()
    );
    if let Some(js) = &c.jetstream {
        println!(
            "jetstream  retention {:?}  discard {:?}  max_msgs {}  max_bytes {}  max_age {}  \
             max_msgs_per_subject {}  max_msg_size {}  duplicate_window {}  allow_direct {}  \
             allow_rollup_hdrs {}  deny_delete {}  deny_purge {}",
            js.retention,
            js.discard,
            js.max_msgs,
            js.max_bytes,
            duration_ns(js.max_age),
            js.max_msgs_per_subject,
            js.max_msg_size,
            duration_ns(js.duplicate_window),
            js.allow_direct,
            js.allow_rollup_hdrs,
            js.deny_delete,
            js.deny_purge
        );
    }
    println!("partition\tmessages\tbytes\tfirst_offset\tlast_offset");
    for p in &info.partitions {
        let last = p.last_offset.map_or("-".to_string(), |o| o.to_string());
        println!(
            "{}\t{}\t{}\t{}\t{}",
            p.partition, p.messages, p.bytes, p.first_offset, last
        );
    }
    for c in &info.consumers {
        println!(
            "consumer {}  pending {}  ack_pending {}",
            c.name,
            c.pending(),
            c.ack_pending()
        );
    }
}

pub fn run(args: StreamArgs) -> Result<(), String> {
    let client = super::connect(&args.server, "sluice-stream")?;
    match args.command {
        StreamCommand::Add {
            name,
            subjects,
            partitions,
            max_age,
            max_bytes,
            replicas,
        } => {
            let config = StreamConfig {
                partitions,
                max_age_secs: max_age.map(|d| d.as_secs()),
                max_bytes,
                replicas,
                ..StreamConfig::new(name, subjects)
            };
            let info = client.stream_add(&config).map_err(|e| e.to_string())?;
            print_info(&info);
        }
        StreamCommand::Ls => {
            for s in client.stream_list().map_err(|e| e.to_string())? {
                println!("{}\t{}\t{}", s.name, s.subjects.join(","), s.partitions);
            }
        }
        StreamCommand::Info { name } => {
            print_info(&client.stream_info(&name).map_err(|e| e.to_string())?);
        }
        StreamCommand::Rm { name } => client.stream_remove(&name).map_err(|e| e.to_string())?,
        StreamCommand::Move { name, from, to } => {
            let info = client
                .stream_move(&name, &from, &to)
                .map_err(|e| e.to_string())?;
            print_info(&info);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
    }
}
