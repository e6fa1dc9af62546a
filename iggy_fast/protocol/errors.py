"""Iggy's error codes as exception classes, shared by the server and the client (PROTOCOL.md §8).

One base, `IggyError`; each status the wire can carry is a subclass declared below with its
code, so the server raises errors by name (`raise StreamIdNotFound()`) and linters and IDEs
see every class. A subclass registers its code when it is defined; the client turns a status
back into its class with `IggyError.from_code()`. The snake_case `name` is what HTTP error
bodies carry. Three errors are not statuses: `ProtocolViolation`, the peer's byte stream
cannot be framed any more and the only safe answer is to close that one connection;
`LocalProtocolError`, the client's own caller misused the protocol (nothing went out); and
`Eviction`, which ends a session with an Eviction frame and a reason (§1.7).
"""

from __future__ import annotations

from typing import ClassVar


class IggyError(Exception):
    """A failure that crosses the wire as an Iggy status code."""

    code: ClassVar[int] = 1
    name: ClassVar[str] = "error"
    _by_code: ClassVar[dict[int, type["IggyError"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in IggyError._by_code:
                raise TypeError(f"error code {cls.code} declared twice")
            IggyError._by_code[cls.code] = cls

    def __init__(self, message: str | None = None):
        super().__init__(message or self.name.replace("_", " "))

    @staticmethod
    def from_code(code: int, message: str | None = None) -> "IggyError":
        """The error a status code stands for (a plain IggyError carrying an unknown code)."""
        cls = IggyError._by_code.get(code)
        if cls is not None:
            return cls(message)
        err = IggyError(message or f"iggy error {code}")
        err.code = code      # an instance attribute: the class keeps its own
        return err

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {str(self)!r})"


class ProtocolViolation(IggyError):
    """The peer broke framing so badly that the connection must close (not a wire status)."""

    name = "protocol_violation"


class Eviction(Exception):
    """A login failure, or a replicated request before login, answered by an Eviction frame
    (§1.7) instead of a reply: not a status, so not an IggyError."""

    def __init__(self, reason: int, version: int = 0, version_min: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.version = version          # the server's protocol version, for reason 14
        self.version_min = version_min


class LocalProtocolError(IggyError):
    """Our own caller asked for something the protocol cannot frame now; nothing was sent."""

    name = "local_protocol_error"


class ProducerBufferFull(IggyError):
    """A background producer's buffer stayed full (no room at once, or none within the
    timeout): nothing of that send was accepted. Raise the buffer limits, slow down, or
    check why sends are not completing (the producer's metrics and error callback say)."""

    name = "producer_buffer_full"


class ProducerClosed(IggyError):
    """A send to a producer that is closing or closed; nothing was accepted."""

    name = "producer_closed"


class GenericError(IggyError):
    code = 1
    name = "error"

class InvalidConfiguration(IggyError):
    code = 2
    name = "invalid_configuration"

class InvalidCommand(IggyError):
    code = 3
    name = "invalid_command"

class InvalidFormat(IggyError):
    code = 4
    name = "invalid_format"

class FeatureUnavailable(IggyError):
    code = 5
    name = "feature_unavailable"

class InvalidIdentifier(IggyError):
    code = 6
    name = "invalid_identifier"

class CannotCreateBaseDirectory(IggyError):
    code = 10
    name = "cannot_create_base_directory"

class CannotOpenDatabase(IggyError):
    code = 19
    name = "cannot_open_database"

class ResourceNotFound(IggyError):
    code = 20
    name = "resource_not_found"

class StaleClient(IggyError):
    code = 30
    name = "stale_client"

class Unauthenticated(IggyError):
    code = 40
    name = "unauthenticated"

class Unauthorized(IggyError):
    code = 41
    name = "unauthorized"

class InvalidCredentials(IggyError):
    code = 42
    name = "invalid_credentials"

class InvalidUsername(IggyError):
    code = 43
    name = "invalid_username"

class InvalidPassword(IggyError):
    code = 44
    name = "invalid_password"

class InvalidUserStatus(IggyError):
    code = 45
    name = "invalid_user_status"

class UserAlreadyExists(IggyError):
    code = 46
    name = "user_already_exists"

class UserInactive(IggyError):
    code = 47
    name = "user_inactive"

class CannotDeleteUser(IggyError):
    code = 48
    name = "cannot_delete_user"

class CannotChangePermissions(IggyError):
    code = 49
    name = "cannot_change_permissions"

class InvalidPersonalAccessTokenName(IggyError):
    code = 50
    name = "invalid_personal_access_token_name"

class PersonalAccessTokenAlreadyExists(IggyError):
    code = 51
    name = "personal_access_token_already_exists"

class PersonalAccessTokensLimitReached(IggyError):
    code = 52
    name = "personal_access_tokens_limit_reached"

class InvalidPersonalAccessToken(IggyError):
    code = 53
    name = "invalid_personal_access_token"

class PersonalAccessTokenExpired(IggyError):
    code = 54
    name = "personal_access_token_expired"

class UsersLimitReached(IggyError):
    code = 55
    name = "users_limit_reached"

class InvalidPersonalAccessTokenExpiry(IggyError):
    code = 56
    name = "invalid_personal_access_token_expiry"

class TransientNotCommitted(IggyError):
    code = 57
    name = "transient_not_committed"

class TransientNotAccepted(IggyError):
    code = 58
    name = "transient_not_accepted"

class InvalidJwtAlgorithm(IggyError):
    code = 73
    name = "invalid_jwt_algorithm"

class InvalidJwtSecret(IggyError):
    code = 74
    name = "invalid_jwt_secret"

class JwtMissing(IggyError):
    code = 75
    name = "jwt_missing"

class CannotGenerateJwt(IggyError):
    code = 76
    name = "cannot_generate_jwt"

class AccessTokenMissing(IggyError):
    code = 77
    name = "access_token_missing"

class InvalidAccessToken(IggyError):
    code = 78
    name = "invalid_access_token"

class CannotCreateStreamsDirectory(IggyError):
    code = 1000
    name = "cannot_create_streams_directory"

class CannotCreateStreamDirectory(IggyError):
    code = 1001
    name = "cannot_create_stream_directory"

class CannotCreateStream(IggyError):
    code = 1006
    name = "cannot_create_stream"

class CannotDeleteStream(IggyError):
    code = 1007
    name = "cannot_delete_stream"

class StreamIdNotFound(IggyError):
    code = 1009
    name = "stream_id_not_found"

class StreamNameAlreadyExists(IggyError):
    code = 1012
    name = "stream_name_already_exists"

class InvalidStreamName(IggyError):
    code = 1013
    name = "invalid_stream_name"

class InvalidTopicSize(IggyError):
    code = 1019
    name = "invalid_topic_size"

class TooManyStreams(IggyError):
    code = 1020
    name = "too_many_streams"

class CannotCreateTopicDirectory(IggyError):
    code = 2001
    name = "cannot_create_topic_directory"

class CannotCreateTopic(IggyError):
    code = 2006
    name = "cannot_create_topic"

class CannotDeleteTopic(IggyError):
    code = 2007
    name = "cannot_delete_topic"

class TopicIdNotFound(IggyError):
    code = 2010
    name = "topic_id_not_found"

class TopicNameAlreadyExists(IggyError):
    code = 2013
    name = "topic_name_already_exists"

class InvalidTopicName(IggyError):
    code = 2014
    name = "invalid_topic_name"

class TooManyPartitions(IggyError):
    code = 2015
    name = "too_many_partitions"

class InvalidReplicationFactor(IggyError):
    code = 2018
    name = "invalid_replication_factor"

class InvalidPartitionsCount(IggyError):
    code = 2019
    name = "invalid_partitions_count"

class TooManyTopics(IggyError):
    code = 2021
    name = "too_many_topics"

class CannotCreatePartition(IggyError):
    code = 3000
    name = "cannot_create_partition"

class CannotCreatePartitionDirectory(IggyError):
    code = 3002
    name = "cannot_create_partition_directory"

class PartitionNotFound(IggyError):
    code = 3007
    name = "partition_not_found"

class NoPartitions(IggyError):
    code = 3008
    name = "no_partitions"

class TopicFull(IggyError):
    code = 3009
    name = "topic_full"

class ConsumerOffsetNotFound(IggyError):
    code = 3021
    name = "consumer_offset_not_found"

class CannotOpenConsumerOffsetsFile(IggyError):
    code = 3023
    name = "cannot_open_consumer_offsets_file"

class CannotCreateSegmentLogFile(IggyError):
    code = 4003
    name = "cannot_create_segment_log_file"

class CannotCreateSegmentIndexFile(IggyError):
    code = 4004
    name = "cannot_create_segment_index_file"

class CannotSaveMessagesToSegment(IggyError):
    code = 4006
    name = "cannot_save_messages_to_segment"

class CannotSaveIndexToSegment(IggyError):
    code = 4007
    name = "cannot_save_index_to_segment"

class InvalidMessagesCount(IggyError):
    code = 4009
    name = "invalid_messages_count"

class TooBigUserHeaders(IggyError):
    code = 4017
    name = "too_big_user_headers"

class TooBigMessagePayload(IggyError):
    code = 4022
    name = "too_big_message_payload"

class InvalidMessagePayloadLength(IggyError):
    code = 4025
    name = "invalid_message_payload_length"

class InvalidMessageChecksum(IggyError):
    code = 4027
    name = "invalid_message_checksum"

class InvalidMessageTimestampDelta(IggyError):
    code = 4038
    name = "invalid_message_timestamp_delta"

class InvalidBatchChecksum(IggyError):
    code = 4039
    name = "invalid_batch_checksum"

class UnsupportedOptionKey(IggyError):
    code = 4041
    name = "unsupported_option_key"

class InvalidOptionValue(IggyError):
    code = 4042
    name = "invalid_option_value"

class OptionsBlockTooLarge(IggyError):
    code = 4043
    name = "options_block_too_large"

class InvalidOffset(IggyError):
    code = 4100
    name = "invalid_offset"

class ConsumerGroupIdNotFound(IggyError):
    code = 5000
    name = "consumer_group_id_not_found"

class ConsumerGroupNameAlreadyExists(IggyError):
    code = 5004
    name = "consumer_group_name_already_exists"

class InvalidConsumerGroupName(IggyError):
    code = 5005
    name = "invalid_consumer_group_name"

class ConsumerGroupMemberNotFound(IggyError):
    code = 5006
    name = "consumer_group_member_not_found"

class ConsumerGroupPartitionNotOwned(IggyError):
    code = 5009
    name = "consumer_group_partition_not_owned"

class InvalidSession(IggyError):
    code = 14001
    name = "invalid_session"

class IncompatibleProtocolVersion(IggyError):
    code = 14003
    name = "incompatible_protocol_version"


# -- raised by the client itself (codes as the Rust SDK numbers them) ----------------------
# Each also derives from the built-in a generic handler would catch (ConnectionError,
# TimeoutError, ValueError), and its message names what went wrong and what to check.

class Disconnected(IggyError, ConnectionError):
    """The server closed the connection (or it broke) before answering a request."""
    code = 8
    name = "disconnected"

class CannotEstablishConnection(IggyError, ConnectionError):
    """No address given to the client accepted a connection (and a login, if configured)."""
    code = 9
    name = "cannot_establish_connection"

class NotConnected(IggyError, ConnectionError):
    """A request on a client that is not connected (never connected, or closed)."""
    code = 61
    name = "not_connected"

class InvalidConnectionString(IggyError, ValueError):
    code = 8000
    name = "invalid_connection_string"

class RequestTimeout(IggyError, TimeoutError):
    """No answer within the client's request timeout (the connection is dropped: a late
    answer could no longer be matched to its request)."""
    code = 12001
    name = "request_timeout"

class RequestTooLarge(InvalidFormat):
    """A request bigger than a frame may be (64 MiB): refused before anything is sent."""
    name = "request_too_large"

class UndecodableReply(InvalidFormat):
    """A reply whose body does not parse as its command's layout (PROTOCOL.md §5)."""
    name = "undecodable_reply"


def error_name(code: int) -> str:
    """The snake_case name of a status code ("error" for one this table does not know)."""
    cls = IggyError._by_code.get(code)
    return cls.name if cls is not None else "error"
