"""Dead-letter messages (``schemas/dead-letter.schema.json``): the record that could not be scored, unchanged.

The value is the input message's ORIGINAL bytes (``None`` stays ``None``) and the key its original key, so
the record can be inspected or replayed as it was; why it was rejected travels in six ``flowwarden.*``
headers (UTF-8 text, numbers in decimal). Other headers of the input are not copied: the schema promises
string-valued headers, and input headers may be binary.

One exception: a value over :data:`MAX_VALUE_BYTES` (only possible when the input topic accepts larger
messages than a producer sends by default) is cut to that size and marked with a
``flowwarden.original_bytes`` header, because a dead letter that can never be produced would stop the
worker on that record forever.
"""

from __future__ import annotations

from detector.core.decode import Rejected

REASON = "flowwarden.reason"
REASON_CODE = "flowwarden.reason_code"
SOURCE_TOPIC = "flowwarden.source_topic"
SOURCE_PARTITION = "flowwarden.source_partition"
SOURCE_OFFSET = "flowwarden.source_offset"
DETECTED_AT = "flowwarden.detected_at"
ORIGINAL_BYTES = "flowwarden.original_bytes"
# Under librdkafka's default message.max.bytes (1,000,000), with room for the key and headers.
MAX_VALUE_BYTES = 900_000


def dead_letter_value(value: bytes | None) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value to produce and any extra header: the original bytes, or their first :data:`MAX_VALUE_BYTES`."""
    if value is None or len(value) <= MAX_VALUE_BYTES:
        return value, []
    return value[:MAX_VALUE_BYTES], [(ORIGINAL_BYTES, str(len(value)).encode())]


def dead_letter_headers(rejected: Rejected, source: tuple[str, int, int], detected_at: str) -> list[tuple[str, bytes]]:
    """The headers of one dead letter; ``source`` is (topic, partition, offset) of the input record."""
    topic, partition, offset = source
    return [
        (REASON, rejected.reason.encode()),
        (REASON_CODE, rejected.code.encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (DETECTED_AT, detected_at.encode()),
    ]
