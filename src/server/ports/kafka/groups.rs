//! Consumer groups (the classic protocol): not served yet; every group request is answered with
//! COORDINATOR_NOT_AVAILABLE, which clients retry.

use std::rc::Rc;

use sluice_protocol::kafka::code;
use sluice_protocol::kafka::codec::messages::*;

use super::KafkaConn;

pub fn find_coordinator(
    _conn: &Rc<KafkaConn>,
    _version: i16,
    _req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    FindCoordinatorResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn join(_c: &Rc<KafkaConn>, _v: i16, _r: JoinGroupRequest) -> JoinGroupResponse {
    JoinGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn sync(_c: &Rc<KafkaConn>, _r: SyncGroupRequest) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn heartbeat(_c: &Rc<KafkaConn>, _r: HeartbeatRequest) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn leave(_c: &Rc<KafkaConn>, _r: LeaveGroupRequest) -> LeaveGroupResponse {
    LeaveGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn offset_commit(_c: &Rc<KafkaConn>, _r: OffsetCommitRequest) -> OffsetCommitResponse {
    OffsetCommitResponse::default()
}

pub async fn offset_fetch(
    _c: &Rc<KafkaConn>,
    _v: i16,
    _r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    OffsetFetchResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
}

pub async fn describe(_c: &Rc<KafkaConn>, _r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    DescribeGroupsResponse::default()
}

pub async fn list(_c: &Rc<KafkaConn>, _r: ListGroupsRequest) -> ListGroupsResponse {
    ListGroupsResponse::default()
}
