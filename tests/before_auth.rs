//! Before authentication, on a server with users: a client that does not authenticate within the
//! auth timeout (2 s by default) is closed with an error, whatever else it sends; and until it has
//! authenticated it may send its connect and nothing large, so unauthenticated sockets cannot make
//! the broker buffer megabytes each.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Broker, DataDir};

/// A broker with one user, whose token is hashed with bcrypt.
fn broker_with_users(dir: &DataDir) -> Broker {
    let token = bcrypt::hash("worker-token", 4).unwrap();
    let path = dir.path.join("users.toml");
    std::fs::write(
        &path,
        format!("[[users]]\nname = \"worker\"\ntoken = \"{token}\"\n"),
    )
    .unwrap();
    Broker::start(&["--config", path.to_str().unwrap()])
}

/// Reads until the server closes the socket; what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_nats_client_that_never_authenticates_is_closed_even_while_it_pings() {
    let dir = DataDir::new();
    let broker = broker_with_users(&dir);
    let mut stream = TcpStream::connect(&broker.nats_addr).unwrap();
    let mut info = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut info)
        .unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    let started = Instant::now();
    let pinger = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            while stream.write_all(b"PING\r\n").is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let said = String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned();
    let closed_after = started.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    pinger.join().unwrap();
    eprintln!("closed after {closed_after:?}");
    assert!(said.contains("-ERR 'Authentication Timeout'"), "{said}");
    assert!(
        closed_after < common::PATIENCE,
        "closed by the server, not the test"
    );
    // Others are served meanwhile and after.
    assert!(TcpStream::connect(&broker.nats_addr).is_ok());
}

#[test]
fn a_native_client_that_never_sends_its_connect_is_closed() {
    let dir = DataDir::new();
    let broker = broker_with_users(&dir);
    let mut stream = TcpStream::connect(&broker.addr).unwrap();
    let said = read_to_close(&mut stream);
    let text = String::from_utf8_lossy(&said);
    assert!(text.contains("authentication timeout"), "{text:?}");
}

/// The broker's resident memory, in KiB.
fn rss_kib(broker: &Broker) -> u64 {
    broker.rss_kib()
}

#[test]
fn unauthenticated_sockets_announcing_large_frames_leave_memory_flat() {
    const SOCKETS: usize = 200;
    let dir = DataDir::new();
    let broker = broker_with_users(&dir);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(&broker);
    let junk = vec![b'j'; 1024 * 1024];
    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        // Half on each port: a native frame header announcing 8 MB, or a NATS PUB of 8 MB; then
        // 1 MiB of it.
        let (addr, head) = if i % 2 == 0 {
            let mut head = (8_000_000u32).to_le_bytes().to_vec();
            head.extend_from_slice(&0u32.to_le_bytes());
            (&broker.addr, head)
        } else {
            (&broker.nats_addr, b"PUB big 8000000\r\n".to_vec())
        };
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = stream.write_all(&head);
        let _ = stream.write_all(&junk);
        sockets.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&broker);
    eprintln!("RSS before {before} KiB, after {SOCKETS} sockets {after} KiB");
    assert!(
        after < before + 48 * 1024,
        "unauthenticated sockets grew the broker from {before} KiB to {after} KiB"
    );
    // Every one of them was refused and closed.
    for mut stream in sockets {
        let _ = read_to_close(&mut stream);
    }
    assert!(broker.logged("bad"), "the refusals are logged");
}
