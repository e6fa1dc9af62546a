"""Iggy error codes as exceptions.

One base class, `IggyError`; each server status the wire can carry is a subclass looked up
by its numeric code from the single table below (the codes are Iggy's, PROTOCOL.md §8).
`ProtocolViolation` is different: the peer broke framing so badly that the only safe answer
is to close that one connection.
"""

from __future__ import annotations


class IggyError(Exception):
    """A failure that crosses the wire as an Iggy status code."""

    code = 1
    name = "error"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.name.replace("_", " "))

    @staticmethod
    def from_code(code: int, message: str | None = None) -> "IggyError":
        cls = _BY_CODE.get(code)
        if cls is None:
            err = IggyError(message or f"iggy error {code}")
            err.code = code
            return err
        return cls(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {str(self)!r})"


class ProtocolViolation(Exception):
    """The peer's byte stream cannot be framed any more: close that connection."""


# code, class name, snake_case name (used in HTTP error bodies).
_TABLE = [
    (1, "GenericError", "error"),
    (3, "InvalidCommand", "invalid_command"),
    (4, "InvalidFormat", "invalid_format"),
    (5, "FeatureUnavailable", "feature_unavailable"),
    (6, "InvalidIdentifier", "invalid_identifier"),
    (20, "ResourceNotFound", "resource_not_found"),
    (30, "StaleClient", "stale_client"),
    (40, "Unauthenticated", "unauthenticated"),
    (41, "Unauthorized", "unauthorized"),
    (42, "InvalidCredentials", "invalid_credentials"),
    (43, "InvalidUsername", "invalid_username"),
    (44, "InvalidPassword", "invalid_password"),
    (46, "UserAlreadyExists", "user_already_exists"),
    (47, "UserInactive", "user_inactive"),
    (48, "CannotDeleteUser", "cannot_delete_user"),
    (49, "CannotChangePermissions", "cannot_change_permissions"),
    (50, "InvalidPersonalAccessTokenName", "invalid_personal_access_token_name"),
    (51, "PersonalAccessTokenAlreadyExists", "personal_access_token_already_exists"),
    (52, "PersonalAccessTokensLimitReached", "personal_access_tokens_limit_reached"),
    (53, "InvalidPersonalAccessToken", "invalid_personal_access_token"),
    (56, "InvalidPersonalAccessTokenExpiry", "invalid_personal_access_token_expiry"),
    (57, "TransientNotCommitted", "transient_not_committed"),
    (1009, "StreamIdNotFound", "stream_id_not_found"),
    (1012, "StreamNameAlreadyExists", "stream_name_already_exists"),
    (1013, "InvalidStreamName", "invalid_stream_name"),
    (1019, "InvalidTopicSize", "invalid_topic_size"),
    (1020, "TooManyStreams", "too_many_streams"),
    (2010, "TopicIdNotFound", "topic_id_not_found"),
    (2013, "TopicNameAlreadyExists", "topic_name_already_exists"),
    (2014, "InvalidTopicName", "invalid_topic_name"),
    (2015, "TooManyPartitions", "too_many_partitions"),
    (2019, "InvalidPartitionsCount", "invalid_partitions_count"),
    (2021, "TooManyTopics", "too_many_topics"),
    (3007, "PartitionNotFound", "partition_not_found"),
    (3021, "ConsumerOffsetNotFound", "consumer_offset_not_found"),
    (4006, "CannotSaveMessagesToSegment", "cannot_save_messages_to_segment"),
    (4009, "InvalidMessagesCount", "invalid_messages_count"),
    (4025, "InvalidMessagePayloadLength", "invalid_message_payload_length"),
    (4027, "InvalidMessageChecksum", "invalid_message_checksum"),
    (4038, "InvalidMessageTimestampDelta", "invalid_message_timestamp_delta"),
    (4039, "InvalidBatchChecksum", "invalid_batch_checksum"),
    (4041, "UnsupportedOptionKey", "unsupported_option_key"),
    (4042, "InvalidOptionValue", "invalid_option_value"),
    (4043, "OptionsBlockTooLarge", "options_block_too_large"),
    (4100, "InvalidOffset", "invalid_offset"),
    (5000, "ConsumerGroupIdNotFound", "consumer_group_id_not_found"),
    (5004, "ConsumerGroupNameAlreadyExists", "consumer_group_name_already_exists"),
    (5005, "InvalidConsumerGroupName", "invalid_consumer_group_name"),
    (5006, "ConsumerGroupMemberNotFound", "consumer_group_member_not_found"),
    (5009, "ConsumerGroupPartitionNotOwned", "consumer_group_partition_not_owned"),
    (14001, "InvalidSession", "invalid_session"),
    (14003, "IncompatibleProtocolVersion", "incompatible_protocol_version"),
]

_BY_CODE: dict[int, type[IggyError]] = {}
for _code, _cls_name, _snake in _TABLE:
    _cls = type(_cls_name, (IggyError,), {"code": _code, "name": _snake, "__module__": __name__})
    globals()[_cls_name] = _cls
    _BY_CODE[_code] = _cls
del _code, _cls_name, _snake, _cls


def error_name(code: int) -> str:
    cls = _BY_CODE.get(code)
    return cls.name if cls else "error"
