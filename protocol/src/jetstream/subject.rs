//! The subjects of the JetStream API: requests under `$JS.API.`, the reply subjects that carry a
//! delivered message's acks (`$JS.ACK.`) and flow-control answers (`$JS.FC.`).
//!
//! ```text
//! $JS.API.INFO
//! $JS.API.STREAM.{CREATE|UPDATE|INFO|DELETE|PURGE}.<stream>
//! $JS.API.STREAM.{NAMES|LIST}
//! $JS.API.STREAM.MSG.{GET|DELETE}.<stream>
//! $JS.API.DIRECT.GET.<stream>[.<subject tokens>]
//! $JS.API.CONSUMER.CREATE.<stream>[.<name>[.<filter tokens>]]
//! $JS.API.CONSUMER.DURABLE.CREATE.<stream>.<durable>
//! $JS.API.CONSUMER.{INFO|DELETE|MSG.NEXT|PAUSE}.<stream>.<consumer>
//! $JS.API.CONSUMER.{NAMES|LIST}.<stream>
//! $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>
//! ```
//!
//! Parsing borrows from the subject and allocates nothing.

/// Every API subject starts with this.
pub const API_PREFIX: &str = "$JS.API.";
/// Every ack reply subject starts with this.
pub const ACK_PREFIX: &str = "$JS.ACK.";
/// Every flow-control reply subject starts with this.
pub const FC_PREFIX: &str = "$JS.FC.";

