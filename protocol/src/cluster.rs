//! Frames between the nodes of a cluster, on the `--cluster` port.
//!
//! A frame is `u32 length | u32 crc32c | u8 kind | body`, big-endian; the length and the checksum
//! cover the kind and the body. A link opens with the dialing node's `Hello`, answered by the other
//! node's own `Hello` (welcome) or a `Refuse` with the reason; from then on each side sends a `Ping`
//! every second, and a link that brings nothing for a few seconds is down. `Raft` frames carry the
//! messages of the meta group, encoded by the consensus library; `Group` frames those of one
//! partition's group. `Forward` carries a publish to the node leading its partition, answered by
//! `Forwarded` once the group has decided it.
//!
//! ```text
//! Group:     kind 6 | stream (u16 len, UTF-8) | partition u32 | consensus message
//! Forward:   kind 7 | stream | partition u32 | id u64 | count u32 | deadline u64 | body
//! Forwarded: kind 8 | id u64 | 0 | offset u64
//!                   | id u64 | 1 | code u16 | reason (u16 len, UTF-8)
//! Clients:   kind 9 | native address (u16 len, UTF-8) | NATS address (empty: none)
//!                   | Kafka address (empty: none)
//! Consumer:  kind 10 | stream | partition u32 | consumer (u16 len, UTF-8) | seq u64
//!                    | state (empty: gone)
//! Offsets:   kind 11 | Kafka group (u16 len, UTF-8) | committed offsets
//! Held:      kind 12 | stream | partition u32 | consumer | seq u64
//! Ask:       kind 13 | stream | partition u32 | consumer
//! ```
//!
//! Each side of a new link says once where its clients reach it (`Clients`), so that every node
//! can tell its NATS clients of the others.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// The version of this protocol a node speaks; a node refuses a `Hello` of another version, so
/// that nodes of different versions are told why they cannot link rather than cut off at the
/// first frame one of them does not know. 1: hellos, pings and the meta group; 2: partition
/// groups, forwarded publishes, client addresses and consumer states; 3: Kafka addresses, Kafka
/// groups' committed offsets, and consumer states numbered and confirmed once kept.
pub const CLUSTER_PROTOCOL_VERSION: u16 = 3;

/// Largest frame a node accepts: room for a consensus message with a batch of entries; a larger
/// length is a corrupt or foreign stream, refused before anything is buffered.
pub const CLUSTER_FRAME_BYTES_MAX: usize = 1024 * 1024;

/// Longest node name, in bytes.
pub const NODE_NAME_BYTES_MAX: usize = 128;

const HEADER: usize = 8;

/// What a node says about itself when a link opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u16,
    /// The node's name (`--name`), unique in the cluster.
    pub node: &'a str,
    /// The address its peers reach it at (`--cluster`).
    pub cluster_addr: &'a str,
    /// Its shard count: a partition's replicas live on the same shard of every node.
    pub shards: u16,
    /// Proof that it knows the cluster's secret (a hash of the secret and its name), or empty.
    pub proof: &'a [u8],
    /// Random for each start of the node: a hello with this node's own instance came back
    /// through a route to itself; one with its name but another instance is another node
    /// misnamed.
    pub instance: u64,
}

