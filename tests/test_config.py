import pytest

from clibd.config import Config, ConfigError, config_from_dict, load_config, save_config


def test_defaults_file_and_dotted_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: exp1\ntrain:\n  lr: 0.001\n  batch_size: 32\nmodel:\n  dna:\n    k: 4\n")
    cfg = load_config(path, ["train.lr=1e-4", "model.image.enabled=false", "data.splits.keys=[train]"])
    assert isinstance(cfg, Config)
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.batch_size == 32
    assert cfg.model.dna.k == 4 and cfg.model.image.enabled is False
    assert cfg.data.splits.keys == ["train"]
    assert cfg.out_dir == "runs/exp1"  # interpolation resolved


def test_unknown_key_in_file_names_key_and_file(tmp_path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'train\.learning_rate'"):
        load_config(path)


def test_unknown_override_and_bad_type_are_errors() -> None:
    with pytest.raises(ConfigError, match="command line: unknown config key 'model.dna.kmer'"):
        load_config(None, ["model.dna.kmer=4"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")


def test_saved_config_loads_back_identically(tmp_path) -> None:
    cfg = load_config(None, ["train.epochs=3", "model.text.name=null"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict({"train": {"epochs": 3}}).train.epochs == 3
