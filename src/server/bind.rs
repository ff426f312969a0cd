//! Binding the ports, also right after a crash of the previous broker on them.
//!
//! A broker killed with SIGKILL leaves its listening sockets alive for a while: the io_uring ring
//! holds them until the kernel has torn it down (a few to tens of milliseconds, longer while disk
//! I/O it started is still in flight). Meanwhile the kernel still completes handshakes on them, so a
//! lingering listener cannot be told from a live one by connecting. `run` therefore waits, bounded
//! by `BIND_WAIT`, until nothing answers on a fixed address before binding it, and refuses to start
//! if something still answers then: that is another live process, and SO_REUSEPORT would otherwise
//! let the two share the port. Every socket is bound with SO_REUSEADDR (connections of the old
//! process in TIME_WAIT do not block it) and SO_REUSEPORT (the shards share each client port), and a
//! bind the kernel still refuses with EADDRINUSE is tried again until `BIND_WAIT` has passed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::ServerError;

/// How long start-up waits for an address a killed broker's sockets still hold: far more than the
/// milliseconds a ring takes to go, so a restart under load binds, and short enough that a
/// supervisor sees a broker that cannot start fail rather than hang.
pub const BIND_WAIT: Duration = Duration::from_secs(10);

/// Pause between two tries at a busy address: short, as the sockets usually go within milliseconds.
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long a probe connection may take: on the local machine a free port refuses at once, so a
/// connection that neither succeeds nor is refused in this time means a listener whose queue is
/// full, which is busy too.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Connections the kernel queues on a listening socket before the shard accepts them (glommio's
/// own choice for its listeners).
const LISTEN_BACKLOG: i32 = 1024;

/// Tries at one address: knows when to give up, and warns once that it waits.
struct Tries {
    addr: SocketAddr,
    started: Instant,
    warned: bool,
}

impl Tries {
    fn new(addr: SocketAddr) -> Tries {
        Tries {
            addr,
            started: Instant::now(),
            warned: false,
        }
    }

    /// Whether to try again after `why`; warns the first time.
    fn again(&mut self, why: &str) -> bool {
        if self.started.elapsed() >= BIND_WAIT {
            return false;
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(addr = %self.addr, wait = ?BIND_WAIT, why, "waiting for the address");
        }
        true
    }

    /// Logs how long it took, if it had to wait.
    fn done(&self) {
        if self.warned {
            tracing::info!(
                addr = %self.addr,
                waited_ms = self.started.elapsed().as_millis() as u64,
                "address free"
            );
        }
    }
}

/// Where to connect to reach a listener on `addr`: a wildcard address is reached on loopback.
fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Whether something listens on `addr`: a connection is accepted, or hangs as on a full queue.
fn answers(addr: SocketAddr) -> bool {
    match std::net::TcpStream::connect_timeout(&probe_target(addr), PROBE_TIMEOUT) {
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::TimedOut,
    }
}

/// Waits until nothing answers on `addr`, up to `BIND_WAIT`; an address that still answers then
/// belongs to a live process, and the server refuses to share it. Port 0 needs no check.
pub fn wait_until_unanswered(addr: SocketAddr) -> Result<(), ServerError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let mut tries = Tries::new(addr);
    while answers(addr) {
        if !tries.again("something still answers on it (a killed broker's sockets linger)") {
            return Err(ServerError::Taken {
                addr,
                waited: BIND_WAIT,
            });
        }
        std::thread::sleep(BIND_RETRY_PAUSE);
    }
    tries.done();
    Ok(())
}

/// A TCP socket bound to `addr` with SO_REUSEADDR and SO_REUSEPORT, listening if asked.
fn bound_socket(addr: SocketAddr, listen: bool) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    if listen {
        socket.listen(LISTEN_BACKLOG)?;
    }
    Ok(socket)
}

/// Binds `addr` (listening if asked), trying again while the kernel says it is in use, up to
/// `BIND_WAIT`. Blocks the calling thread: for start-up, before the shards run.
pub fn bind(addr: SocketAddr, listen: bool) -> Result<Socket, ServerError> {
    let mut tries = Tries::new(addr);
    loop {
        match bound_socket(addr, listen) {
            Ok(socket) => {
                tries.done();
                return Ok(socket);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries.again("in use") => {
                std::thread::sleep(BIND_RETRY_PAUSE);
            }
            Err(source) => return Err(ServerError::Bind { addr, source }),
        }
    }
}

/// A shard's listener on `addr`, tried again while the kernel says it is in use, up to `BIND_WAIT`;
/// waits on the shard's timer, so the executor keeps running meanwhile.
pub async fn listen_on_shard(addr: SocketAddr) -> Result<glommio::net::TcpListener, ServerError> {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let mut tries = Tries::new(addr);
    loop {
        match bound_socket(addr, true) {
            Ok(socket) => {
                tries.done();
                // SAFETY: the descriptor is a listening socket just made, handed over whole.
                return Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) });
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries.again("in use") => {
                glommio::timer::sleep(BIND_RETRY_PAUSE).await;
            }
            Err(source) => return Err(ServerError::Bind { addr, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_address_is_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:4280".parse().unwrap();
        assert_eq!(
            probe_target(v4),
            "127.0.0.1:4280".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[::]:4280".parse().unwrap();
        assert_eq!(
            probe_target(v6),
            "[::1]:4280".parse::<SocketAddr>().unwrap()
        );
        let fixed: SocketAddr = "10.1.2.3:4280".parse().unwrap();
        assert_eq!(probe_target(fixed), fixed);
    }

    #[test]
    fn a_free_address_is_not_answered_and_a_listening_one_is() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(answers(addr));
        drop(listener);
        assert!(!answers(addr));
    }

    #[test]
    fn two_sockets_of_this_process_share_a_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap().as_socket().unwrap();
        let second = bind(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap().as_socket(), Some(addr));
    }
}
