import pytest

from trainer.rundir import RunDirError, prepare_run_dir


def test_a_new_run_directory_is_created_with_its_parents(tmp_path):
    out = prepare_run_dir(tmp_path / "runs" / "a")
    assert out.is_dir()


def test_an_empty_existing_directory_is_fine(tmp_path):
    assert prepare_run_dir(tmp_path) == tmp_path


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        prepare_run_dir(tmp_path / "out")


@pytest.mark.parametrize("earlier", ["report.json", "bundle"])
def test_a_directory_holding_a_run_is_never_overwritten(tmp_path, earlier):
    (tmp_path / "report.json").write_text("{}") if earlier == "report.json" else (tmp_path / "bundle").mkdir()
    with pytest.raises(RunDirError, match=f"already holds a run \\({earlier}\\)"):
        prepare_run_dir(tmp_path)


def test_a_directory_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="cannot be created"):
        prepare_run_dir(tmp_path / "file" / "run")
