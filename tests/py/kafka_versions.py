"""Sends every version of every API the broker advertises, each request encoded and each answer
decoded by kafka-python's own codec (generated from Kafka's message schemas), and checks what each
answer says. Produce versions below 3 are advertised but refused, as Kafka 4 does: the connection
is closed. With a user and password, every connection first authenticates with SASL/PLAIN, which
exercises the SASL versions too. Prints "ok" when every check holds."""

import socket
import struct
import sys
import threading
import time
import uuid

from kafka.protocol.admin import (CreateTopicsRequest, CreateTopicsResponse,
                                  DeleteTopicsRequest, DeleteTopicsResponse,
                                  DescribeClusterRequest, DescribeClusterResponse,
                                  DescribeConfigsRequest, DescribeConfigsResponse,
                                  DescribeGroupsRequest, DescribeGroupsResponse,
                                  ListGroupsRequest, ListGroupsResponse)
from kafka.protocol.consumer import (FetchRequest, FetchResponse, HeartbeatRequest,
                                     HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
                                     LeaveGroupRequest, LeaveGroupResponse, ListOffsetsRequest,
                                     ListOffsetsResponse, OffsetCommitRequest,
                                     OffsetCommitResponse, OffsetFetchRequest,
                                     OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse)
from kafka.protocol.metadata import (ApiVersionsRequest, ApiVersionsResponse,
                                     FindCoordinatorRequest, FindCoordinatorResponse,
                                     MetadataRequest, MetadataResponse)
from kafka.protocol.producer import (InitProducerIdRequest, InitProducerIdResponse,
                                     ProduceRequest, ProduceResponse)
from kafka.protocol.sasl import (SaslAuthenticateRequest, SaslAuthenticateResponse,
                                 SaslHandshakeRequest, SaslHandshakeResponse)
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

UNKNOWN_MEMBER_ID = 25
MEMBER_ID_REQUIRED = 79
COVERED = set()


class Closed(Exception):
    pass


class Conn:
    """One connection; `call` sends a request at a version and decodes the answer."""

    def __init__(self, addr, credentials, sasl_round=0):
        self.sock = socket.create_connection(addr, timeout=20)
        self.correlation = 0
        if credentials:
            # Handshake v0 is followed by the token in a bare frame, v1 by SaslAuthenticate.
            handshake = sasl_round % 2
            authenticate = sasl_round % 3
            user, password = credentials
            answer = self.call(SaslHandshakeRequest, SaslHandshakeResponse, handshake,
                               mechanism="PLAIN")
            assert answer.error_code == 0 and "PLAIN" in answer.mechanisms, answer
            token = b"\0" + user.encode() + b"\0" + password.encode()
            if handshake == 0:
                self.sock.sendall(struct.pack(">i", len(token)) + token)
                assert self.read(4) == b"\0\0\0\0", "the bare token was not accepted"
            else:
                answer = self.call(SaslAuthenticateRequest, SaslAuthenticateResponse,
                                   authenticate, auth_bytes=token)
                assert answer.error_code == 0, answer

    def call(self, request_cls, response_cls, version, **fields):
        request = request_cls[version](**fields)
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="versions")
        self.sock.sendall(request.encode(header=True, framed=True))
        COVERED.add((request_cls.API_KEY, version))
        if not request.expect_response():
            return None
        size = struct.unpack(">i", self.read(4))[0]
        answer = response_cls.decode(self.read(size), version=version, header=True)
        assert answer.header.correlation_id == self.correlation, answer.header
        return answer

    def read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise Closed()
            out += chunk
        return out

    def close(self):
        self.sock.close()


def batch(values):
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for value in values:
        builder.append(int(time.time() * 1000), b"k", value, headers=[("h", b"x")])
    builder.close()
    return builder.buffer()


def values_of(records):
    out = []
    found = MemoryRecords(records)
    while found.has_next():
        out.extend(record.value for record in found.next_batch())
    return out


