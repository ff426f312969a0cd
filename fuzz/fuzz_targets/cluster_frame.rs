//! Feeds arbitrary bytes to the cluster link's frame decoder, frame after frame as a link reads
//! them; and, behind a valid checksum, to the field decoder. Nothing may panic, and a frame that
//! decodes encodes back to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::cluster::ClusterFrame;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = ClusterFrame::decode(rest) {
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(&again[..], &rest[..used]);
        rest = &rest[used..];
    }
    let mut framed = Vec::with_capacity(data.len() + 8);
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(&crc32c::crc32c(data).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = ClusterFrame::decode(&framed);
});
