//! The stream API port: `Api` frames from native clients. Checks what the connection's user may
//! see and change, answers `stream.list` here (every shard has every stream's configuration),
//! attaches consumers through the session, and hands every other request to shard 0.

use std::rc::Rc;

use serde::de::DeserializeOwned;
use sluice_protocol::ErrorCode;

use crate::api;
use crate::server::core::stats::add;
use crate::server::session::connection::Conn;
use crate::server::session::{self, SessionShard};
use crate::server::streams::{self, handle_api_here, reply_frame, StreamShard};

/// An API request from a connection on this shard: answered here on shard 0, else sent to shard 0.
pub fn handle_api(shard: &Rc<SessionShard>, conn: &Rc<Conn>, id: u64, verb: &str, body: &[u8]) {
    if let Err(message) = api_allowed(&shard.streams, conn, verb, body) {
        add(&shard.core.stats.permission_errors, 1);
        let code = ErrorCode::PermissionDenied.as_u16();
        conn.client
            .out
            .push(&reply_frame(&shard.streams, id, code, message.as_bytes()));
        return;
    }
    if verb == api::STREAM_LIST {
        // Every shard has every stream's configuration: answered here, showing a user only the
        // streams it may read.
        let streams = session::readable_streams(shard, conn);
        let (code, reply) = match serde_json::to_vec(&api::StreamList { streams }) {
            Ok(body) => (0, body),
            Err(e) => (ErrorCode::BadRequest.as_u16(), e.to_string().into_bytes()),
        };
        conn.client
            .out
            .push(&reply_frame(&shard.streams, id, code, &reply));
        return;
    }
    if verb == api::CONSUMER_ATTACH {
        // Attaching is about this connection: the shard that holds it does it, and answers once
        // every partition owner has the consumer durably.
        let joins = parse::<api::ConsumerConfig>(body)
            .and_then(|config| session::consumer_attach(shard, conn, config, None));
        let (shard, conn) = (shard.clone(), conn.clone());
        glommio::spawn_local(async move {
            let result = match joins {
                Ok(joins) => joins.wait(&shard.streams).await,
                Err(e) => Err(e),
            };
            let (code, reply) = match result {
                Ok(()) => (0, b"{}".to_vec()),
                Err((code, message)) => (code.as_u16(), message.into_bytes()),
            };
            conn.client
                .out
                .push(&reply_frame(&shard.streams, id, code, &reply));
        })
        .detach();
        return;
    }
    if shard.core.id.0 == 0 {
        let shard = shard.clone();
        let conn = conn.clone();
        let (verb, body) = (verb.to_string(), body.to_vec());
        glommio::spawn_local(async move {
            let (code, reply) = handle_api_here(&shard.streams, &verb, &body).await;
            conn.client
                .out
                .push(&reply_frame(&shard.streams, id, code, &reply));
        })
        .detach();
    } else {
        streams::send_api(&shard.streams, conn.client.id, id, verb, body);
    }
}

/// A user reaches a stream's messages through the API only within its permissions: reading a
/// stream (info, get, consumers) needs subscribe permission for every subject it captures; creating
/// or removing one needs publish and subscribe permission for them.
fn api_allowed(shard: &StreamShard, conn: &Conn, verb: &str, body: &[u8]) -> Result<(), String> {
    let user = conn.user.borrow();
    let Some(user) = user.as_ref() else {
        return Ok(());
    };
    if verb == api::STREAM_LIST {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = |k: &str| value[k].as_str().map(str::to_string);
    let (name, subjects) = if verb == api::STREAM_ADD || verb == api::STREAM_UPDATE {
        let subjects = value["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (text("name").unwrap_or_default(), subjects)
    } else {
        let name = if verb.starts_with("consumer.") {
            text("stream")
        } else {
            text("name").or_else(|| text("stream"))
        };
        let name = name.unwrap_or_default();
        match shard.streams.borrow().config(&name) {
            Some(config) => (name, config.subjects.clone()),
            // Unknown streams are answered by the API itself.
            None => return Ok(()),
        }
    };
    let writes = matches!(
        verb,
        api::STREAM_ADD
            | api::STREAM_UPDATE
            | api::STREAM_REMOVE
            | api::STREAM_PURGE
            | api::STREAM_DELETE_MESSAGE
            | api::CONSUMER_DELETE
    );
    let perms = &user.permissions;
    let allowed = subjects
        .iter()
        .all(|p| perms.subscribe.allows_pattern(p) && (!writes || perms.publish.allows_pattern(p)));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "permission denied: {verb} on stream {name:?} needs permission for its subjects {subjects:?}"
        ))
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, (ErrorCode, String)> {
    serde_json::from_slice(body).map_err(|e| (ErrorCode::BadRequest, format!("bad request: {e}")))
}
