//! Feeds arbitrary bytes to the frame decoder, whole and split at a point the input chooses.
//! Nothing may panic; whatever decodes must decode the same both ways.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::frame::decode;

const BODY_MAX: u32 = 1 << 20;

fn decode_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf, BODY_MAX) {
                Ok(Some(frame)) => {
                    let _ = frame.op().name();
                    frames.push(frame.bytes().to_vec());
                }
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let whole = decode_all(&[data]);
    if let Some((&split, rest)) = data.split_first() {
        let at = (split as usize).min(rest.len());
        let parts = decode_all(&[&rest[..at], &rest[at..]]);
        let again = decode_all(&[rest]);
        assert_eq!(parts, again, "split point changed the decoded frames");
    }
    let _ = whole;
});
