//! Consumer groups (the classic protocol) and committed offsets: each request is translated for
//! the group's coordinator in the streams (see `streams::groups`), and its answer back into the
//! version of the response the client asked for. A single node coordinates every group; in a
//! cluster, each group has one coordinating node, and the others answer NOT_COORDINATOR.

use std::rc::Rc;

use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::*;
use sluice_protocol::kafka::codec::protocol::StrBytes;

use super::topics::{advertised, broker_of, own_broker_id};
use super::KafkaConn;
use crate::server::streams::groups::{
    self, Commit, Committed, GroupAnswer, GroupCall, GroupView, Join, Sync,
};

/// FindCoordinator's key type for transactions, which are not served.
const KEY_TYPE_TRANSACTION: i8 = 1;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn string(s: &StrBytes) -> String {
    s.as_str().to_string()
}

fn coordinator(
    conn: &KafkaConn,
    key: &StrBytes,
    key_type: i8,
) -> find_coordinator_response::Coordinator {
    let found = find_coordinator_response::Coordinator::default().with_key(key.clone());
    if key_type == KEY_TYPE_TRANSACTION {
        return found
            .with_node_id(BrokerId(-1))
            .with_host(text(""))
            .with_port(-1)
            .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            .with_error_message(Some(text("transactions are not served")));
    }
    // In a cluster, one node coordinates each group, whichever node is asked.
    let found_node = groups::coordinator_node(&conn.shard.streams, key.as_str())
        .and_then(|(node, addr)| broker_of(conn, &node, &addr));
    let (id, host, port) = found_node.unwrap_or_else(|| {
        let (host, port) = advertised(conn);
        (own_broker_id(conn), host, port)
    });
    found
        .with_node_id(BrokerId(id))
        .with_host(text(&host))
        .with_port(port)
}

pub fn find_coordinator(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| coordinator(conn, key, req.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let one = coordinator(conn, &req.key, req.key_type);
    let response = FindCoordinatorResponse::default()
        .with_error_code(one.error_code)
        .with_node_id(one.node_id)
        .with_host(one.host)
        .with_port(one.port);
    if version >= 1 {
        response.with_error_message(one.error_message)
    } else {
        response
    }
}

/// Asks the coordinator; the error code of a coordinator that did not answer.
async fn ask(conn: &KafkaConn, call: GroupCall) -> Result<GroupAnswer, i16> {
    groups::call(&conn.shard.streams, call).await
}

pub async fn join(
    conn: &Rc<KafkaConn>,
    version: i16,
    client_id: Option<StrBytes>,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let member_id = req.member_id.clone();
    let call = GroupCall::Join(Join {
        group: string(&req.group_id),
        member_id: string(&req.member_id),
        instance_id: req.group_instance_id.as_ref().map(string),
        client_id: client_id.as_ref().map(string).unwrap_or_default(),
        client_host: conn.peer.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: string(&req.protocol_type),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (string(&p.name), p.metadata))
            .collect(),
        id_round_trip: version >= 4,
    });
    let joined = match ask(conn, call).await {
        Ok(GroupAnswer::Joined(joined)) => joined,
        Ok(_) => return JoinGroupResponse::default().with_error_code(code::UNKNOWN_SERVER_ERROR),
        Err(error) => {
            return JoinGroupResponse::default()
                .with_error_code(error)
                .with_generation_id(-1)
                .with_member_id(member_id)
        }
    };
    let members = joined
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let member = join_group_response::JoinGroupResponseMember::default()
                .with_member_id(text(&id))
                .with_metadata(metadata);
            if version >= 5 {
                member.with_group_instance_id(instance.as_deref().map(text))
            } else {
                member
            }
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(joined.error)
        .with_generation_id(joined.generation)
        .with_protocol_name(Some(text(
            joined.protocol_name.as_deref().unwrap_or_default(),
        )))
        .with_leader(text(&joined.leader))
        .with_member_id(text(&joined.member_id))
        .with_members(members);
    if version >= 7 {
        response
            .with_protocol_type(joined.protocol_type.as_deref().map(text))
            .with_protocol_name(joined.protocol_name.as_deref().map(text))
    } else {
        response
    }
}

