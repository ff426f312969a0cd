//! SASL/PLAIN on the Kafka port: where the server has users, a client authenticates as one of
//! them (SaslHandshake, then SaslAuthenticate with `authzid NUL user NUL password`) before any
//! other request but ApiVersions, and from then on its user's permissions apply: producing to a
//! topic, creating or deleting it takes permission to publish to the stream's subject; fetching
//! or looking up offsets takes permission to subscribe to every subject the stream captures.

use std::rc::Rc;

use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::*;
use sluice_protocol::kafka::codec::protocol::StrBytes;

use super::KafkaConn;
use crate::api::StreamConfig;
use crate::server::auth::{Credentials, Refusal};
use crate::server::streams::kafka::subject_of;

/// The one mechanism served.
const PLAIN: &str = "PLAIN";

impl KafkaConn {
    /// Whether requests other than the SASL ones may be served: the server has no users, or
    /// this connection authenticated.
    pub fn admitted(&self) -> bool {
        !self.shard.core.config.users.required() || self.user.borrow().is_some()
    }

    /// May this connection write to (produce to, create, delete) the topic of `stream`?
    pub fn may_write(&self, stream: &StreamConfig) -> bool {
        self.user
            .borrow()
            .as_ref()
            .is_none_or(|user| user.permissions.publish.allows_subject(&subject_of(stream)))
    }

    /// May this connection write to a topic not created yet, whose subject is its name?
    pub fn may_create(&self, topic: &str) -> bool {
        self.user
            .borrow()
            .as_ref()
            .is_none_or(|user| user.permissions.publish.allows_subject(topic))
    }

    /// May this connection read the topic of `stream`?
    pub fn may_read(&self, stream: &StreamConfig) -> bool {
        self.user.borrow().as_ref().is_none_or(|user| {
            stream
                .subjects
                .iter()
                .all(|s| user.permissions.subscribe.allows_pattern(s))
        })
    }
}

pub fn handshake(conn: &KafkaConn, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let response =
        SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str(PLAIN)]);
    if req.mechanism.as_str() != PLAIN {
        return response.with_error_code(code::UNSUPPORTED_SASL_MECHANISM);
    }
    conn.sasl_started.set(true);
    response
}

fn refused(error: i16, message: &str) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(error)
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

pub async fn authenticate(
    conn: &Rc<KafkaConn>,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    if !conn.sasl_started.get() || conn.user.borrow().is_some() {
        return refused(
            code::ILLEGAL_SASL_STATE,
            "SaslHandshake first, and only once",
        );
    }
    let mut parts = req.auth_bytes.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refused(code::SASL_AUTHENTICATION_FAILED, "malformed PLAIN message");
    };
    let creds = Credentials {
        user: Some(String::from_utf8_lossy(user).into_owned()),
        password: Some(String::from_utf8_lossy(password).into_owned()),
        token: None,
    };
    let name = creds.user.clone();
    let result = match conn.shard.auth.as_ref().map(|pool| pool.check(creds)) {
        Some(Ok(answer)) => answer.await.unwrap_or(Err(Refusal::Busy)),
        Some(Err(_)) | None => Err(Refusal::Busy),
    };
    match result {
        Ok(user) => {
            tracing::debug!(conn = conn.id, user = %user.name, "kafka client authenticated");
            *conn.user.borrow_mut() = Some(user);
            SaslAuthenticateResponse::default()
        }
        Err(refusal) => {
            tracing::warn!(conn = conn.id, user = ?name, ?refusal, "kafka authentication failed");
            refused(
                code::SASL_AUTHENTICATION_FAILED,
                "authentication failed: invalid user name or password",
            )
        }
    }
}