/// One frame between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterFrame<'a> {
    /// The dialing node's introduction.
    Hello(Hello<'a>),
    /// The answering node's introduction: the link is open.
    Welcome(Hello<'a>),
    /// The answering node will not take the link, and why.
    Refuse(Refusal<'a>),
    /// Sent every second on an open link.
    Ping,
    /// A consensus message of the meta group, as the consensus library encodes it.
    Raft(&'a [u8]),
    /// A consensus message of one partition's group.
    Group {
        stream: &'a str,
        partition: u32,
        message: &'a [u8],
    },
    /// A publish for the partition's leader: `body` as it is stored, taking `count` offsets.
    Forward {
        stream: &'a str,
        partition: u32,
        id: u64,
        count: u32,
        /// When the publisher stops waiting (milliseconds since the Unix epoch): a node that
        /// gets the publish later refuses it rather than store it after what came next.
        deadline_ms: u64,
        body: &'a [u8],
    },
    /// The outcome of the `Forward` with this id: the offset it was stored at, or an error code
    /// and reason.
    Forwarded {
        id: u64,
        result: Result<u64, (u16, &'a str)>,
    },
    /// Where the sending node's clients connect: its native, NATS and Kafka addresses (empty if
    /// off).
    Clients {
        native: &'a str,
        nats: &'a str,
        kafka: &'a str,
    },
    /// A consumer's state in a replicated partition, as last saved where it runs (JSON), or
    /// empty once the consumer is deleted; `seq` counts the states the sending node sent of it.
    /// With `seq` 0, the answer to an `Ask`: the latest state the sending node keeps (empty:
    /// none).
    Consumer {
        stream: &'a str,
        partition: u32,
        consumer: &'a str,
        seq: u64,
        state: &'a [u8],
    },
    /// A Kafka group's committed offsets, as its coordinator saved them (JSON).
    Offsets { group: &'a str, saved: &'a [u8] },
    /// The answer to `Consumer`: the receiving node holds that state, or a later one (and writes
    /// it down next).
    Held {
        stream: &'a str,
        partition: u32,
        consumer: &'a str,
        seq: u64,
    },
    /// Which state of a consumer the receiving node keeps: answered by a `Consumer` of `seq` 0.
    Ask {
        stream: &'a str,
        partition: u32,
        consumer: &'a str,
    },
}

/// Why a node refused a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// The route leads back to the node that dialed it.
    Itself,
    /// Anything else, in words.
    Other(&'a str),
}

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSE: u8 = 3;
const KIND_PING: u8 = 4;
const KIND_RAFT: u8 = 5;
const KIND_GROUP: u8 = 6;
const KIND_FORWARD: u8 = 7;
const KIND_FORWARDED: u8 = 8;
const KIND_CLIENTS: u8 = 9;
const KIND_CONSUMER: u8 = 10;
const KIND_OFFSETS: u8 = 11;
const KIND_HELD: u8 = 12;
const KIND_ASK: u8 = 13;

const REFUSE_ITSELF: u8 = 1;
const REFUSE_OTHER: u8 = 2;

/// Why bytes from a peer are not a frame.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClusterFrameError {
    #[error("cluster frame of {0} bytes is larger than the limit of {CLUSTER_FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("cluster frame checksum does not match")]
    Checksum,
    #[error("cluster frame is malformed: {0}")]
    Malformed(&'static str),
}

impl ClusterFrame<'_> {
    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u64(0);
        match self {
            ClusterFrame::Hello(hello) => {
                out.put_u8(KIND_HELLO);
                put_hello(out, hello);
            }
            ClusterFrame::Welcome(hello) => {
                out.put_u8(KIND_WELCOME);
                put_hello(out, hello);
            }
            ClusterFrame::Refuse(Refusal::Itself) => {
                out.put_u8(KIND_REFUSE);
                out.put_u8(REFUSE_ITSELF);
            }
            ClusterFrame::Refuse(Refusal::Other(reason)) => {
                out.put_u8(KIND_REFUSE);
                out.put_u8(REFUSE_OTHER);
                put_str(out, reason);
            }
            ClusterFrame::Ping => out.put_u8(KIND_PING),
            ClusterFrame::Raft(message) => {
                out.put_u8(KIND_RAFT);
                out.put_slice(message);
            }
            ClusterFrame::Group {
                stream,
                partition,
                message,
            } => {
                out.put_u8(KIND_GROUP);
                put_str(out, stream);
                out.put_u32(*partition);
                out.put_slice(message);
            }
            ClusterFrame::Forward {
                stream,
                partition,
                id,
                count,
                deadline_ms,
                body,
            } => {
                out.put_u8(KIND_FORWARD);
                put_str(out, stream);
                out.put_u32(*partition);
                out.put_u64(*id);
                out.put_u32(*count);
                out.put_u64(*deadline_ms);
                out.put_slice(body);
            }
            ClusterFrame::Forwarded { id, result } => {
                out.put_u8(KIND_FORWARDED);
                out.put_u64(*id);
                match result {
                    Ok(offset) => {
                        out.put_u8(0);
                        out.put_u64(*offset);
                    }
                    Err((code, reason)) => {
                        out.put_u8(1);
                        out.put_u16(*code);
                        put_str(out, reason);
                    }
                }
            }
            ClusterFrame::Clients {
                native,
                nats,
                kafka,
            } => {
                out.put_u8(KIND_CLIENTS);
                put_str(out, native);
                put_str(out, nats);
                put_str(out, kafka);
            }
            ClusterFrame::Consumer {
                stream,
                partition,
                consumer,
                seq,
                state,
            } => {
                out.put_u8(KIND_CONSUMER);
                put_str(out, stream);
                out.put_u32(*partition);
                put_str(out, consumer);
                out.put_u64(*seq);
                out.put_slice(state);
            }
            ClusterFrame::Held {
                stream,
                partition,
                consumer,
                seq,
            } => {
                out.put_u8(KIND_HELD);
                put_str(out, stream);
                out.put_u32(*partition);
                put_str(out, consumer);
                out.put_u64(*seq);
            }
            ClusterFrame::Ask {
                stream,
                partition,
                consumer,
            } => {
                out.put_u8(KIND_ASK);
                put_str(out, stream);
                out.put_u32(*partition);
                put_str(out, consumer);
            }
            ClusterFrame::Offsets { group, saved } => {
                out.put_u8(KIND_OFFSETS);
                put_str(out, group);
                out.put_slice(saved);
            }
        }
        let len = (out.len() - start - HEADER) as u32;
        let crc = crc32c::crc32c(&out[start + HEADER..]);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// Reads the frame at the start of `buf`: the frame and the bytes it took, or `None` while
    /// the frame is incomplete.
    pub fn decode(buf: &[u8]) -> Result<Option<(ClusterFrame<'_>, usize)>, ClusterFrameError> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if len > CLUSTER_FRAME_BYTES_MAX {
            return Err(ClusterFrameError::TooLarge(len));
        }
        let crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        let Some(body) = buf.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        if crc32c::crc32c(body) != crc {
            return Err(ClusterFrameError::Checksum);
        }
        let mut reader = Reader(body);
        let frame = match reader.u8()? {
            KIND_HELLO => ClusterFrame::Hello(reader.hello()?),
            KIND_WELCOME => ClusterFrame::Welcome(reader.hello()?),
            KIND_REFUSE => match reader.u8()? {
                REFUSE_ITSELF => ClusterFrame::Refuse(Refusal::Itself),
                REFUSE_OTHER => ClusterFrame::Refuse(Refusal::Other(reader.str()?)),
                _ => return Err(ClusterFrameError::Malformed("unknown refusal")),
            },
            KIND_PING => ClusterFrame::Ping,
            KIND_RAFT => ClusterFrame::Raft(std::mem::take(&mut reader.0)),
            KIND_GROUP => ClusterFrame::Group {
                stream: reader.str()?,
                partition: reader.u32()?,
                message: std::mem::take(&mut reader.0),
            },
            KIND_FORWARD => ClusterFrame::Forward {
                stream: reader.str()?,
                partition: reader.u32()?,
                id: reader.u64()?,
                count: reader.u32()?,
                deadline_ms: reader.u64()?,
                body: std::mem::take(&mut reader.0),
            },
            KIND_FORWARDED => {
                let id = reader.u64()?;
                let result = match reader.u8()? {
                    0 => Ok(reader.u64()?),
                    1 => Err((reader.u16()?, reader.str()?)),
                    _ => return Err(ClusterFrameError::Malformed("unknown outcome")),
                };
                ClusterFrame::Forwarded { id, result }
            }
            KIND_CLIENTS => ClusterFrame::Clients {
                native: reader.str()?,
                nats: reader.str()?,
                kafka: reader.str()?,
            },
            KIND_CONSUMER => ClusterFrame::Consumer {
                stream: reader.str()?,
                partition: reader.u32()?,
                consumer: reader.str()?,
                seq: reader.u64()?,
                state: std::mem::take(&mut reader.0),
            },
            KIND_HELD => ClusterFrame::Held {
                stream: reader.str()?,
                partition: reader.u32()?,
                consumer: reader.str()?,
                seq: reader.u64()?,
            },
            KIND_ASK => ClusterFrame::Ask {
                stream: reader.str()?,
                partition: reader.u32()?,
                consumer: reader.str()?,
            },
            KIND_OFFSETS => ClusterFrame::Offsets {
                group: reader.str()?,
                saved: std::mem::take(&mut reader.0),
            },
            _ => return Err(ClusterFrameError::Malformed("unknown kind")),
        };
        if !reader.0.is_empty() {
            return Err(ClusterFrameError::Malformed(
                "bytes after the frame's fields",
            ));
        }
        Ok(Some((frame, HEADER + len)))
    }
}

fn put_hello(out: &mut BytesMut, hello: &Hello<'_>) {
    out.put_u16(hello.version);
    put_str(out, hello.node);
    put_str(out, hello.cluster_addr);
    out.put_u16(hello.shards);
    let proof = &hello.proof[..hello.proof.len().min(u16::MAX as usize)];
    out.put_u16(proof.len() as u16);
    out.put_slice(proof);
    out.put_u64(hello.instance);
}

fn put_str(out: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClusterFrameError> {
        if self.0.len() < n {
            return Err(ClusterFrameError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ClusterFrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ClusterFrameError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, ClusterFrameError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ClusterFrameError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn str(&mut self) -> Result<&'a str, ClusterFrameError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| ClusterFrameError::Malformed("not UTF-8"))
    }

    fn hello(&mut self) -> Result<Hello<'a>, ClusterFrameError> {
        let version = self.u16()?;
        let node = self.str()?;
        if node.is_empty() || node.len() > NODE_NAME_BYTES_MAX {
            return Err(ClusterFrameError::Malformed("node name empty or too long"));
        }
        let cluster_addr = self.str()?;
        let shards = self.u16()?;
        let proof_len = self.u16()? as usize;
        let proof = self.take(proof_len)?;
        let instance = self.u64()?;
        Ok(Hello {
            version,
            node,
            cluster_addr,
            shards,
            proof,
            instance,
        })
    }
}

/// Whether `name` can name a node: 1 to 128 bytes of letters, digits, `-`, `_`, `.` and `:` (a
/// node's default name is its cluster address).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NODE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: ClusterFrame<'_>) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out.put_slice(b"next");
        let (decoded, used) = ClusterFrame::decode(&out).unwrap().unwrap();
        assert_eq!(decoded, frame);
        assert_eq!(&out[used..], b"next");
        for cut in 0..used {
            assert_eq!(ClusterFrame::decode(&out[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn every_frame_round_trips_and_waits_for_its_last_byte() {
        let hello = Hello {
            version: CLUSTER_PROTOCOL_VERSION,
            node: "n1",
            cluster_addr: "127.0.0.1:6222",
            shards: 2,
            proof: b"0123456789abcdef",
            instance: 0x0123_4567_89ab_cdef,
        };
        round_trip(ClusterFrame::Hello(hello.clone()));
        round_trip(ClusterFrame::Welcome(hello));
        round_trip(ClusterFrame::Refuse(Refusal::Itself));
        round_trip(ClusterFrame::Refuse(Refusal::Other("shard counts differ")));
        round_trip(ClusterFrame::Ping);
        round_trip(ClusterFrame::Raft(b"\x08\x03\x10\x01"));
        round_trip(ClusterFrame::Raft(b""));
        round_trip(ClusterFrame::Group {
            stream: "orders",
            partition: 3,
            message: b"\x08\x03",
        });
        round_trip(ClusterFrame::Forward {
            stream: "orders",
            partition: 0,
            id: 77,
            count: 1,
            deadline_ms: 1_800_000_000_000,
            body: b"frame bytes",
        });
        round_trip(ClusterFrame::Forwarded {
            id: 77,
            result: Ok(41),
        });
        round_trip(ClusterFrame::Forwarded {
            id: 78,
            result: Err((18, "no leader")),
        });
        round_trip(ClusterFrame::Clients {
            native: "10.0.0.1:4280",
            nats: "10.0.0.1:4222",
            kafka: "10.0.0.1:9092",
        });
        round_trip(ClusterFrame::Clients {
            native: "10.0.0.1:4280",
            nats: "",
            kafka: "",
        });
        round_trip(ClusterFrame::Consumer {
            stream: "orders",
            partition: 1,
            consumer: "workers",
            seq: 3,
            state: b"{\"next\":7}",
        });
        round_trip(ClusterFrame::Held {
            stream: "orders",
            partition: 1,
            consumer: "workers",
            seq: 3,
        });
        round_trip(ClusterFrame::Ask {
            stream: "orders",
            partition: 1,
            consumer: "workers",
        });
        round_trip(ClusterFrame::Offsets {
            group: "billing",
            saved: b"{\"offsets\":[]}",
        });
    }

    #[test]
    fn a_flipped_bit_or_a_huge_length_is_refused() {
        let mut out = BytesMut::new();
        ClusterFrame::Ping.encode(&mut out);
        out[8] ^= 0x40;
        assert_eq!(ClusterFrame::decode(&out), Err(ClusterFrameError::Checksum));
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            ClusterFrame::decode(&huge),
            Err(ClusterFrameError::TooLarge(_))
        ));
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("n1"));
        assert!(valid_node_name("sluice-0.sluice.default"));
        assert!(valid_node_name("10.0.0.7:6222"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a/b"));
        assert!(!valid_node_name(&"x".repeat(129)));
    }
}