def topics_and_data(conn, topic, ranges):
    # Metadata, each version; asks for auto-creation where the version can.
    low, high = ranges[3]
    for v in range(low, high + 1):
        fields = {"topics": [MetadataRequest.MetadataRequestTopic(name=topic)]}
        if v >= 4:
            fields["allow_auto_topic_creation"] = True
        answer = conn.call(MetadataRequest, MetadataResponse, v, **fields)
        assert len(answer.brokers) == 1, (v, answer)
        [found] = answer.topics
        assert found.error_code == 0 and found.name == topic, (v, found)
        assert [p.partition_index for p in found.partitions] == [0], (v, found)

    # CreateTopics and DeleteTopics, each version, on topics of their own.
    low, high = ranges[19]
    for v in range(low, high + 1):
        name = f"{topic}-made-{v}"
        creatable = CreateTopicsRequest.CreatableTopic(name=name, num_partitions=2,
                                                       replication_factor=1)
        answer = conn.call(CreateTopicsRequest, CreateTopicsResponse, v, topics=[creatable],
                           timeout_ms=5000)
        [made] = answer.topics
        assert made.name == name and made.error_code == 0, (v, made)
        again = conn.call(CreateTopicsRequest, CreateTopicsResponse, v, topics=[creatable],
                          timeout_ms=5000)
        assert again.topics[0].error_code == 36, (v, again)  # TOPIC_ALREADY_EXISTS
    low, high = ranges[20]
    for v in range(low, high + 1):
        name = f"{topic}-made-{min(v + 1, ranges[19][1])}"
        if v >= 6:
            fields = {"topics": [DeleteTopicsRequest.DeleteTopicState(name=name)]}
        else:
            fields = {"topic_names": [name]}
        answer = conn.call(DeleteTopicsRequest, DeleteTopicsResponse, v, timeout_ms=5000,
                           **fields)
        [gone] = answer.responses
        assert gone.name == name and gone.error_code == 0, (v, gone)

    # Produce, each served version, acks=all; then acks=0 once, which has no answer.
    low, high = ranges[0]
    assert low == 0, ranges[0]
    sent = []
    for v in range(3, high + 1):
        value = f"produce v{v}".encode()
        part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0,
                                                                    records=batch([value]))
        data = ProduceRequest.TopicProduceData(name=topic, partition_data=[part])
        answer = conn.call(ProduceRequest, ProduceResponse, v, acks=-1, timeout_ms=5000,
                           topic_data=[data])
        [[done]] = [r.partition_responses for r in answer.responses]
        assert done.error_code == 0 and done.base_offset == len(sent), (v, done)
        sent.append(value)
    part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0,
                                                                records=batch([b"acks 0"]))
    conn.call(ProduceRequest, ProduceResponse, high, acks=0, timeout_ms=5000,
              topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])])
    sent.append(b"acks 0")

    # Fetch, each version, from the start: every value comes back, the acks=0 one included.
    low, high = ranges[1]
    for v in range(low, high + 1):
        partition = FetchRequest.FetchTopic.FetchPartition(partition=0, fetch_offset=0,
                                                          partition_max_bytes=1 << 20)
        answer = conn.call(FetchRequest, FetchResponse, v, replica_id=-1, max_wait_ms=2000,
                           min_bytes=1, max_bytes=1 << 20, isolation_level=1,
                           topics=[FetchRequest.FetchTopic(topic=topic,
                                                          partitions=[partition])])
        assert answer.error_code == 0, (v, answer)
        [[got]] = [r.partitions for r in answer.responses]
        assert got.error_code == 0 and got.high_watermark == len(sent), (v, got)
        assert got.last_stable_offset == len(sent), (v, got)
        assert values_of(got.records) == sent, (v, values_of(got.records), sent)

    # ListOffsets, each version: earliest, latest, and a time after every record.
    low, high = ranges[2]
    for v in range(low, high + 1):
        for timestamp, want in ((-2, 0), (-1, len(sent)), (int(time.time() * 1000) + 60000, -1)):
            partition = ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                partition_index=0, timestamp=timestamp)
            answer = conn.call(ListOffsetsRequest, ListOffsetsResponse, v, replica_id=-1,
                               topics=[ListOffsetsRequest.ListOffsetsTopic(
                                   name=topic, partitions=[partition])])
            [[found]] = [t.partitions for t in answer.topics]
            assert found.error_code == 0 and found.offset == want, (v, timestamp, found)

    # InitProducerId, each version.
    low, high = ranges[22]
    for v in range(low, high + 1):
        answer = conn.call(InitProducerIdRequest, InitProducerIdResponse, v,
                           transactional_id=None, transaction_timeout_ms=60000,
                           producer_id=-1, producer_epoch=-1)
        assert answer.error_code == 0 and answer.producer_id >= 0, (v, answer)

    # DescribeConfigs (a topic and the broker) and DescribeCluster, each version.
    low, high = ranges[32]
    for v in range(low, high + 1):
        resources = [DescribeConfigsRequest.DescribeConfigsResource(
                         resource_type=2, resource_name=topic, configuration_keys=None),
                     DescribeConfigsRequest.DescribeConfigsResource(
                         resource_type=4, resource_name="0", configuration_keys=None)]
        answer = conn.call(DescribeConfigsRequest, DescribeConfigsResponse, v,
                           resources=resources)
        names = [{c.name for c in r.configs} for r in answer.results]
        assert all(r.error_code == 0 for r in answer.results), (v, answer)
        assert "retention.ms" in names[0] and "cleanup.policy" in names[0], (v, names)
    low, high = ranges[60]
    for v in range(low, high + 1):
        fields = {"endpoint_type": 1} if v >= 1 else {}
        answer = conn.call(DescribeClusterRequest, DescribeClusterResponse, v, **fields)
        assert answer.error_code == 0 and len(answer.brokers) == 1, (v, answer)
    return len(sent)


