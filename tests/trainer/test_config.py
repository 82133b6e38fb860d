import re

import pytest

from trainer.ablate import ablation_rows
from trainer.config import ConfigError, load_config


def test_paper_profile_holds_the_papers_hyper_parameters():
    config = load_config("paper")
    assert config.finetune.epochs == 50
    assert config.finetune.batch_size == 256
    assert config.finetune.lr == 0.01 and config.finetune.momentum == 0.9
    assert config.finetune.sam.enabled and config.finetune.sam.rho == 0.05
    assert config.finetune.loss == "focal"
    assert config.split.test_size == 0.3
    assert config.model.filters == (16, 32) and config.model.gru_hidden == 64 and config.model.gru_layers == 2


def test_quick_profile_runs_the_same_steps_with_fewer_epochs():
    quick, paper = load_config("quick"), load_config("paper")
    assert quick.finetune.epochs < paper.finetune.epochs
    assert quick.outliers.enabled and quick.resample.enabled and quick.finetune.sam.enabled


def test_a_config_file_overrides_the_profile(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[finetune]\nepochs = 3\n[finetune.sam]\nenabled = false\n")
    config = load_config("paper", path)
    assert config.finetune.epochs == 3 and not config.finetune.sam.enabled
    assert config.finetune.batch_size == 256


@pytest.mark.parametrize(
    ("text", "message"),
    [("[finetune]\nepochz = 3\n", "epochz"), ("[finetune]\nepochs = -1\n", "epochs"), ("not toml [", "not valid TOML")],
)
def test_bad_config_files_are_precise_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config("paper", path)


def test_unknown_profile_and_missing_file_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile"):
        load_config("fast")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("paper", tmp_path / "none.toml")


def test_ablation_rows_add_one_component_at_a_time():
    rows = dict(ablation_rows(load_config("quick")))
    assert list(rows) == ["base", "+SAM", "+iForest", "+SMOTE", "full"]
    base, full = rows["base"], rows["full"]
    assert not base.finetune.sam.enabled and not base.outliers.enabled and not base.resample.enabled
    assert base.finetune.loss == "cross_entropy"
    assert rows["+SAM"].finetune.sam.enabled and not rows["+SAM"].outliers.enabled
    assert rows["+iForest"].outliers.enabled and not rows["+iForest"].resample.enabled
    assert rows["+SMOTE"].resample.enabled and rows["+SMOTE"].finetune.loss == "cross_entropy"
    assert full.finetune.loss == "focal" and full.finetune.sam.enabled


def test_the_tuned_profile_is_the_paper_profile_with_the_validated_choices():
    tuned, paper = load_config("tuned").model_dump(), load_config("paper").model_dump()
    changed = {
        (section, key)
        for section in paper
        if isinstance(paper[section], dict)
        for key in paper[section]
        if tuned[section][key] != paper[section][key]
    }
    assert changed == {("preprocess", "log_scale"), ("resample", "benign"), ("finetune", "lr")}
    assert tuned["finetune"]["lr"] == 0.05


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('profile = "quick"\n', "'profile' cannot be set in a config file; use --profile"),
        ('extends = "quick"\n', "'extends' cannot be set in a config file"),
        ("[outliers]\ncontamination = 0.9\n", "outliers.contamination"),
        ("[outliers]\ncontamination = 0.0\n", "outliers.contamination"),
        ("seed = -1\n", "seed"),
        ("seed = 99999999999999\n", "seed"),
        ("[model]\nfilters = [0, 0]\n", "model.filters"),
        ("[finetune.focal]\nalpha = -1.0\n", "finetune.focal.alpha"),
        ("[finetune.focal]\nalpha = [0.5, -0.5]\n", "finetune.focal.alpha"),
        # An infinite learning rate would train a model of NaN weights that still verifies and serves.
        ("[finetune]\nlr = inf\n", "finetune.lr: Input should be a finite number"),
        ("[pretrain]\nlr = nan\n", "pretrain.lr: Input should be a finite number"),
        ("[resample]\nmax_ratio = inf\n", "resample.max_ratio: Input should be a finite number"),
        ("[finetune.sam]\nrho = inf\n", "finetune.sam.rho: Input should be a finite number"),
        # TOML has its own types: a value of the wrong one is a mistake, not a value to convert.
        ('[finetune]\nepochs = "3"\n', "finetune.epochs: Input should be a valid integer (got '3')"),
        ("[resample]\ntomek = 1\n", "resample.tomek: Input should be a valid boolean (got 1)"),
        ("seed = true\n", "seed: Input should be a valid integer (got True)"),
        ('[model]\nfilters = [8, "16"]\n', "model.filters.1: Input should be a valid integer (got '16')"),
        ('[finetune]\nlr = "0.1"\n', "finetune.lr: Input should be a valid number (got '0.1')"),
        ('[features]\nexclude = ["Flow Duration", 3]\n', "features.exclude.1: Input should be a valid string (got 3)"),
    ],
)
def test_values_that_cannot_train_as_written_are_config_errors(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("paper", path)


def test_a_value_that_fits_no_alternative_is_one_message_under_the_key_the_user_wrote(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[outliers]\ncontamination = 0.9\n[finetune]\nlrr = 1\n")
    with pytest.raises(ConfigError) as raised:
        load_config("paper", path)
    message = str(raised.value)
    assert "outliers.contamination: Input should be less than or equal to 0.5 or Input should be 'auto'" in message
    assert "finetune.lrr: Extra inputs are not permitted" in message
    assert "constrained" not in message and "literal[" not in message  # pydantic's names for union members


def test_toml_arrays_and_integers_are_accepted_where_a_pair_or_a_float_is_wanted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\nfilters = [8, 16]\n[finetune]\nlr = 1\n[finetune.focal]\nalpha = [1, 0.5]\n")
    config = load_config("paper", path)
    assert config.model.filters == (8, 16)
    assert config.finetune.lr == 1.0 and config.finetune.focal.alpha == [1.0, 0.5]


def test_command_line_changes_are_validated_like_a_file():
    with pytest.raises(ConfigError, match=re.escape("finetune.epochs")):
        load_config("quick").with_changes({"finetune": {"epochs": 0}})


def test_a_config_that_is_not_utf8_or_not_a_file_is_a_config_error(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[finetune]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config("paper", binary)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config("paper", tmp_path)


def test_a_run_with_a_config_file_is_named_after_both(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[finetune]\nepochs = 3\n")
    assert load_config("quick", path).profile == "quick + mine.toml"
    assert load_config("quick").profile == "quick"


def test_the_single_protocol_adds_each_component_to_the_base_alone():
    rows = dict(ablation_rows(load_config("quick"), "single"))
    assert list(rows) == ["base", "+SAM", "+iForest", "+SMOTE", "+Focal", "full"]
    base = rows["base"]

    def components(config):
        return {
            "+SAM": config.finetune.sam.enabled,
            "+iForest": config.outliers.enabled,
            "+SMOTE": config.resample.enabled,
            "+Focal": config.finetune.loss == "focal",
        }

    assert not any(components(base).values())
    for name in ("+SAM", "+iForest", "+SMOTE", "+Focal"):
        assert [c for c, on in components(rows[name]).items() if on] == [name]
    assert all(components(rows["full"]).values())
    assert rows["full"] == dict(ablation_rows(load_config("quick"), "stacked"))["full"]


def test_the_paper_literal_profile_sets_every_setting_the_paper_states():
    literal, paper = load_config("paper-literal"), load_config("paper")
    assert literal.pretrain.optimizer == "sam_sgd" and literal.pretrain.lr == 0.01 and literal.pretrain.epochs == 50
    assert literal.finetune.focal.alpha == "inverse_frequency"
    assert literal.model.activation == "every_conv"
    assert literal.split.validation_size == 0 and not literal.finetune.select_best
    assert literal.outliers.contamination == "auto" and literal.resample.max_ratio is None
    shared = ("epochs", "batch_size", "lr", "momentum", "loss", "sam")
    assert all(getattr(literal.finetune, key) == getattr(paper.finetune, key) for key in shared)
    # the paper profile keeps its own choices (README "Deviations from the paper")
    assert paper.pretrain.optimizer == "adam" and paper.finetune.focal.alpha is None
    assert paper.model.activation == "resnet" and paper.finetune.select_best