pub async fn sync(conn: &Rc<KafkaConn>, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let call = GroupCall::Sync(Sync {
        group: string(&req.group_id),
        generation: req.generation_id,
        member_id: string(&req.member_id),
        protocol_type: req.protocol_type.as_ref().map(string),
        protocol_name: req.protocol_name.as_ref().map(string),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (string(&a.member_id), a.assignment))
            .collect(),
    });
    let synced = match ask(conn, call).await {
        Ok(GroupAnswer::Synced(synced)) => synced,
        Ok(_) => return SyncGroupResponse::default().with_error_code(code::UNKNOWN_SERVER_ERROR),
        Err(error) => return SyncGroupResponse::default().with_error_code(error),
    };
    let response = SyncGroupResponse::default()
        .with_error_code(synced.error)
        .with_assignment(synced.assignment);
    if version >= 5 {
        response
            .with_protocol_type(synced.protocol_type.as_deref().map(text))
            .with_protocol_name(synced.protocol_name.as_deref().map(text))
    } else {
        response
    }
}

pub async fn heartbeat(conn: &Rc<KafkaConn>, req: HeartbeatRequest) -> HeartbeatResponse {
    let call = GroupCall::Heartbeat {
        group: string(&req.group_id),
        generation: req.generation_id,
        member_id: string(&req.member_id),
    };
    let error = match ask(conn, call).await {
        Ok(GroupAnswer::Code(error)) => error,
        Ok(_) => code::UNKNOWN_SERVER_ERROR,
        Err(error) => error,
    };
    HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(req.member_id.clone(), None)]
    };
    let call = GroupCall::Leave {
        group: string(&req.group_id),
        members: leaving.iter().map(|(id, _)| string(id)).collect(),
    };
    let codes = match ask(conn, call).await {
        Ok(GroupAnswer::Left(codes)) => codes,
        Ok(_) => vec![code::UNKNOWN_SERVER_ERROR; leaving.len()],
        Err(error) => return LeaveGroupResponse::default().with_error_code(error),
    };
    if version < 3 {
        return LeaveGroupResponse::default()
            .with_error_code(codes.first().copied().unwrap_or(code::NONE));
    }
    let members = leaving
        .into_iter()
        .zip(codes)
        .map(|((id, instance), error)| {
            leave_group_response::MemberResponse::default()
                .with_member_id(id)
                .with_group_instance_id(instance)
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub async fn offset_commit(conn: &Rc<KafkaConn>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let offsets = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    string(&t.name),
                    p.partition_index,
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(string)
                            .unwrap_or_default(),
                    },
                )
            })
        })
        .collect();
    let call = GroupCall::Commit(Commit {
        group: string(&req.group_id),
        generation: req.generation_id_or_member_epoch,
        member_id: string(&req.member_id),
        offsets,
    });
    let error = match ask(conn, call).await {
        Ok(GroupAnswer::Code(error)) => error,
        Ok(_) => code::UNKNOWN_SERVER_ERROR,
        Err(error) => error,
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of one group, as (topic, partition, offset) answers.
async fn fetch_group(
    conn: &KafkaConn,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, i32, Option<Committed>)>, i16> {
    match ask(conn, GroupCall::Fetch { group, topics }).await? {
        GroupAnswer::Fetched(found) => Ok(found),
        _ => Err(code::UNKNOWN_SERVER_ERROR),
    }
}

/// Groups (topic, partition, offset) answers by topic, keeping the order they came in.
fn by_topic(found: Vec<(String, i32, Option<Committed>)>) -> Vec<(String, Vec<(i32, Committed)>)> {
    let mut topics: Vec<(String, Vec<(i32, Committed)>)> = Vec::new();
    for (topic, partition, committed) in found {
        let committed = committed.unwrap_or(Committed {
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        });
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, partitions)) => partitions.push((partition, committed)),
            None => topics.push((topic, vec![(partition, committed)])),
        }
    }
    topics
}

