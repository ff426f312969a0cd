//! Feeds arbitrary bytes to every JetStream decoder (API subjects, ack subjects and bodies, pull
//! requests, header blocks, stream and consumer configs); nothing may panic and what they accept
//! must survive being written back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_protocol::jetstream::check_decoders(data);
});
