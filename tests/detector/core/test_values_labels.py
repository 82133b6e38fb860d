import math

import pytest

from detector.core.labels import BENIGN, normalize_label, resolve_label
from detector.core.values import parse_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        ("7", 7.0),
        (" 1e3 ", 1000.0),
        ("Infinity", math.inf),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        ("0x000b", 11.0),
    ],
)
def test_numbers_and_meter_tokens_parse(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0x" + "f" * 300, math.inf), ("-0x" + "f" * 300, -math.inf), (10**400, math.inf), (-(10**400), -math.inf)],
)
def test_integers_beyond_the_float_range_are_infinite_like_1e999(raw, expected):
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", ["NaN", "nan", "", None])
def test_missing_values_are_nan(raw):
    assert math.isnan(parse_number(raw))


@pytest.mark.parametrize("raw", ["abc", "12abc", True, [1], {"a": 1}])
def test_non_numbers_are_rejected_with_a_reason(raw):
    with pytest.raises(ValueError, match="where a number was expected"):
        parse_number(raw)


def test_dash_spellings_of_one_class_normalise_to_one_label():
    spellings = [
        "Web Attack \u2013 Brute Force",
        "Web Attack \ufffd Brute Force",
        "Web Attack - Brute Force",
        "Web  Attack - Brute Force ",
    ]
    assert {normalize_label(s) for s in spellings} == {"Web Attack - Brute Force"}


def test_different_class_names_are_not_merged():
    assert normalize_label("Bot") != normalize_label("Botnet")
    assert normalize_label("PortScan") != normalize_label("Portscan")
    assert normalize_label("FTP-Patator") == "FTP-Patator"


def test_benign_spellings_become_the_canonical_benign_class():
    assert {normalize_label(s) for s in ["BENIGN", "Benign", "Normal", "normal"]} == {BENIGN}


def test_unsw_blank_attack_category_uses_the_binary_flag():
    assert resolve_label("", "0") == BENIGN
    assert resolve_label("", "1") is None
    assert resolve_label(" Exploits ", "1") == "Exploits"
    assert resolve_label("1") == "ATTACK"
    assert resolve_label(None) is None
