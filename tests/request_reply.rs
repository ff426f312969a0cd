//! Request/reply through reply subjects (inboxes), across shards.

mod common;

use std::time::Duration;

use common::Broker;
use sluice::client::ClientError;

#[test]
fn requests_get_answers_from_a_replier_on_the_other_shard() {
    let broker = Broker::start(&[]);
    let replier = broker.client_on_shard(0);
    let requests = replier.subscribe("svc.upper").unwrap();
    replier.flush().unwrap();
    let serve = std::thread::spawn(move || {
        for _ in 0..50 {
            let request = requests.next_timeout(common::PATIENCE).expect("a request");
            let answer = String::from_utf8_lossy(request.payload()).to_uppercase();
            replier
                .publish(request.reply().expect("a reply subject"), answer)
                .unwrap();
        }
        replier.flush().unwrap();
    });
    let requester = broker.client_on_shard(1);
    for i in 0..50 {
        let reply = requester
            .request("svc.upper", format!("hello {i}"), common::PATIENCE)
            .unwrap();
        assert_eq!(reply.payload(), format!("HELLO {i}").as_bytes());
    }
    serve.join().unwrap();
}

#[test]
fn a_request_nobody_answers_times_out() {
    let broker = Broker::start(&[]);
    let requester = broker.client();
    let result = requester.request("nobody.home", "hi", Duration::from_millis(300));
    assert!(matches!(result, Err(ClientError::NoReply)), "{result:?}");
}
