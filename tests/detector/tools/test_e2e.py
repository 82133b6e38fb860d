"""The end-to-end harness reads a worker's metrics rarely while much is left and often near the end: scraping
costs the worker CPU time, which the harness charges to it."""

from __future__ import annotations

from detector.tools.e2e import MAX_POLL_S, POLL_S, next_poll_s


def test_polls_are_rare_while_much_is_left_and_fine_near_the_end():
    assert next_poll_s(1_000, 100_000, 1.0) == MAX_POLL_S, "99 s left at 1,000/s"
    assert next_poll_s(9_000, 10_000, 9.0) == 0.25, "a quarter of the second left"
    assert next_poll_s(9_990, 10_000, 9.99) == POLL_S, "never finer than the floor"


def test_before_the_first_record_it_waits_a_fifth_of_the_longest_poll():
    assert next_poll_s(0, 10_000, 3.0) == MAX_POLL_S / 5


def test_a_capacity_run_scrapes_a_few_dozen_times_not_once_every_20_ms():
    rate, total, elapsed, done, scrapes = 3_500.0, 20_000, 0.0, 0.0, 0
    while done < total:
        elapsed += next_poll_s(done, total, elapsed)
        done = min(total, rate * elapsed)
        scrapes += 1
    assert scrapes < 40, scrapes
    assert elapsed - total / rate <= POLL_S + 1e-9, "it ends within one floor poll of the last record"