def newer_versions(addr, credentials, ranges, topic):
    """Versions above those advertised, up to the newest kafka-python encodes: answered with
    UNSUPPORTED_VERSION wherever the answer carries an error, the connection kept. A version the
    broker cannot read at all closes the connection."""
    tp = ProduceRequest.TopicProduceData
    lt = ListOffsetsRequest.ListOffsetsTopic
    ct = OffsetCommitRequest.OffsetCommitRequestTopic
    checks = {
        0: (ProduceRequest, ProduceResponse,
            dict(acks=-1, timeout_ms=1000, topic_data=[tp(
                name=topic, topic_id=uuid.uuid4(), partition_data=[tp.PartitionProduceData(
                    index=0, records=batch([b"newer"]))])]),
            lambda a: [p.error_code for t in a.responses for p in t.partition_responses]),
        1: (FetchRequest, FetchResponse,
            dict(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1000, topics=[]),
            lambda a: [a.error_code]),
        2: (ListOffsetsRequest, ListOffsetsResponse,
            dict(replica_id=-1, topics=[lt(name=topic, partitions=[
                lt.ListOffsetsPartition(partition_index=0, timestamp=-1)])]),
            lambda a: [p.error_code for t in a.topics for p in t.partitions]),
        3: (MetadataRequest, MetadataResponse,
            dict(topics=[MetadataRequest.MetadataRequestTopic(name=topic)]),
            lambda a: [a.error_code] + [t.error_code for t in a.topics]),
        8: (OffsetCommitRequest, OffsetCommitResponse,
            dict(group_id="newer", generation_id_or_member_epoch=-1, member_id="",
                 group_instance_id=None, topics=[ct(topic_id=uuid.uuid4(), partitions=[
                     ct.OffsetCommitRequestPartition(partition_index=0, committed_offset=1)])]),
            lambda a: [p.error_code for t in a.topics for p in t.partitions]),
        9: (OffsetFetchRequest, OffsetFetchResponse,
            dict(groups=[OffsetFetchRequest.OffsetFetchRequestGroup(
                group_id="newer", member_id=None, member_epoch=-1, topics=None)]),
            lambda a: [g.error_code for g in a.groups]),
        15: (DescribeGroupsRequest, DescribeGroupsResponse, dict(groups=["newer"]),
             lambda a: [g.error_code for g in a.groups]),
        60: (DescribeClusterRequest, DescribeClusterResponse, dict(endpoint_type=1),
             lambda a: [a.error_code]),
    }
    conn = Conn(addr, credentials)
    answered = []
    for key, (request_cls, response_cls, fields, errors) in checks.items():
        for v in range(ranges[key][1] + 1, request_cls.max_version + 1):
            try:
                answer = conn.call(request_cls, response_cls, v, **fields)
            except Closed:
                # Past what the broker can read: only a new connection goes on.
                conn = Conn(addr, credentials)
                continue
            found = errors(answer)
            assert found and all(e == 35 for e in found), (key, v, answer)
            answered.append((key, v))
    # The connection that got those answers still works.
    answer = conn.call(MetadataRequest, MetadataResponse, ranges[3][1],
                       topics=[MetadataRequest.MetadataRequestTopic(name=topic)])
    assert answer.topics[0].error_code == 0, answer
    conn.close()
    # (The codec reads OffsetCommit and OffsetFetch only up to v9, though it lists v10.)
    for key in (0, 1, 2, 3, 15, 60):
        assert any(k == key for k, _ in answered), (key, answered)


