import pytest

from trainer.rundir import RunDirError, check_run_dir


def test_a_new_run_directory_is_checked_but_not_created(tmp_path):
    out = check_run_dir(tmp_path / "runs" / "a")
    assert out == tmp_path / "runs" / "a" and not (tmp_path / "runs").exists()


def test_an_empty_existing_directory_is_fine(tmp_path):
    assert check_run_dir(tmp_path) == tmp_path


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(tmp_path / "out")


@pytest.mark.parametrize("earlier", ["report.json", "bundle"])
def test_a_directory_holding_a_run_is_never_overwritten(tmp_path, earlier):
    (tmp_path / "report.json").write_text("{}") if earlier == "report.json" else (tmp_path / "bundle").mkdir()
    with pytest.raises(RunDirError, match=f"already holds a run \\({earlier}\\)"):
        check_run_dir(tmp_path)


def test_a_directory_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="cannot be created"):
        check_run_dir(tmp_path / "file" / "run")
