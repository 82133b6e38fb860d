import io
import logging

import orjson

from detector.stream.logs import RepeatFilter, configure_logging, librdkafka_logger


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", level, __file__, 1, message, None, None)


def test_a_run_of_similar_messages_is_let_through_once_per_window_with_a_count():
    now = [0.0]
    repeats = RepeatFilter(window=60, clock=lambda: now[0])
    refused = "127.0.0.1:{}/bootstrap: Connect failed: Connection refused (after {}ms in state CONNECT)"
    assert repeats.filter(record(refused.format(9092, 0)))
    passed = []
    for second in range(1, 120):
        now[0] = second / 2  # 2 a second for a minute
        passed.append(repeats.filter(record(refused.format(9092, second))))
    assert not any(passed)
    now[0] = 61.0
    again = record(refused.format(9092, 3))
    assert repeats.filter(again) and again.suppressed == 119


def test_different_messages_and_levels_are_not_suppressed():
    repeats = RepeatFilter(window=60, clock=lambda: 0.0)
    assert repeats.filter(record("Connect failed"))
    assert repeats.filter(record("Broker transport failure"))
    assert repeats.filter(record("Connect failed", level=logging.WARNING))


def test_librdkafka_lines_become_json_events_with_the_suppressed_count():
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        logger = librdkafka_logger("librdkafka.test-repeats")
        for _ in range(5):
            logger.error("FAIL: Connect to ipv4#127.0.0.1:1 failed: Connection refused")
    finally:
        configure_logging()
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 1
    assert events[0]["component"] == "librdkafka.test-repeats" and events[0]["level"] == "error"
    assert "Connection refused" in events[0]["message"]


def test_debug_level_lets_every_librdkafka_debug_line_through_and_info_level_none():
    stream = io.StringIO()
    logger = librdkafka_logger("librdkafka.test-debug")
    try:
        configure_logging(stream=stream)
        logger.debug("BROKER: Added 127.0.0.1:1/bootstrap")
        configure_logging("debug", stream=stream)
        for attempt in range(3):  # alike but for numbers: a debug run wants them all
            logger.debug(f"BROKER: Added 127.0.0.1:{attempt}/bootstrap")
    finally:
        configure_logging()
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["message"] for e in events] == [f"BROKER: Added 127.0.0.1:{n}/bootstrap" for n in range(3)]
    assert {e["level"] for e in events} == {"debug"}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log_line(stream: io.StringIO, log_format: str) -> str:
    configure_logging("info", stream, log_format=log_format)
    from detector.stream.logs import get_logger

    get_logger("test").info("batch scored", records=512)
    try:
        return stream.getvalue().strip()
    finally:
        configure_logging("info", io.StringIO())


def test_json_lines_for_machines_and_console_lines_for_people():
    event = orjson.loads(_log_line(io.StringIO(), "json"))
    assert event["event"] == "batch scored" and event["records"] == 512 and event["level"] == "info"
    console = _log_line(io.StringIO(), "console")
    assert "batch scored" in console and "records=512" in console and not console.startswith("{")
    assert "\x1b[" not in console, "no colour codes where the stream is not a terminal"


def test_auto_is_console_on_a_terminal_and_json_elsewhere():
    assert orjson.loads(_log_line(io.StringIO(), "auto"))["event"] == "batch scored"
    assert not _log_line(_Terminal(), "auto").startswith("{")