/// An API request, by its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiSubject<'a> {
    /// `$JS.API.INFO`: the account's usage and limits.
    Info,
    StreamCreate(&'a str),
    StreamUpdate(&'a str),
    StreamInfo(&'a str),
    StreamDelete(&'a str),
    StreamPurge(&'a str),
    StreamNames,
    StreamList,
    StreamMsgGet(&'a str),
    StreamMsgDelete(&'a str),
    /// `DIRECT.GET.<stream>` with the request in the body, or `DIRECT.GET.<stream>.<subject>`
    /// (the last message on that subject, empty body).
    DirectGet {
        stream: &'a str,
        last_by_subject: Option<&'a str>,
    },
    /// Every form of consumer creation; see [`CreateForm`].
    ConsumerCreate {
        stream: &'a str,
        form: CreateForm<'a>,
    },
    ConsumerInfo {
        stream: &'a str,
        consumer: &'a str,
    },
    ConsumerDelete {
        stream: &'a str,
        consumer: &'a str,
    },
    ConsumerNames(&'a str),
    ConsumerList(&'a str),
    /// A pull request (a publish, not a request: its reply subject receives the messages).
    ConsumerNext {
        stream: &'a str,
        consumer: &'a str,
    },
    ConsumerPause {
        stream: &'a str,
        consumer: &'a str,
    },
    /// Under `$JS.API.` but nothing this server answers.
    Unknown,
}

/// How a consumer-create subject names the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateForm<'a> {
    /// `CONSUMER.CREATE.<stream>`: the name, if any, is in the body.
    Unnamed,
    /// `CONSUMER.CREATE.<stream>.<name>[.<filter>]`: the filter, when present, must equal the
    /// body's `filter_subject`.
    Named {
        name: &'a str,
        filter: Option<&'a str>,
    },
    /// `CONSUMER.DURABLE.CREATE.<stream>.<durable>`: the body's `durable_name` must equal it.
    Durable(&'a str),
}

/// The API request a subject names, or `None` when it is not under `$JS.API.`.
pub fn parse_api_subject(subject: &str) -> Option<ApiSubject<'_>> {
    let rest = subject.strip_prefix(API_PREFIX)?;
    Some(parse_api_rest(rest).unwrap_or(ApiSubject::Unknown))
}

fn parse_api_rest(rest: &str) -> Option<ApiSubject<'_>> {
    if rest == "INFO" {
        return Some(ApiSubject::Info);
    }
    if let Some(rest) = rest.strip_prefix("STREAM.") {
        return parse_stream(rest);
    }
    if let Some(rest) = rest.strip_prefix("DIRECT.GET.") {
        let (stream, subject) = split_first(rest);
        return Some(ApiSubject::DirectGet {
            stream: token(stream)?,
            last_by_subject: subject.filter(|s| !s.is_empty()),
        });
    }
    if let Some(rest) = rest.strip_prefix("CONSUMER.") {
        return parse_consumer(rest);
    }
    None
}

fn parse_stream(rest: &str) -> Option<ApiSubject<'_>> {
    match rest {
        "NAMES" => return Some(ApiSubject::StreamNames),
        "LIST" => return Some(ApiSubject::StreamList),
        _ => {}
    }
    let (verb, name) = if let Some(name) = rest.strip_prefix("MSG.GET.") {
        ("MSG.GET", name)
    } else if let Some(name) = rest.strip_prefix("MSG.DELETE.") {
        ("MSG.DELETE", name)
    } else {
        let (verb, name) = split_first(rest);
        (verb, name?)
    };
    let name = token(name)?;
    Some(match verb {
        "CREATE" => ApiSubject::StreamCreate(name),
        "UPDATE" => ApiSubject::StreamUpdate(name),
        "INFO" => ApiSubject::StreamInfo(name),
        "DELETE" => ApiSubject::StreamDelete(name),
        "PURGE" => ApiSubject::StreamPurge(name),
        "MSG.GET" => ApiSubject::StreamMsgGet(name),
        "MSG.DELETE" => ApiSubject::StreamMsgDelete(name),
        _ => return None,
    })
}

fn parse_consumer(rest: &str) -> Option<ApiSubject<'_>> {
    if let Some(rest) = rest.strip_prefix("DURABLE.CREATE.") {
        let (stream, durable) = split_first(rest);
        return Some(ApiSubject::ConsumerCreate {
            stream: token(stream)?,
            form: CreateForm::Durable(token(durable?)?),
        });
    }
    if let Some(rest) = rest.strip_prefix("CREATE.") {
        let (stream, named) = split_first(rest);
        let form = match named {
            None => CreateForm::Unnamed,
            Some(named) => {
                let (name, filter) = split_first(named);
                CreateForm::Named {
                    name: token(name)?,
                    filter: match filter {
                        Some("") => return None,
                        other => other,
                    },
                }
            }
        };
        return Some(ApiSubject::ConsumerCreate {
            stream: token(stream)?,
            form,
        });
    }
    if let Some(rest) = rest.strip_prefix("MSG.NEXT.") {
        let (stream, consumer) = two_tokens(rest)?;
        return Some(ApiSubject::ConsumerNext { stream, consumer });
    }
    let (verb, rest) = split_first(rest);
    let rest = rest?;
    Some(match verb {
        "NAMES" => ApiSubject::ConsumerNames(token(rest)?),
        "LIST" => ApiSubject::ConsumerList(token(rest)?),
        "INFO" | "DELETE" | "PAUSE" => {
            let (stream, consumer) = two_tokens(rest)?;
            match verb {
                "INFO" => ApiSubject::ConsumerInfo { stream, consumer },
                "DELETE" => ApiSubject::ConsumerDelete { stream, consumer },
                _ => ApiSubject::ConsumerPause { stream, consumer },
            }
        }
        _ => return None,
    })
}

/// `a.b.c` → (`a`, Some(`b.c`)); `a` → (`a`, None).
fn split_first(s: &str) -> (&str, Option<&str>) {
    match s.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (s, None),
    }
}

/// Exactly two non-empty tokens.
fn two_tokens(s: &str) -> Option<(&str, &str)> {
    let (a, b) = s.split_once('.')?;
    Some((token(a)?, token(b)?))
}

/// One non-empty token without a dot.
fn token(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.contains('.')).then_some(s)
}

/// What a delivered message's ack reply subject carries (the v1 form, 9 tokens, which every
/// client parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckReply<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    /// How many times this message has been delivered, this delivery included.
    pub delivered: u64,
    pub stream_seq: u64,
    /// The delivery's own sequence: one more for every delivery, redeliveries included.
    pub consumer_seq: u64,
    /// When the message was stored, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Messages matching the consumer that are not yet delivered, after this one.
    pub pending: u64,
}

impl AckReply<'_> {
    /// Writes the reply subject into `out`.
    pub fn write(&self, out: &mut String) {
        let mut number = itoa::Buffer::new();
        out.push_str(ACK_PREFIX);
        out.push_str(self.stream);
        out.push('.');
        out.push_str(self.consumer);
        for n in [
            self.delivered,
            self.stream_seq,
            self.consumer_seq,
            self.timestamp_ns,
            self.pending,
        ] {
            out.push('.');
            out.push_str(number.format(n));
        }
    }

    /// The reply subject as a new string.
    pub fn subject(&self) -> String {
        let mut out = String::with_capacity(ACK_PREFIX.len() + self.stream.len() + 80);
        self.write(&mut out);
        out
    }
}

