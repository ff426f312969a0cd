//! The reading side of a link: frames cut out of what the socket brings, each turned into what
//! the node keeps of it.

use super::*;

/// Cuts frames out of what a link reads.
pub(super) struct LinkReader {
    half: Half,
    /// Bytes read; those before `start` are frames already taken.
    buf: Vec<u8>,
    start: usize,
    /// Where each read lands, kept between reads.
    chunk: Box<[u8]>,
}

impl LinkReader {
    pub(super) fn new(half: Half) -> LinkReader {
        LinkReader {
            half,
            buf: Vec::with_capacity(LINK_READ_BYTES),
            start: 0,
            chunk: vec![0u8; LINK_READ_BYTES].into_boxed_slice(),
        }
    }

    /// The next frame, if one comes within `timeout`.
    pub(super) async fn next(&mut self, timeout: Duration) -> Result<Received, LinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = ClusterFrame::decode(&self.buf[self.start..])? {
                let received = match frame {
                    ClusterFrame::Hello(h) => Received::Hello((&h).into()),
                    ClusterFrame::Welcome(h) => Received::Welcome((&h).into()),
                    ClusterFrame::Refuse(Refusal::Itself) => Received::Refuse(None),
                    ClusterFrame::Refuse(Refusal::Other(r)) => Received::Refuse(Some(r.into())),
                    ClusterFrame::Ping => Received::Ping,
                    ClusterFrame::Raft(bytes) => Received::Raft(bytes.to_vec()),
                    ClusterFrame::Group {
                        stream,
                        partition,
                        message,
                    } => Received::Group(GroupIn::Group {
                        stream: stream.to_string(),
                        partition,
                        message: message.to_vec(),
                    }),
                    ClusterFrame::Forward {
                        stream,
                        partition,
                        id,
                        count,
                        deadline_ms,
                        body,
                    } => Received::Group(GroupIn::Forward {
                        from: String::new(),
                        stream: stream.to_string(),
                        partition,
                        id,
                        count,
                        deadline_ms,
                        body: Bytes::copy_from_slice(body),
                    }),
                    ClusterFrame::Clients { nats, kafka, .. } => Received::Clients {
                        nats: nats.to_string(),
                        kafka: kafka.to_string(),
                    },
                    ClusterFrame::Consumer {
                        stream,
                        partition,
                        consumer,
                        seq,
                        state,
                    } => Received::Group(GroupIn::Consumer {
                        from: String::new(),
                        stream: stream.to_string(),
                        partition,
                        consumer: consumer.to_string(),
                        seq,
                        state: state.to_vec(),
                    }),
                    ClusterFrame::Held {
                        stream,
                        partition,
                        consumer,
                        seq,
                    } => Received::Group(GroupIn::Held {
                        from: String::new(),
                        stream: stream.to_string(),
                        partition,
                        consumer: consumer.to_string(),
                        seq,
                    }),
                    ClusterFrame::Ask {
                        stream,
                        partition,
                        consumer,
                    } => Received::Group(GroupIn::Ask {
                        from: String::new(),
                        stream: stream.to_string(),
                        partition,
                        consumer: consumer.to_string(),
                    }),
                    ClusterFrame::Offsets { group, saved } => Received::Group(GroupIn::Offsets {
                        group: group.to_string(),
                        saved: saved.to_vec(),
                    }),
                    ClusterFrame::Forwarded { id, result } => Received::Group(GroupIn::Forwarded {
                        id,
                        result: result.map_err(|(code, why)| (code, why.to_string())),
                    }),
                };
                self.start += used;
                return Ok(received);
            }
            // What is taken goes before more is read: the rest moves to the front once.
            self.buf.drain(..self.start);
            self.start = 0;
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = &mut self.chunk[..];
            let read = or(async { Some(self.half.read(chunk).await) }, async {
                glommio::timer::sleep(left).await;
                None
            })
            .await;
            match read {
                None => return Err(LinkError::Silent(timeout)),
                Some(Ok(0)) => return Err(LinkError::Closed),
                Some(Ok(n)) => self.buf.extend_from_slice(&self.chunk[..n]),
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }
}