def group_round(addr, credentials, ranges, topic, i, stored, failures):
    """One member's whole life in a group of its own, each API at version i or the nearest one
    served: find the coordinator, join (with the member-id round trip from v4), sync, heartbeat,
    commit, fetch the commit, describe and list the group, leave."""
    def at(key):
        low, high = ranges[key]
        return max(low, min(i, high))

    group = f"{topic}-group-{i}"
    try:
        conn = Conn(addr, credentials, sasl_round=i)
        v = at(10)
        fields = {"coordinator_keys": [group]} if v >= 4 else {"key": group}
        answer = conn.call(FindCoordinatorRequest, FindCoordinatorResponse, v, key_type=0,
                           **fields)
        error = answer.coordinators[0].error_code if v >= 4 else answer.error_code
        assert error == 0, (v, answer)

        v = at(11)
        protocol = JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\0\0")
        join = dict(group_id=group, session_timeout_ms=30000, rebalance_timeout_ms=30000,
                    protocol_type="consumer", protocols=[protocol], group_instance_id=None)
        joined = conn.call(JoinGroupRequest, JoinGroupResponse, v, member_id="", **join)
        if v >= 4:
            assert joined.error_code == MEMBER_ID_REQUIRED and joined.member_id, (v, joined)
            joined = conn.call(JoinGroupRequest, JoinGroupResponse, v,
                               member_id=joined.member_id, **join)
        assert joined.error_code == 0 and joined.leader == joined.member_id, (v, joined)
        assert [m.member_id for m in joined.members] == [joined.member_id], (v, joined)
        member, generation = joined.member_id, joined.generation_id

        v = at(14)
        assignment = SyncGroupRequest.SyncGroupRequestAssignment(member_id=member,
                                                                 assignment=b"assigned")
        synced = conn.call(SyncGroupRequest, SyncGroupResponse, v, group_id=group,
                           generation_id=generation, member_id=member, group_instance_id=None,
                           protocol_type="consumer", protocol_name="range",
                           assignments=[assignment])
        assert synced.error_code == 0 and synced.assignment == b"assigned", (v, synced)

        v = at(12)
        beat = conn.call(HeartbeatRequest, HeartbeatResponse, v, group_id=group,
                         generation_id=generation, member_id=member, group_instance_id=None)
        assert beat.error_code == 0, (v, beat)
        beat = conn.call(HeartbeatRequest, HeartbeatResponse, v, group_id=group,
                         generation_id=generation, member_id="stranger", group_instance_id=None)
        assert beat.error_code == UNKNOWN_MEMBER_ID, (v, beat)

        v = at(8)
        committed = min(i + 1, stored)
        partition = OffsetCommitRequest.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
            partition_index=0, committed_offset=committed, committed_metadata="m")
        answer = conn.call(OffsetCommitRequest, OffsetCommitResponse, v, group_id=group,
                           generation_id_or_member_epoch=generation, member_id=member,
                           group_instance_id=None, retention_time_ms=-1,
                           topics=[OffsetCommitRequest.OffsetCommitRequestTopic(
                               name=topic, partitions=[partition])])
        [[result]] = [t.partitions for t in answer.topics]
        assert result.error_code == 0, (v, answer)

        v = at(9)
        if v >= 8:
            wanted = OffsetFetchRequest.OffsetFetchRequestGroup(
                group_id=group, member_id=None, member_epoch=-1,
                topics=[OffsetFetchRequest.OffsetFetchRequestGroup.OffsetFetchRequestTopics(
                    name=topic, partition_indexes=[0])])
            answer = conn.call(OffsetFetchRequest, OffsetFetchResponse, v, groups=[wanted])
            [found] = answer.groups
            assert found.error_code == 0, (v, answer)
            [[offset]] = [t.partitions for t in found.topics]
        else:
            answer = conn.call(OffsetFetchRequest, OffsetFetchResponse, v, group_id=group,
                               topics=[OffsetFetchRequest.OffsetFetchRequestTopic(
                                   name=topic, partition_indexes=[0])])
            [[offset]] = [t.partitions for t in answer.topics]
        assert offset.error_code == 0 and offset.committed_offset == committed, (v, answer)
        assert offset.metadata == "m", (v, answer)

        v = at(15)
        answer = conn.call(DescribeGroupsRequest, DescribeGroupsResponse, v, groups=[group])
        [described] = answer.groups
        assert described.error_code == 0 and described.group_state == "Stable", (v, answer)
        assert [m.member_id for m in described.members] == [member], (v, answer)

        v = at(16)
        answer = conn.call(ListGroupsRequest, ListGroupsResponse, v, states_filter=[],
                           types_filter=[])
        assert answer.error_code == 0, (v, answer)
        assert group in [g.group_id for g in answer.groups], (v, answer)

        v = at(13)
        if v >= 3:
            fields = {"members": [LeaveGroupRequest.MemberIdentity(member_id=member,
                                                                  group_instance_id=None)]}
        else:
            fields = {"member_id": member}
        answer = conn.call(LeaveGroupRequest, LeaveGroupResponse, v, group_id=group, **fields)
        assert answer.error_code == 0, (v, answer)
        if v >= 3:
            assert [m.error_code for m in answer.members] == [0], (v, answer)
        conn.close()
    except Exception as error:  # reported by the main thread
        failures.append((i, repr(error)))


