//! Wraps arbitrary bytes in a correct header (length and CRC32C), so that the fuzzer reaches the
//! archive layout check instead of stopping at the checksum. Nothing may panic, and whatever passes
//! the check must be readable.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::frame::decode;
use sluice_protocol::ArchivedOp;

fuzz_target!(|body: &[u8]| {
    let mut buf = BytesMut::with_capacity(body.len() + 8);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    buf.extend_from_slice(body);
    if let Ok(Some(frame)) = decode(&mut buf, 1 << 20) {
        match frame.op() {
            ArchivedOp::Pub(p) => {
                let _ = (
                    p.subject().len(),
                    p.reply(),
                    p.headers().len(),
                    p.payload().len(),
                );
            }
            ArchivedOp::Sub(s) => {
                let _ = (
                    s.subject.as_str().len(),
                    s.queue.as_ref().map(|q| q.as_str().len()),
                );
            }
            ArchivedOp::Err(e) => {
                let _ = e.message.as_str().len();
            }
            other => {
                let _ = other.name();
            }
        }
    }
});
