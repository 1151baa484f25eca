import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clibd.config import (
    REQUIRES,
    Config,
    ConfigError,
    DnaTowerConfig,
    ImageTowerConfig,
    OptimConfig,
    PretrainConfig,
    TextTowerConfig,
    TowerConfig,
    TrainConfig,
    config_chain,
    config_from_dict,
    load_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


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


def test_a_config_extends_its_bases_in_order_and_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    (tmp_path / "data.yaml").write_text("data:\n  root: /somewhere\ntrain:\n  epochs: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.yaml").write_text("extends: [../base.yaml, ../data.yaml]\nname: run\n")
    cfg = load_config(tmp_path / "sub" / "run.yaml", ["train.lr=0.5"])
    assert (cfg.name, cfg.train.lr, cfg.train.epochs, cfg.data.root) == ("run", 0.5, 7, "/somewhere")
    (tmp_path / "typo.yaml").write_text("extends: base.yaml\ntrain:\n  learnin_rate: 1\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'train\.learnin_rate'"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: 'extends' loops back to .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*gone\.yaml \(extended by .*orphan\.yaml\)"):
        load_config(tmp_path / "orphan.yaml")


@pytest.mark.parametrize(
    "text,error",
    [
        ("a: !!python/object:os.system ls\n", r"not a readable YAML config \(could not determine a constructor"),
        ("train: [1, 2\n", r"not a readable YAML config \(while parsing a flow sequence"),
        ("- 1\n- 2\n", r"a config file must be a mapping of keys"),
    ],
)
def test_unreadable_yaml_is_one_line_naming_the_file(tmp_path, text: str, error: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml: " + error):
        load_config(tmp_path / "bad.yaml")


def test_variant_presets_are_the_base_recipe_plus_their_difference() -> None:
    """The presets are base recipes and small variants: each variant resolves to its base with
    only what it says changed (a tower off, the 1M data and epochs)."""
    base = dataclasses.asdict(load_config(CONFIGS / "bioscan5m" / "image_dna_text.yaml"))
    for variant, changed in (("image_dna", "text"), ("image_text", "dna")):
        cfg = dataclasses.asdict(load_config(CONFIGS / "bioscan5m" / f"{variant}.yaml"))
        assert cfg["model"][changed]["enabled"] is False
        cfg["model"][changed]["enabled"] = True
        for named in ("name", "out_dir"):  # the run's name and the folders named after it
            cfg[named] = base[named]
        cfg["pretrain"]["out_dir"] = base["pretrain"]["out_dir"]
        assert cfg == base, variant
    for preset, given in (("image_dna_text", []), ("paper", ["model.dna.pretrained=none"])):
        five = dataclasses.asdict(load_config(CONFIGS / "bioscan5m" / f"{preset}.yaml", given))
        one = dataclasses.asdict(load_config(CONFIGS / "bioscan1m" / f"{preset}.yaml", given))
        assert (one["data"]["format"], one["train"]["epochs"]) == ("hdf5", 50)
        blocks = [part for part in five if isinstance(five[part], dict) and part != "pretrain"]  # pretrain: named
        differing = {f"{part}.{key}" for part in blocks for key in five[part] if five[part][key] != one[part][key]}
        assert differing <= {"data.format", "data.root", "data.splits", "train.epochs", "train.best_after_epoch"}


def test_saved_config_loads_back_identically(tmp_path) -> None:
    cfg = load_config(None, ["train.epochs=3", "model.text.name=null"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict({"train": {"epochs": 3}}).train.epochs == 3


# A bogus value of every choice field: the error names the key and the allowed values.
CHOICES = {
    "train.schedule": "['onecycle', 'cosine']",
    "train.nan_policy": "['skip', 'stop']",
    "train.loss_targets": "['identity', 'label', 'hierarchical']",
    "train.mixed_precision": "['no', 'bf16', 'fp16']",
    "train.label_rank": "['order', 'family', 'genus', 'species']",
    "train.final_model": "['best', 'last']",
    "pretrain.mixed_precision": "['no', 'bf16', 'fp16']",
    "pretrain.schedule": "['onecycle', 'cosine']",
    "data.bad_records": "['error', 'skip']",
    "data.format": "['bioscan5m', 'bioscan1m', 'hdf5', 'tabular', 'fasta']",
    "eval.index": "['auto', 'flat', 'ivf', 'ivfpq', 'hnsw']",
    "eval.precision": "['auto', 'fp32', 'bf16']",
    "eval.split": "['test', 'val']",
    "model.image.finetune": "['full', 'lora', 'frozen']",
    "model.dna.finetune": "['full', 'lora', 'frozen']",
    "model.text.finetune": "['full', 'lora', 'frozen']",
    "model.image.backbone": "['timm', 'open_clip']",
    "model.dna.pooling": "['mean', 'mean_all', 'kmer_bag']",
    "model.dna.head": "['linear', 'mlm_softmax', 'identity']",
    "model.dna.init": "['random', 'kmer_spectral']",
    "pretrain.objective": "['mlm', 'kmer_spectral']",
    "model.text.pooling": "['mean', 'mean_all', 'cls']",
}


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_bad_choice_names_key_and_allowed_values(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}=bogus"])
    assert (
        str(err.value) == f"command line: bad value for '{key}': Invalid value 'bogus', expected one of {CHOICES[key]}"
    )


def test_choice_in_a_file_is_checked_too(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("eval:\n  index: ivfflat\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: bad value for 'eval\.index': Invalid value 'ivfflat'"):
        load_config(path)


def test_tower_configs_share_their_common_fields() -> None:
    shared = {f.name for f in dataclasses.fields(TowerConfig)}
    assert shared == {"enabled", "finetune", "lora", "gradient_checkpointing", "lr_scale"}
    for tower in (ImageTowerConfig, DnaTowerConfig, TextTowerConfig):
        assert issubclass(tower, TowerConfig)
    optim = {f.name for f in dataclasses.fields(OptimConfig)}
    assert {"lr", "weight_decay", "schedule", "warmup_fraction", "cycle_momentum", "mixed_precision"} <= optim
    assert issubclass(TrainConfig, OptimConfig) and issubclass(PretrainConfig, OptimConfig)
    assert PretrainConfig().lr_reference_batch == 0 and PretrainConfig().epochs == 35  # its own defaults


@pytest.mark.parametrize(
    "overrides,error",
    [
        (
            ["train.best_metric=nope"],
            r"train.best_metric='nope' is not a metric validation produces: choose val_loss, "
            r"mean_top1 or a retrieval key",
        ),
        (
            ["train.best_metric=mean_top1"],
            r"train.best_metric='mean_top1' is a retrieval metric: it needs "
            r"train.val_retrieval=true",
        ),
        (["train.best_metric=dna->dna/macro/species/top1/seen"], "needs train.val_retrieval=true"),
        # text is not evaluated, so no pair with it is produced
        (
            [
                "train.val_retrieval=true",
                "eval.modalities=[image,dna]",
                "train.best_metric=dna->text/micro/genus/top1/seen",
            ],
            "is not a metric validation produces",
        ),
        (
            ["train.val_retrieval=true", "model.dna.enabled=false", "train.best_metric=dna->dna/micro/genus/top1/seen"],
            "is not a metric validation produces",
        ),
        (["train.val_retrieval=true", "train.best_metric=dna->dna/micro/genus/top10/seen"], r"eval.ks \[1, 3, 5\]"),
    ],
)
def test_best_metric_must_be_produced_by_the_configured_validation(overrides, error) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "metric",
    ["val_loss", "mean_top1", "image->dna/macro/species/top1/harmonic_mean", "text->dna/micro/order/top5/unseen"],
)
def test_metrics_validation_produces_are_accepted(metric: str) -> None:
    assert load_config(None, ["train.val_retrieval=true", f"train.best_metric={metric}"]).train.best_metric == metric


def test_fused_pair_metrics_need_eval_fused_pairs() -> None:
    metric = "train.best_metric=image_dna_mean->all/micro/species/top1/seen"
    with pytest.raises(ConfigError, match="is not a metric validation produces"):
        load_config(None, ["train.val_retrieval=true", metric])
    assert load_config(None, ["train.val_retrieval=true", "eval.fused_pairs=true", metric])


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads(path: Path) -> None:
    # A preset's `requires:` keys (the paper presets' BarcodeBERT checkpoint) are the user's to give.
    required = [f"{key}=null" for _, data in config_chain(path) for key in data.get(REQUIRES, {})]
    cfg = load_config(path, required)
    assert cfg.name and load_config(None, []).train.best_metric == "val_loss"


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "train.schedule=bogus",
            "bad value for 'train.schedule': Invalid value 'bogus', expected one of ['onecycle', 'cosine']",
        ),
        ("train.best_metric=nope", "train.best_metric='nope' is not a metric validation produces"),
    ],
)
def test_train_py_refuses_a_bad_value_before_reading_data(tmp_path, override: str, message: str) -> None:
    """The demo config generates its data when absent: a refused config must not get that far."""
    root = tmp_path / "demo"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"--out={tmp_path / 'out'}", f"data.root={root}", override],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not root.exists() and not (tmp_path / "out").exists()
    assert seconds < 30, f"took {seconds:.0f} s"  # 3 s seen at load 17 on 2 cores: no torch import before the check