def main(addr, credentials):
    conn = Conn(addr, credentials)
    # ApiVersions, each version the broker advertises; the v3+ answers list the ranges.
    first = conn.call(ApiVersionsRequest, ApiVersionsResponse, 0)
    assert first.error_code == 0, first
    ranges = {k.api_key: (k.min_version, k.max_version) for k in first.api_keys}
    for v in range(0, ranges[18][1] + 1):
        fields = {"client_software_name": "versions", "client_software_version": "1"}
        answer = conn.call(ApiVersionsRequest, ApiVersionsResponse, v, **fields)
        assert answer.error_code == 0, (v, answer)
        assert {k.api_key: (k.min_version, k.max_version) for k in answer.api_keys} == ranges

    topic = "versions-" + ("sasl" if credentials else "plain")
    stored = topics_and_data(conn, topic, ranges)

    rounds = max(high for key, (_, high) in ranges.items()
                 if key in (8, 9, 10, 11, 12, 13, 14, 15, 16))
    failures = []
    threads = [threading.Thread(target=group_round,
                                args=(addr, credentials, ranges, topic, i, stored, failures))
               for i in range(rounds + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures

    newer_versions(addr, credentials, ranges, topic)

    # Produce 0-2 are advertised for old librdkafka's feature checks, and refused as Kafka 4
    # refuses them: the connection is closed.
    for v in range(0, 3):
        old = Conn(addr, credentials)
        part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0,
                                                                    records=batch([b"old"]))
        try:
            old.call(ProduceRequest, ProduceResponse, v, acks=-1, timeout_ms=5000,
                     topic_data=[ProduceRequest.TopicProduceData(name=topic,
                                                                 partition_data=[part])])
            raise AssertionError(f"produce v{v} was answered")
        except (Closed, ConnectionResetError):
            pass
        old.close()

    # A wrong password: refused in SaslAuthenticate's answer, or, after a v0 handshake, by
    # closing the connection.
    if credentials:
        for sasl_round in (0, 1):
            try:
                Conn(addr, (credentials[0], "wrong"), sasl_round=sasl_round)
                raise AssertionError(f"a wrong password passed (round {sasl_round})")
            except Closed:
                assert sasl_round == 0, "a refused SaslAuthenticate closed the connection"
            except AssertionError as refused:
                assert sasl_round == 1 and "error_code=58" in str(refused), refused

    # Every advertised version was sent; SASL only when the broker asks for it.
    missing = [(key, v) for key, (low, high) in ranges.items() for v in range(low, high + 1)
               if (key, v) not in COVERED and (credentials or key not in (17, 36))]
    assert not missing, missing
    conn.close()
    print("ok")


if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    credentials = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else None
    main((host, int(port)), credentials)
