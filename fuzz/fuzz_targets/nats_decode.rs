//! Feeds arbitrary bytes to the NATS parser, whole and split at a point the input chooses. Nothing
//! may panic; whatever decodes must decode the same both ways.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::nats::{decode, ClientOp, CONTROL_LINE_BYTES_MAX};

fn decode_all(chunks: &[&[u8]]) -> Vec<ClientOp> {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Ok(Some(op)) = decode(&mut buf, 1 << 20, CONTROL_LINE_BYTES_MAX) {
            ops.push(op);
        }
    }
    ops
}

fuzz_target!(|data: &[u8]| {
    if let Some((&split, rest)) = data.split_first() {
        let at = (split as usize).min(rest.len());
        let whole = decode_all(&[rest]);
        let parts = decode_all(&[&rest[..at], &rest[at..]]);
        // An error stops decoding, so a split can only end early, never differ.
        assert!(whole.starts_with(&parts) || parts.starts_with(&whole));
    }
});
