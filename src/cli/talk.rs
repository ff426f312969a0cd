//! The client commands: `pub`, `sub`, `request`, `reply`.

use std::io::Write;
use std::time::Instant;

use clap::Args;

use super::{millis, NATIVE_ADDR_DEFAULT};
use crate::client::{Client, Message, Subscription};

#[derive(Args, Debug)]
pub struct PubArgs {
    /// Subject to publish to.
    subject: String,
    /// Payload; `{n}` is replaced by the message's 0-based sequence number.
    payload: Option<String>,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
    server: String,
    /// How many messages to publish.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Payload size in bytes: pads or cuts PAYLOAD to this size (filled with 'x' when there is none).
    #[arg(long)]
    size: Option<usize>,
    /// Wait for each message to be stored durably; print PARTITION<TAB>OFFSET per ack.
    #[arg(long)]
    ack: bool,
}

#[derive(Args, Debug)]
pub struct SubArgs {
    /// Subject pattern, with `*` and `>` wildcards.
    subject: String,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
    server: String,
    /// Join this queue group.
    #[arg(long)]
    queue: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Subject to send the request to.
    subject: String,
    /// Request payload.
    payload: String,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
    server: String,
    /// How long to wait for the reply.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct ReplyArgs {
    /// Subject pattern to answer requests on.
    subject: String,
    /// The answer; without it, each request is echoed.
    response: Option<String>,
    /// Server address, or a comma-separated list of them: the first that answers.
    #[arg(short = 's', long = "server", default_value = NATIVE_ADDR_DEFAULT)]
    server: String,
    /// Join this queue group.
    #[arg(long)]
    queue: Option<String>,
    /// Exit after answering this many requests.
    #[arg(long)]
    count: Option<u64>,
}

fn connect(server: &str, name: &str) -> Result<Client, String> {
    super::connect(server, name)
}

/// Subscribes (in a queue group if given) and waits until the subscription is in force on every
/// shard, so that the caller can announce it is listening.
fn subscribe_in_force(
    client: &Client,
    subject: &str,
    queue: Option<&str>,
    max: Option<u64>,
) -> Result<Subscription, String> {
    let sub = match queue {
        Some(queue) => client.queue_subscribe(subject, queue),
        None => client.subscribe(subject),
    }
    .map_err(|e| format!("subscribe failed: {e}"))?;
    if let Some(max) = max {
        // The server knows the maximum, so that a queue group stops picking this member once it
        // has had its share, instead of handing it messages it will never read.
        sub.unsubscribe_after(max)
            .map_err(|e| format!("subscribe failed: {e}"))?;
    }
    client
        .flush()
        .map_err(|e| format!("subscribe failed: {e}"))?;
    if let Some((code, message)) = client.take_errors().into_iter().next() {
        return Err(format!("server error {code:?}: {message}"));
    }
    Ok(sub)
}

/// The payload of message `n`: the template with `{n}` replaced, sized to `size` if given.
fn render(template: Option<&str>, size: Option<usize>, n: u64) -> Vec<u8> {
    let mut payload = match template {
        Some(t) if t.contains("{n}") => t.replace("{n}", &n.to_string()).into_bytes(),
        Some(t) => t.as_bytes().to_vec(),
        None => Vec::new(),
    };
    if let Some(size) = size {
        payload.resize(size, b'x');
    }
    payload
}

