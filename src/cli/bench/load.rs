//! The load threads: publishers, subscribers, requesters, responders and durable publishers, each
//! on one connection, pinned to a load CPU, keeping its own latency histogram.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::wire::{stamp_of, Event, Protocol, Wire};
use super::{BenchError, Plan, Scenario};

/// What the load threads share: counters the progress line and flow control read, and the clock.
pub struct Shared {
    pub epoch: Instant,
    /// Messages published (or requests sent).
    pub sent: AtomicU64,
    /// Messages received by subscribers, replies or acks received.
    pub received: AtomicU64,
    pub errors: AtomicU64,
    /// Set when the run is over: readers stop.
    pub done: AtomicBool,
    /// Publishers wait here until every subscriber is in place.
    pub start: Gate,
    /// Nanoseconds after `epoch` when the load started.
    pub started_ns: AtomicU64,
}

impl Shared {
    pub fn new(parties: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            done: AtomicBool::new(false),
            start: Gate::new(parties),
            started_ns: AtomicU64::new(0),
        }
    }

    /// Lets everyone waiting at the start go on, to find out that the run failed.
    pub fn start_failed(&self) {
        self.start.failed.store(true, Ordering::SeqCst);
    }

    /// Waits until `received` reaches `target`, giving up after 10 s without progress.
    pub fn wait_for_received(&self, target: u64) {
        let mut last = (self.received.load(Ordering::Relaxed), self.now_ns());
        while last.0 < target {
            std::thread::sleep(Duration::from_millis(1));
            let now = (self.received.load(Ordering::Relaxed), self.now_ns());
            if now.0 != last.0 {
                last = now;
            } else if now.1 - last.1 > 10_000_000_000 {
                return;
            }
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Where the load threads wait for each other before the load starts; unlike a barrier, a thread
/// that fails before it arrives does not leave the others waiting.
pub struct Gate {
    parties: u64,
    arrived: AtomicU64,
    failed: AtomicBool,
}

impl Gate {
    fn new(parties: usize) -> Gate {
        Gate {
            parties: parties as u64,
            arrived: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Arrives and waits for everyone; an error if a load thread failed.
    pub fn wait(&self) -> Result<(), BenchError> {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        while self.arrived.load(Ordering::SeqCst) < self.parties {
            if self.failed.load(Ordering::SeqCst) {
                return Err(BenchError::Setup("a load thread failed to start".into()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }
}

/// A latency histogram in nanoseconds, 1 us to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// When each message is due: now (closed loop) or on a fixed schedule (open loop), in which case
/// the latency counts from the intended send time, so that a stalled server cannot hide its stall
/// by slowing the sender.
struct Pacer {
    start_ns: u64,
    period_ns: Option<f64>,
}

impl Pacer {
    fn new(shared: &Shared, rate_per_thread: Option<f64>) -> Pacer {
        Pacer {
            start_ns: shared.now_ns(),
            period_ns: rate_per_thread.map(|r| 1e9 / r.max(1e-3)),
        }
    }

    /// The stamp of message `i` if it is due at `now`.
    #[inline]
    fn due(&self, i: u64, now: u64) -> Option<u64> {
        match self.period_ns {
            None => Some(now),
            Some(p) => {
                let at = self.start_ns + (i as f64 * p) as u64;
                (at <= now).then_some(at)
            }
        }
    }

    /// Waits until message `i` is due (open loop only). Sleeps at least `TICK`: a sender that only
    /// yields stays runnable and shares its CPU with the receivers in scheduler time slices,
    /// which would add milliseconds to what is measured. Whatever a message waits past its
    /// intended time counts in its latency.
    fn wait_for(&self, i: u64, shared: &Shared) {
        let Some(p) = self.period_ns else { return };
        let at = self.start_ns + (i as f64 * p) as u64;
        let now = shared.now_ns();
        if at > now {
            std::thread::sleep(Duration::from_nanos((at - now).max(TICK_NS)));
        }
    }
}

/// Shortest sleep of an open-loop sender, in nanoseconds.
const TICK_NS: u64 = 10_000;

/// Pins the calling thread to `cpu`, and makes its short sleeps precise (timer slack of 1 ns
/// instead of the default 50 us).
pub fn pin(cpu: Option<usize>) {
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let Some(cpu) = cpu else { return };
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Most bytes a publish batch holds before it is written.
const BATCH_BYTES: usize = 64 * 1024;

/// How long a reader waits for a message before it checks whether the run is over.
const POLL: Duration = Duration::from_millis(100);

/// How many messages publisher `index` sends.
pub fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

/// Publishes this publisher's share on one subject as fast as the subscribers take it (closed loop,
/// at most `window` deliveries outstanding over all publishers) or at the planned rate.
pub fn publisher(plan: &Plan, shared: &Shared, index: usize) -> Result<(), BenchError> {
    let mut wire = Wire::connect(&plan.addr, plan.protocol, "bench-pub")?;
    wire.roundtrip(Duration::from_secs(10))?;
    let subject = plan.core_subject(index);
    let template = wire.template(&subject, None, plan.size, false);
    let mine = share(plan.msgs, plan.pubs, index);
    let factor = plan.deliveries_per_message();
    let window = plan.window_messages() * factor;
    shared.start.wait()?;
    let pacer = Pacer::new(shared, plan.rate.map(|r| r / plan.pubs as f64));
    let mut i = 0u64;
    while i < mine {
        if plan.rate.is_none() {
            while shared.sent.load(Ordering::Relaxed) * factor
                > shared.received.load(Ordering::Relaxed) + window
            {
                if shared.done.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_nanos(TICK_NS));
            }
        }
        let start = i;
        let now = shared.now_ns();
        while i < mine && wire.out.len() < BATCH_BYTES {
            let Some(stamp) = pacer.due(i, now) else {
                break;
            };
            template.emit(&mut wire.out, stamp);
            i += 1;
        }
        if i == start {
            pacer.wait_for(i, shared);
            continue;
        }
        wire.flush()?;
        shared.sent.fetch_add(i - start, Ordering::Relaxed);
    }
    wire.roundtrip(Duration::from_secs(60))
}

/// Receives until `expected` messages (if known) or until the run is over.
pub fn subscriber(
    plan: &Plan,
    shared: &Shared,
    index: usize,
    expected: Option<u64>,
) -> Result<Histogram<u64>, BenchError> {
    let mut wire = Wire::connect(&plan.addr, plan.protocol, "bench-sub")?;
    let queue = (plan.scenario == Scenario::Queue).then_some("bench-workers");
    wire.subscribe(1, &plan.core_pattern(), queue);
    wire.roundtrip(Duration::from_secs(10))?;
    let _ = index;
    let mut hist = histogram();
    let mut count = 0u64;
    shared.start.wait()?;
    while expected.is_none_or(|e| count < e) && !shared.done.load(Ordering::Relaxed) {
        let mut got = 0;
        // One clock reading per read: what one read returns arrived together.
        let mut now = 0;
        wire.poll(Some(POLL), |event| match event {
            Event::Msg { payload, .. } => {
                if got == 0 {
                    now = shared.now_ns();
                }
                got += 1;
                let _ = hist.record(now.saturating_sub(stamp_of(payload)));
            }
            Event::Error(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })?;
        count += got;
        shared.received.fetch_add(got, Ordering::Relaxed);
        wire.flush()?;
    }
    Ok(hist)
}

/// Answers requests by echoing them to their reply subject, until the run is over.
pub fn responder(plan: &Plan, shared: &Shared) -> Result<(), BenchError> {
    let mut wire = Wire::connect(&plan.addr, plan.protocol, "bench-responder")?;
    wire.subscribe(1, &plan.core_pattern(), Some("bench-responders"));
    wire.roundtrip(Duration::from_secs(10))?;
    shared.start.wait()?;
    let mut replies: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while !shared.done.load(Ordering::Relaxed) {
        wire.poll(Some(POLL), |event| {
            if let Event::Msg {
                reply: Some(reply),
                payload,
                ..
            } = event
            {
                replies.push((reply.to_vec(), payload.to_vec()));
            }
        })?;
        for (reply, payload) in replies.drain(..) {
            let reply = String::from_utf8_lossy(&reply);
            wire.publish(&reply, None, &payload, false);
        }
        wire.flush()?;
    }
    Ok(())
}

/// Sends requests (at most `in_flight` outstanding) and times each reply; or publishes durably and
/// times each ack. Returns the latency histogram.
pub fn requester(plan: &Plan, shared: &Shared, index: usize) -> Result<Histogram<u64>, BenchError> {
    let name = if plan.scenario == Scenario::Request {
        "bench-requester"
    } else {
        "bench-stream-pub"
    };
    let mut wire = Wire::connect(&plan.addr, plan.protocol, name)?;
    let durable = plan.scenario != Scenario::Request;
    // Replies come to an inbox, except native durable acks, which the protocol carries itself.
    let inbox = (!durable || plan.protocol == Protocol::Nats)
        .then(|| format!("_INBOX.bench.{}.{index}", std::process::id()));
    if let Some(inbox) = &inbox {
        wire.subscribe(1, inbox, None);
    }
    wire.roundtrip(Duration::from_secs(10))?;
    let native_ack = durable && plan.protocol == Protocol::Native;
    let subject = plan.core_subject(index);
    let template = (!plan.encode_each)
        .then(|| wire.template(&subject, inbox.as_deref(), plan.size, native_ack));
    let mut payload = vec![b'p'; plan.size];
    let mut subject_buf = String::new();
    let mine = share(plan.msgs, plan.pubs, index);
    let in_flight = plan.in_flight.max(1);
    let mut stamps: VecDeque<u64> = VecDeque::with_capacity(in_flight);
    let mut hist = histogram();
    shared.start.wait()?;
    let pacer = Pacer::new(shared, plan.rate.map(|r| r / plan.pubs as f64));
    let (mut i, mut answered) = (0u64, 0u64);
    let mut errors = 0u64;
    while answered < mine {
        let start = i;
        let now = shared.now_ns();
        while i < mine && stamps.len() < in_flight && wire.out.len() < BATCH_BYTES {
            let Some(stamp) = pacer.due(i, now) else {
                break;
            };
            match &template {
                Some(t) => t.emit(&mut wire.out, stamp),
                None => {
                    use std::fmt::Write as _;
                    subject_buf.clear();
                    let _ = write!(subject_buf, "{}.{}", plan.subject_root(), i % plan.subjects);
                    payload[..8].copy_from_slice(&stamp.to_le_bytes());
                    wire.publish(&subject_buf, inbox.as_deref(), &payload, native_ack);
                }
            }
            stamps.push_back(stamp);
            i += 1;
        }
        if i > start {
            wire.flush()?;
            shared.sent.fetch_add(i - start, Ordering::Relaxed);
        } else if stamps.is_empty() {
            pacer.wait_for(i, shared);
            continue;
        }
        let mut got = 0u64;
        let read = wire.poll(Some(Duration::from_secs(1)), |event| {
            let failed = match event {
                Event::PubAck { error } => !error.is_empty(),
                Event::Msg { payload, .. } => durable && is_js_error(payload),
                Event::Error(_) => true,
                Event::Pong => return,
            };
            if let Some(stamp) = stamps.pop_front() {
                let now = shared.now_ns();
                let _ = hist.record(now.saturating_sub(stamp));
                got += 1;
            }
            errors += u64::from(failed);
        })?;
        if !read && shared.done.load(Ordering::Relaxed) {
            break;
        }
        answered += got;
        shared.received.fetch_add(got, Ordering::Relaxed);
    }
    shared.errors.fetch_add(errors, Ordering::Relaxed);
    Ok(hist)
}

/// Whether a JSON publish ack reports an error (JetStream's `{"error":{...}}`).
fn is_js_error(payload: &[u8]) -> bool {
    payload.windows(8).any(|w| w == b"\"error\":")
}
