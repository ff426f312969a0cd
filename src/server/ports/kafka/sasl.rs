//! SASL/PLAIN on the Kafka port: where the server has users, a client authenticates as one of
//! them before any other request but ApiVersions: SaslHandshake, then the `authzid NUL user NUL
//! password` token in a SaslAuthenticate (handshake v1) or as a bare size-prefixed frame, answered
//! by an empty one (handshake v0, as older clients do it); and from then on its user's permissions apply: producing to a
//! topic, creating or deleting it takes permission to publish to the stream's subject; fetching
//! or looking up offsets takes permission to subscribe to every subject the stream captures.

use std::rc::Rc;

use bytes::Bytes;
use sluice_protocol::kafka::RequestError;

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

pub fn handshake(
    conn: &KafkaConn,
    version: i16,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let response =
        SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str(PLAIN)]);
    if req.mechanism.as_str() != PLAIN {
        return response.with_error_code(code::UNSUPPORTED_SASL_MECHANISM);
    }
    conn.sasl_started.set(true);
    // After a v0 handshake the token comes as a bare frame, not as a request.
    conn.sasl_bare_token.set(version == 0);
    response
}

/// A token sent as a bare frame after a v0 handshake: an empty frame answers success; a failure
/// closes the connection, as Kafka does.
pub async fn bare_token(conn: &Rc<KafkaConn>, token: Bytes) -> Result<Option<Bytes>, RequestError> {
    match check(conn, &token).await {
        Ok(()) => Ok(Some(Bytes::from_static(&[0, 0, 0, 0]))),
        Err((_, message)) => Err(RequestError::Malformed {
            api: ApiKey::SaslHandshake as i16,
            version: 0,
            reason: message.into(),
        }),
    }
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
    match check(conn, &req.auth_bytes).await {
        Ok(()) => SaslAuthenticateResponse::default(),
        Err((error, message)) => refused(error, message),
    }
}

/// Checks a PLAIN token and, if it names a user with the right password, makes the connection
/// that user's.
async fn check(conn: &Rc<KafkaConn>, token: &[u8]) -> Result<(), (i16, &'static str)> {
    if !conn.sasl_started.get() || conn.user.borrow().is_some() {
        return Err((
            code::ILLEGAL_SASL_STATE,
            "SaslHandshake first, and only once",
        ));
    }
    let mut parts = token.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((code::SASL_AUTHENTICATION_FAILED, "malformed PLAIN message"));
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
            Ok(())
        }
        Err(refusal) => {
            tracing::warn!(conn = conn.id, user = ?name, ?refusal, "kafka authentication failed");
            Err((
                code::SASL_AUTHENTICATION_FAILED,
                "authentication failed: invalid user name or password",
            ))
        }
    }
}
