//! A thousand concurrent connections, spread by the kernel over both shards, each receiving its own
//! messages.

mod common;

use common::{Broker, RawConn};
use sluice_protocol::op::{Op, Subscribe};
use sluice_protocol::ArchivedOp;

const CONNECTIONS: usize = 1000;

#[test]
fn a_thousand_concurrent_connections_each_receive_their_messages() {
    let broker = Broker::start(&[]);
    let mut conns: Vec<RawConn> = (0..CONNECTIONS)
        .map(|_| RawConn::connect(&broker.addr))
        .collect();
    let on_shard_0 = conns.iter().filter(|c| c.shard == 0).count();
    assert!(
        on_shard_0 > 0 && on_shard_0 < CONNECTIONS,
        "the kernel spreads connections over both shards ({on_shard_0} on shard 0)"
    );
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.send(&Op::Sub(Subscribe {
            sid: 1,
            subject: &format!("conn.{i}"),
            queue: None,
        }));
        conn.send(&Op::Ping);
    }
    for conn in conns.iter_mut() {
        let pong = conn.read_frame().expect("pong");
        assert!(matches!(pong.op(), ArchivedOp::Pong));
    }
    let publisher = broker.client();
    for i in 0..CONNECTIONS {
        publisher
            .publish(&format!("conn.{i}"), i.to_string())
            .unwrap();
    }
    publisher.flush().unwrap();
    for (i, conn) in conns.iter_mut().enumerate() {
        let header = conn.read_frame().expect("message header");
        assert!(matches!(header.op(), ArchivedOp::Msg { sid } if sid.to_native() == 1));
        let body = conn.read_frame().expect("message");
        let ArchivedOp::Pub(p) = body.op() else {
            panic!("expected the publish frame");
        };
        assert_eq!(p.subject(), format!("conn.{i}"));
        assert_eq!(p.payload(), i.to_string().as_bytes());
    }
}
