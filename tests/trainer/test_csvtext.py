"""CSV text to cells: fast and quoted paths agree, malformed lines are counted, cp1252 files decode."""

import csv
import gzip

import pytest

from trainer.csvtext import BLANK_LINE, WRONG_FIELD_COUNT, decode, read_text, split_records


def test_plain_text_keeps_well_formed_records_and_counts_the_others():
    text = "a,b,c\n1,2,3\n\n4,5\n6,7,8\n9,10,11,12\n"
    cells, malformed, rows_read = split_records(text, 3)
    assert cells.values.tolist() == [["1", "2", "3"], ["6", "7", "8"]]
    assert malformed == {BLANK_LINE: 1, WRONG_FIELD_COUNT: 2}
    assert rows_read == 5


def test_quoted_text_reads_commas_inside_quotes_like_the_plain_path_reads_the_rest():
    text = 'a,b,c\n1,"x, y",3\n\n4,5\n'
    cells, malformed, rows_read = split_records(text, 3)
    assert cells.values.tolist() == [["1", "x, y", "3"]]
    assert malformed == {BLANK_LINE: 1, WRONG_FIELD_COUNT: 1} and rows_read == 3


def test_a_quote_that_never_closes_is_an_error_naming_the_line():
    with pytest.raises(csv.Error, match="line"):
        split_records('a,b\n1,"2\n3,4\n', 2)


def test_windows_line_ends_and_a_missing_final_newline_change_nothing():
    cells, malformed, rows_read = split_records("a,b\r\n1,2\r\n3,4", 2)
    assert cells.values.tolist() == [["1", "2"], ["3", "4"]] and not malformed and rows_read == 2


def test_cp1252_bytes_decode_and_gzip_files_read_with_a_line_limit(tmp_path):
    assert decode("Web Attack \u2013 Brute Force".encode("cp1252")) == ("Web Attack \u2013 Brute Force", "cp1252")
    assert decode("\ufeffa,b".encode()) == ("a,b", "utf-8")
    path = tmp_path / "generated.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("a,b\n1,2\n3,4\n5,6\n")
    assert read_text(path, limit=2) == ("a,b\n1,2\n3,4\n", "utf-8")