/// Reads an ack reply subject: the v1 form (9 tokens) or the v2 form (12 tokens, with a domain
/// and an account hash before the stream, and a random token at the end).
pub fn parse_ack_reply(subject: &str) -> Option<AckReply<'_>> {
    let rest = subject.strip_prefix(ACK_PREFIX)?;
    let mut tokens: [&str; 10] = [""; 10];
    let mut count = 0;
    for part in rest.split('.') {
        if count == tokens.len() {
            return None;
        }
        tokens[count] = part;
        count += 1;
    }
    let fields = match count {
        7 => &tokens[..7],
        10 => &tokens[2..9],
        _ => return None,
    };
    let number = |s: &str| s.parse::<u64>().ok();
    Some(AckReply {
        stream: token(fields[0])?,
        consumer: token(fields[1])?,
        delivered: number(fields[2])?,
        stream_seq: number(fields[3])?,
        consumer_seq: number(fields[4])?,
        timestamp_ns: number(fields[5])?,
        pending: number(fields[6])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_api_subject_form_is_read() {
        use ApiSubject::*;
        let cases = [
            ("$JS.API.INFO", Info),
            ("$JS.API.STREAM.CREATE.ORD", StreamCreate("ORD")),
            ("$JS.API.STREAM.UPDATE.ORD", StreamUpdate("ORD")),
            ("$JS.API.STREAM.INFO.ORD", StreamInfo("ORD")),
            ("$JS.API.STREAM.DELETE.ORD", StreamDelete("ORD")),
            ("$JS.API.STREAM.PURGE.ORD", StreamPurge("ORD")),
            ("$JS.API.STREAM.NAMES", StreamNames),
            ("$JS.API.STREAM.LIST", StreamList),
            ("$JS.API.STREAM.MSG.GET.KV_b", StreamMsgGet("KV_b")),
            ("$JS.API.STREAM.MSG.DELETE.KV_b", StreamMsgDelete("KV_b")),
            (
                "$JS.API.DIRECT.GET.KV_b",
                DirectGet {
                    stream: "KV_b",
                    last_by_subject: None,
                },
            ),
            (
                "$JS.API.DIRECT.GET.KV_b.$KV.b.key",
                DirectGet {
                    stream: "KV_b",
                    last_by_subject: Some("$KV.b.key"),
                },
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORD",
                ConsumerCreate {
                    stream: "ORD",
                    form: CreateForm::Unnamed,
                },
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORD.d1",
                ConsumerCreate {
                    stream: "ORD",
                    form: CreateForm::Named {
                        name: "d1",
                        filter: None,
                    },
                },
            ),
            (
                "$JS.API.CONSUMER.CREATE.ORD.d1.orders.>",
                ConsumerCreate {
                    stream: "ORD",
                    form: CreateForm::Named {
                        name: "d1",
                        filter: Some("orders.>"),
                    },
                },
            ),
            (
                "$JS.API.CONSUMER.CREATE.KV_b.oc_x_1.$KV.b.>",
                ConsumerCreate {
                    stream: "KV_b",
                    form: CreateForm::Named {
                        name: "oc_x_1",
                        filter: Some("$KV.b.>"),
                    },
                },
            ),
            (
                "$JS.API.CONSUMER.DURABLE.CREATE.ORD.dur",
                ConsumerCreate {
                    stream: "ORD",
                    form: CreateForm::Durable("dur"),
                },
            ),
            (
                "$JS.API.CONSUMER.INFO.ORD.d1",
                ConsumerInfo {
                    stream: "ORD",
                    consumer: "d1",
                },
            ),
            (
                "$JS.API.CONSUMER.DELETE.ORD.d1",
                ConsumerDelete {
                    stream: "ORD",
                    consumer: "d1",
                },
            ),
            ("$JS.API.CONSUMER.NAMES.ORD", ConsumerNames("ORD")),
            ("$JS.API.CONSUMER.LIST.ORD", ConsumerList("ORD")),
            (
                "$JS.API.CONSUMER.MSG.NEXT.ORD.d1",
                ConsumerNext {
                    stream: "ORD",
                    consumer: "d1",
                },
            ),
            (
                "$JS.API.CONSUMER.PAUSE.ORD.d1",
                ConsumerPause {
                    stream: "ORD",
                    consumer: "d1",
                },
            ),
        ];
        for (subject, want) in cases {
            assert_eq!(parse_api_subject(subject), Some(want), "{subject}");
        }
    }

    #[test]
    fn malformed_api_subjects_are_unknown_and_others_are_not_api() {
        for subject in [
            "$JS.API.",
            "$JS.API.STREAM.CREATE",
            "$JS.API.STREAM.CREATE.",
            "$JS.API.STREAM.CREATE.a.b",
            "$JS.API.STREAM.EXPLODE.a",
            "$JS.API.CONSUMER.INFO.ORD",
            "$JS.API.CONSUMER.INFO.ORD.d1.x",
            "$JS.API.CONSUMER.CREATE.ORD.d1.",
            "$JS.API.CONSUMER.DURABLE.CREATE.ORD",
            "$JS.API.CONSUMER.MSG.NEXT.ORD",
            "$JS.API.DIRECT.GET.",
        ] {
            assert_eq!(
                parse_api_subject(subject),
                Some(ApiSubject::Unknown),
                "{subject}"
            );
        }
        assert_eq!(parse_api_subject("orders.new"), None);
        assert_eq!(parse_api_subject("$JS.ACK.a.b.1.2.3.4.5"), None);
    }

    #[test]
    fn the_v2_ack_form_is_read_too() {
        let ack =
            parse_ack_reply("$JS.ACK._.hash.ORD.d1.2.3.5.1795384005078787121.0.r4nd").unwrap();
        assert_eq!(ack.stream, "ORD");
        assert_eq!(ack.consumer, "d1");
        assert_eq!((ack.delivered, ack.stream_seq, ack.consumer_seq), (2, 3, 5));
        assert_eq!(ack.timestamp_ns, 1795384005078787121);
        assert_eq!(parse_ack_reply("$JS.ACK.ORD.d1.2.3.5.x.0"), None);
        assert_eq!(parse_ack_reply("$JS.ACK.ORD.d1.2.3.5.1"), None);
    }

    proptest! {
        #[test]
        fn ack_replies_round_trip(
            stream in "[A-Za-z0-9_-]{1,20}",
            consumer in "[A-Za-z0-9_-]{1,20}",
            numbers in proptest::array::uniform5(any::<u64>()),
        ) {
            let ack = AckReply {
                stream: &stream,
                consumer: &consumer,
                delivered: numbers[0],
                stream_seq: numbers[1],
                consumer_seq: numbers[2],
                timestamp_ns: numbers[3],
                pending: numbers[4],
            };
            let subject = ack.subject();
            prop_assert_eq!(parse_ack_reply(&subject), Some(ack));
        }

        #[test]
        fn any_subject_parses_without_panic(subject in "\\PC{0,80}") {
            let _ = parse_api_subject(&subject);
            let _ = parse_ack_reply(&subject);
        }
    }
}
