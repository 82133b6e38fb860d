"""Options from FLOWWARDEN_<OPTION>: as if typed, a flag wins, only the chosen subcommands, skipped flags."""

import argparse

import pytest

from detector.core.envflags import env_name, options_from_environment


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="tool")
    commands = root.add_subparsers(dest="command", required=True)
    go = commands.add_parser("go")
    go.add_argument("--paths", nargs="+")
    go.add_argument("--count", type=int)
    go.add_argument("--quiet", action="store_true")
    go.add_argument("--config")
    commands.add_parser("other").add_argument("--count", type=int)
    return root


def test_the_variable_name_is_the_option_in_capitals():
    assert env_name("--label-map") == "FLOWWARDEN_LABEL_MAP"


def test_unset_options_are_read_as_if_typed_and_a_flag_wins():
    environ = {"FLOWWARDEN_PATHS": "a 'b c'", "FLOWWARDEN_COUNT": "-3", "FLOWWARDEN_QUIET": "on"}
    args = parser().parse_args(options_from_environment(["go"], parser(), environ=environ))
    assert (args.paths, args.count, args.quiet) == (["a", "b c"], -3, True)
    args = parser().parse_args(options_from_environment(["go", "--count", "7"], parser(), environ=environ))
    assert args.count == 7


@pytest.mark.parametrize("value", ["0", "false", "no", ""])
def test_a_switch_is_off_unless_the_variable_says_so(value):
    argv = options_from_environment(["go"], parser(), environ={"FLOWWARDEN_QUIET": value})
    assert parser().parse_args(argv).quiet is False


def test_only_the_chosen_commands_and_never_the_skipped_flags():
    environ = {"FLOWWARDEN_COUNT": "5", "FLOWWARDEN_CONFIG": "x.toml"}
    assert options_from_environment(["other"], parser(), commands={"go"}, environ=environ) == ["other"]
    argv = options_from_environment(["go"], parser(), skip={"--config"}, environ=environ)
    assert parser().parse_args(argv).config is None and parser().parse_args(argv).count == 5


def test_a_bad_value_is_refused_like_the_flag():
    with pytest.raises(SystemExit):
        parser().parse_args(options_from_environment(["go"], parser(), environ={"FLOWWARDEN_COUNT": "many"}))