pub async fn offset_fetch(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for asked in req.groups {
            let topics = asked.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (string(&t.name), t.partition_indexes))
                    .collect()
            });
            let answer = offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(asked.group_id.clone());
            groups.push(match fetch_group(conn, string(&asked.group_id), topics).await {
                Ok(found) => answer.with_topics(
                    by_topic(found)
                        .into_iter()
                        .map(|(topic, partitions)| {
                            offset_fetch_response::OffsetFetchResponseTopics::default()
                                .with_name(TopicName(text(&topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(partition, c)| {
                                            offset_fetch_response::OffsetFetchResponsePartitions::default()
                                                .with_partition_index(partition)
                                                .with_committed_offset(c.offset)
                                                .with_committed_leader_epoch(c.leader_epoch)
                                                .with_metadata(Some(text(&c.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(error) => answer.with_error_code(error),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (string(&t.name), t.partition_indexes))
            .collect()
    });
    let asked = topics.clone();
    match fetch_group(conn, string(&req.group_id), topics).await {
        Ok(found) => {
            let topics = by_topic(found)
                .into_iter()
                .map(|(topic, partitions)| {
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(TopicName(text(&topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(partition, c)| {
                                    let p = offset_fetch_response::OffsetFetchResponsePartition::default()
                                        .with_partition_index(partition)
                                        .with_committed_offset(c.offset)
                                        .with_metadata(Some(text(&c.metadata)));
                                    if version >= 5 {
                                        p.with_committed_leader_epoch(c.leader_epoch)
                                    } else {
                                        p
                                    }
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
        Err(error) if version >= 2 => OffsetFetchResponse::default().with_error_code(error),
        // Before version 2 errors are only per partition: each partition asked carries it (an
        // empty answer would read as nothing committed).
        Err(error) => OffsetFetchResponse::default().with_topics(
            asked
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(TopicName(text(&topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|partition| {
                                    offset_fetch_response::OffsetFetchResponsePartition::default()
                                        .with_partition_index(partition)
                                        .with_committed_offset(-1)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

fn described(view: GroupView, version: i16) -> describe_groups_response::DescribedGroup {
    let members = view
        .members
        .into_iter()
        .map(|m| {
            describe_groups_response::DescribedGroupMember::default()
                .with_member_id(text(&m.member_id))
                .with_group_instance_id(if version >= 4 {
                    m.instance_id.as_deref().map(text)
                } else {
                    None
                })
                .with_client_id(text(&m.client_id))
                .with_client_host(text(&m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    describe_groups_response::DescribedGroup::default()
        .with_group_id(GroupId(text(&view.group)))
        .with_group_state(text(view.state))
        .with_protocol_type(text(&view.protocol_type))
        .with_protocol_data(text(&view.protocol_name))
        .with_members(members)
}

pub async fn describe(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for group in req.groups {
        let name = string(&group);
        groups.push(match ask(conn, GroupCall::Describe { group: name }).await {
            Ok(GroupAnswer::Described(view)) => described(view, version),
            Ok(_) => describe_groups_response::DescribedGroup::default()
                .with_group_id(group)
                .with_error_code(code::UNKNOWN_SERVER_ERROR),
            Err(error) => describe_groups_response::DescribedGroup::default()
                .with_group_id(group)
                .with_error_code(error),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list(
    conn: &Rc<KafkaConn>,
    version: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let all = match groups::list_all(&conn.shard.streams).await {
        Ok(all) => all,
        Err(error) => return ListGroupsResponse::default().with_error_code(error),
    };
    let states: Vec<&str> = req.states_filter.iter().map(|s| s.as_str()).collect();
    let listed = all
        .into_iter()
        .filter(|g| {
            version < 4
                || states.is_empty()
                || states.iter().any(|s| s.eq_ignore_ascii_case(g.state))
        })
        .filter(|_| {
            version < 5
                || req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .map(|g| {
            let listed = list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(text(&g.group)))
                .with_protocol_type(text(&g.protocol_type));
            let listed = if version >= 4 {
                listed.with_group_state(text(g.state))
            } else {
                listed
            };
            if version >= 5 {
                listed.with_group_type(text("classic"))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}
