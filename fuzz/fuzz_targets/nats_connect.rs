//! Feeds arbitrary bytes to the parser of a NATS `CONNECT`'s JSON. Nothing may panic, and options
//! that parse must parse the same again once written back as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::nats::parse_connect;

fuzz_target!(|data: &[u8]| {
    if let Ok(options) = parse_connect(data) {
        let json = serde_json::json!({
            "verbose": options.verbose,
            "echo": options.echo,
            "no_responders": options.no_responders,
            "headers": options.headers,
            "user": options.user,
            "pass": options.pass,
            "auth_token": options.auth_token,
        });
        let again = parse_connect(json.to_string().as_bytes()).expect("written options parse");
        assert_eq!(again, options);
    }
});