pub fn publish(args: PubArgs) -> Result<(), String> {
    if args.ack {
        return publish_acked(args);
    }
    let client = connect(&args.server, "sluice-pub")?;
    let fixed = !args.payload.as_deref().is_some_and(|t| t.contains("{n}"));
    let fixed_payload = render(args.payload.as_deref(), args.size, 0);
    let started = Instant::now();
    let mut bytes = 0u64;
    for n in 0..args.count {
        let result = if fixed {
            bytes += fixed_payload.len() as u64;
            client.publish(&args.subject, &fixed_payload)
        } else {
            let payload = render(args.payload.as_deref(), args.size, n);
            bytes += payload.len() as u64;
            client.publish(&args.subject, &payload)
        };
        result.map_err(|e| format!("publish failed: {e}"))?;
    }
    client.flush().map_err(|e| format!("flush failed: {e}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some((code, message)) = client.take_errors().into_iter().next() {
        return Err(format!("server error {code:?}: {message}"));
    }
    if args.count > 1 {
        eprintln!(
            "published {} messages ({} payload bytes) in {:.3} s: {:.0} msgs/s",
            args.count,
            bytes,
            elapsed,
            args.count as f64 / elapsed.max(1e-9)
        );
    }
    Ok(())
}

/// Most acks awaited at once by `pub --ack`: publishes are pipelined up to this many.
const ACKS_IN_FLIGHT_MAX: usize = 1024;

/// `pub --ack`: pipelines the publishes and prints each ack as it arrives, in order.
fn publish_acked(args: PubArgs) -> Result<(), String> {
    let client = connect(&args.server, "sluice-pub")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut waiting = std::collections::VecDeque::with_capacity(ACKS_IN_FLIGHT_MAX);
    let print = |waiter: crate::client::AckWaiter,
                 out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>|
     -> Result<(), String> {
        let ack = waiter.wait().map_err(|e| format!("publish failed: {e}"))?;
        writeln!(out, "{}\t{}", ack.partition, ack.offset)
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))
    };
    for n in 0..args.count {
        let payload = render(args.payload.as_deref(), args.size, n);
        let waiter = client
            .publish_with_ack(&args.subject, &payload)
            .map_err(|e| format!("publish failed: {e}"))?;
        waiting.push_back(waiter);
        if waiting.len() >= ACKS_IN_FLIGHT_MAX {
            if let Some(waiter) = waiting.pop_front() {
                print(waiter, &mut out)?;
            }
        }
    }
    while let Some(waiter) = waiting.pop_front() {
        print(waiter, &mut out)?;
    }
    Ok(())
}

/// Writes `SUBJECT<TAB>PAYLOAD\n`.
fn print_line(out: &mut impl Write, message: &Message) -> std::io::Result<()> {
    out.write_all(message.subject().as_bytes())?;
    out.write_all(b"\t")?;
    out.write_all(message.payload())?;
    out.write_all(b"\n")
}

pub fn subscribe(args: SubArgs) -> Result<(), String> {
    let client = connect(&args.server, "sluice-sub")?;
    let sub = subscribe_in_force(&client, &args.subject, args.queue.as_deref(), args.count)?;
    eprintln!("listening on {}", args.subject);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut received = 0u64;
    let write_err = |e: std::io::Error| format!("cannot write to stdout: {e}");
    while args.count.is_none_or(|c| received < c) {
        // Flush each line as it arrives, but let a burst share one write.
        let message = match sub.try_next() {
            Some(m) => m,
            None => {
                out.flush().map_err(write_err)?;
                match sub.next() {
                    Some(m) => m,
                    None => return Err("connection closed".into()),
                }
            }
        };
        print_line(&mut out, &message).map_err(write_err)?;
        received += 1;
    }
    out.flush().map_err(write_err)?;
    Ok(())
}

pub fn request(args: RequestArgs) -> Result<(), String> {
    let client = connect(&args.server, "sluice-request")?;
    let reply = client
        .request(
            &args.subject,
            args.payload.as_bytes(),
            millis(args.timeout_ms),
        )
        .map_err(|e| format!("request to {} failed: {e}", args.subject))?;
    let mut out = std::io::stdout().lock();
    out.write_all(reply.payload())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

pub fn reply(args: ReplyArgs) -> Result<(), String> {
    let client = connect(&args.server, "sluice-reply")?;
    let sub = subscribe_in_force(&client, &args.subject, args.queue.as_deref(), args.count)?;
    eprintln!("answering on {}", args.subject);
    let mut answered = 0u64;
    while args.count.is_none_or(|c| answered < c) {
        let Some(message) = sub.next() else {
            return Err("connection closed".into());
        };
        let Some(reply_to) = message.reply() else {
            continue;
        };
        let body = match &args.response {
            Some(r) => r.as_bytes(),
            None => message.payload(),
        };
        client
            .publish(reply_to, body)
            .map_err(|e| format!("reply failed: {e}"))?;
        answered += 1;
    }
    client.flush().map_err(|e| format!("flush failed: {e}"))
}
