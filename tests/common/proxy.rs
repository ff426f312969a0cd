//! A fault-injecting TCP proxy for the links between nodes: it forwards every connection to its
//! target until it is cut, then closes the connections it carries and refuses new ones until it
//! is healed. One proxy per direction between two nodes makes a network partition.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy listening on a loopback port of its own.
pub struct Proxy {
    pub addr: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts forwarding connections to `target`.
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        listener.set_nonblocking(true).expect("non-blocking accept");
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let target = target.to_string();
        {
            let (cut, open, stop) = (cut.clone(), open.clone(), stop.clone());
            std::thread::spawn(move || accept(listener, target, cut, open, stop));
        }
        Proxy {
            addr,
            cut,
            open,
            stop,
        }
    }

    /// Closes every connection it carries and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn accept(
    listener: TcpListener,
    target: String,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(&target) else {
            continue;
        };
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        {
            let mut open = open.lock().unwrap();
            open.extend(client.try_clone());
            open.extend(server.try_clone());
        }
        for (from, to) in pairs {
            if let (Ok(from), Ok(to)) = (from, to) {
                std::thread::spawn(move || pipe(from, to));
            }
        }
    }
}

/// Copies bytes one way until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Proxies for every link of a cluster of nodes: `proxies[i][j]` carries node i's links to node j,
/// so that a node can be cut off from the others and joined again.
pub struct Links {
    proxies: Vec<Vec<Option<Proxy>>>,
}

impl Links {
    /// Proxies to each of the nodes' cluster addresses, from each of the others.
    pub fn new(cluster_addrs: &[&str]) -> Links {
        let n = cluster_addrs.len();
        let proxies = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (i != j).then(|| Proxy::start(cluster_addrs[j])))
                    .collect()
            })
            .collect();
        Links { proxies }
    }

    /// The routes node `i` dials: its proxies to the others.
    pub fn routes_of(&self, i: usize) -> Vec<&str> {
        self.proxies[i]
            .iter()
            .flatten()
            .map(|p| p.addr.as_str())
            .collect()
    }

    /// Cuts (or heals) the links between nodes `i` and `j`.
    pub fn cut_between(&self, i: usize, j: usize, cut: bool) {
        for proxy in [&self.proxies[i][j], &self.proxies[j][i]]
            .into_iter()
            .flatten()
        {
            if cut {
                proxy.cut();
            } else {
                proxy.heal();
            }
        }
    }

    /// Cuts (or heals) every link between node `i` and the others.
    pub fn isolate(&self, i: usize, cut: bool) {
        for j in (0..self.proxies.len()).filter(|&j| j != i) {
            self.cut_between(i, j, cut);
        }
    }
}
