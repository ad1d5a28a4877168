"""debcr.config: defaults, the original's files, validation messages, overrides, atomic save."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from debcr import config as cfg
from debcr.config import TrainConfig
from debcr.errors import ConfigError

PAPER_RECIPE = {
    "weights_path": "./checkpoint/",
    "batch_size": 32,
    "val_batch_size": None,
    "num_steps": 2000,
    "patience": 10,
    "val_freq": 100,
    "save_freq": 50,
    "recipe": "paper",
    "learning_rate": 1e-3,
    "adam_eps": 1e-7,
    "lr_schedule": "constant",
    "warmup_fraction": 0.0,
    "ema_decay": 0.0,
    "patch_size": 128,
    "mode": "supervised",
    "loss": "reference",
    "fft_weight": 0.5,
    "n2v_masked_percentage": 0.2,
    "n2v_roi_size": 11,
    "augmentation": "none",
    "patch_normalization": "none",
    "seed": 0,
    "accelerator": "auto",
    "devices": "auto",
    "strategy": "auto",
    "num_nodes": 1,
    "precision": "auto",
    "num_workers": 0,
    "progress": True,
    "init_model": None,
    "train_data": None,
    "val_data": None,
}

# The original DeBCR 0.1.0's defaults, and the file its save() writes for them: a plain
# yaml.dump, so keys are sorted and the uppercase NUM_STEPS comes first.
ORIGINAL_DEFAULTS = {
    "weights_path": "./checkpoint/",
    "batch_size": 32,
    "NUM_STEPS": 2000,
    "patience": 10,
    "learning_rate": 0.001,
    "save_freq": 50,
    "val_freq": 100,
}
ORIGINAL_FILE = """\
NUM_STEPS: 2000
batch_size: 32
learning_rate: 0.001
patience: 10
save_freq: 50
val_freq: 100
weights_path: ./checkpoint/
"""

# Markers of pydantic's own error dump, which must never reach a user.
PYDANTIC_DUMP = ("errors.pydantic.dev", "input_value", "type=", "validation error for")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert not any(marker in text for marker in PYDANTIC_DUMP), text
    return text


# ---- defaults and the original's files ---------------------------------------------------


#: The keys the default recipe (debcr) sets differently from the paper's.
DEBCR_RECIPE = {
    "recipe": "debcr",
    "lr_schedule": "cosine",
    "warmup_fraction": 0.05,
    "ema_decay": 0.999,
}


def test_paper_recipe_is_selectable_and_the_default_is_debcr() -> None:
    assert TrainConfig(recipe="paper").to_dict() == PAPER_RECIPE
    assert TrainConfig().to_dict() == {**PAPER_RECIPE, **DEBCR_RECIPE}
    assert cfg.load() == TrainConfig()
    assert list(TrainConfig.model_fields) == list(PAPER_RECIPE)


def test_recipe_fills_only_the_keys_not_given(tmp_path: Path) -> None:
    config = TrainConfig(recipe="paper", augmentation="flip", learning_rate=5e-4)
    assert (config.augmentation, config.learning_rate) == ("flip", 5e-4)
    assert (config.lr_schedule, config.ema_decay) == ("constant", 0.0)
    # a file naming the recipe and one key of it
    path = _write(tmp_path / "r.yaml", "recipe: paper\nema_decay: 0.99\n")
    loaded = cfg.load(path)
    assert (loaded.recipe, loaded.ema_decay, loaded.lr_schedule) == ("paper", 0.99, "constant")
    # a file of the original (no recipe key) gets the default recipe's training keys
    original = cfg.load(_write(tmp_path / "o.yaml", ORIGINAL_FILE))
    assert (original.recipe, original.lr_schedule) == ("debcr", "cosine")


def test_changing_the_recipe_sets_all_its_keys() -> None:
    config = TrainConfig(augmentation="flip")
    config["recipe"] = "paper"
    assert config.to_dict() == PAPER_RECIPE
    config.recipe = "debcr"
    assert config.to_dict() == {**PAPER_RECIPE, **DEBCR_RECIPE}
    # keys changed together with the recipe win over it
    mixed = config.with_overrides(recipe="paper", warmup_fraction=0.1, lr_schedule="cosine")
    assert (mixed.recipe, mixed.warmup_fraction, mixed.lr_schedule) == ("paper", 0.1, "cosine")
    assert mixed.ema_decay == 0.0
    # overriding a key of the recipe without the recipe keeps the others
    assert config.with_overrides(ema_decay=0.5).lr_schedule == "cosine"


def test_unknown_recipe_is_one_sentence_and_changes_nothing() -> None:
    config = TrainConfig()
    with pytest.raises(ConfigError) as excinfo:
        config["recipe"] = "papr"
    text = _message(excinfo)
    assert "recipe: must be one of 'debcr', 'paper' (got 'papr')" in text
    assert config.to_dict() == {**PAPER_RECIPE, **DEBCR_RECIPE}
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=0.8)


def test_original_file_is_what_the_original_writes() -> None:
    # The fixture below must match the original's writer (yaml.dump of its dict).
    assert yaml.dump(ORIGINAL_DEFAULTS) == ORIGINAL_FILE


def test_original_file_loads_unchanged_and_round_trips(tmp_path: Path) -> None:
    path = _write(tmp_path / "original.yaml", ORIGINAL_FILE)
    loaded = cfg.load(path)
    assert loaded == TrainConfig()
    for key, value in ORIGINAL_DEFAULTS.items():
        assert loaded[key] == value and type(loaded[key]) is type(value)

    edited = dict(ORIGINAL_DEFAULTS, NUM_STEPS=5000, batch_size=16, learning_rate=0.0005)
    edited["weights_path"] = "./runs/a/"
    loaded = cfg.load(_write(tmp_path / "edited.yaml", yaml.dump(edited)))
    assert loaded.to_dict(original_names=True) == {
        **TrainConfig().to_dict(original_names=True),
        **edited,
    }

    saved = cfg.save(loaded, tmp_path / "ours.yaml")
    assert cfg.load(saved) == loaded
    # The original's loader (safe_load, then its 7 keys) reads the same values back.
    ours = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert {key: ours[key] for key in ORIGINAL_DEFAULTS} == edited


def test_original_notebook_pattern(tmp_path: Path) -> None:
    config = cfg.load()
    config["batch_size"] = 16
    config["NUM_STEPS"] = 3000
    path = cfg.save(config, tmp_path / "my.yaml")
    assert isinstance(path, Path) and path == tmp_path / "my.yaml"
    again = cfg.load(path)
    assert again["batch_size"] == 16 and again.num_steps == 3000
    # The original's dict (all 7 keys) is accepted by save() too, validated.
    assert cfg.load(cfg.save(dict(ORIGINAL_DEFAULTS), tmp_path / "d.yaml")) == TrainConfig()


def test_save_writes_original_keys_first_with_NUM_STEPS(tmp_path: Path) -> None:
    config = TrainConfig(num_steps=123, val_freq=10, devices=[0, 1], learning_rate=5e-4)
    path = cfg.save(config, tmp_path / "c.yaml")
    text = path.read_text(encoding="utf-8")
    assert "NUM_STEPS: 123" in text and "num_steps" not in text
    keys = list(yaml.safe_load(text))
    assert keys[:7] == list(cfg.ORIGINAL_KEYS)
    assert keys[7:] == [k for k in TrainConfig.model_fields if k not in [*keys[:7], "num_steps"]]
    assert cfg.load(path) == config


def test_both_spellings_of_num_steps(tmp_path: Path) -> None:
    assert TrainConfig(NUM_STEPS=300).num_steps == 300
    assert TrainConfig(num_steps=300).num_steps == 300
    assert cfg.load(_write(tmp_path / "a.yaml", "num_steps: 300\n")).num_steps == 300
    assert cfg.load(_write(tmp_path / "b.yaml", "NUM_STEPS: 300\n")).num_steps == 300
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(_write(tmp_path / "c.yaml", "NUM_STEPS: 300\nnum_steps: 400\n"))
    assert "given twice" in _message(excinfo) and "NUM_STEPS" in str(excinfo.value)


def test_exponent_floats_and_empty_file(tmp_path: Path) -> None:
    # Plain PyYAML reads 5e-4 as the string '5e-4'; a learning rate must be a float.
    loaded = cfg.load(_write(tmp_path / "a.yaml", "learning_rate: 5e-4\nadam_eps: 1E-8\n"))
    assert loaded.learning_rate == 5e-4 and loaded.adam_eps == 1e-8
    assert cfg.load(_write(tmp_path / "empty.yaml", "# nothing yet\n")) == TrainConfig()
    # ...and text that looks like such a float is quoted when saved, so it stays text.
    config = TrainConfig(weights_path="1e5", init_model="2E-3")
    assert cfg.load(cfg.save(config, tmp_path / "text.yaml")) == config


# ---- errors ----------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        cfg.load(missing)


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "batch_size: 32\npatience: 10\nlearning_rate: [0.1\n")
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert "bad.yaml" in _message(excinfo)
    assert "line 4" in str(excinfo.value)  # PyYAML notices the missing ']' at the end

    path = _write(tmp_path / "dup.yaml", "batch_size: 32\npatience: 10\nbatch_size: 16\n")
    with pytest.raises(ConfigError, match=r"line 3.*'batch_size' appears twice"):
        cfg.load(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        cfg.load(_write(tmp_path / "list.yaml", "- batch_size\n- 32\n"))
    with pytest.raises(ConfigError, match="1: unknown key"):
        cfg.load(_write(tmp_path / "int_key.yaml", "1: 2\n"))


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    path = _write(tmp_path / "typo.yaml", "batch_size: 16\nlearnig_rate: 0.01\n")
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    text = _message(excinfo)
    assert "learnig_rate: unknown key" in text
    assert "did you mean 'learning_rate'?" in text
    assert "valid keys: weights_path, batch_size" in text
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        TrainConfig(learnig_rate=0.01)


def test_nested_sections_are_refused_clearly(tmp_path: Path) -> None:
    path = _write(tmp_path / "nested.yaml", "train:\n  batch_size: 16\n  patience: 5\n")
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert "nested sections are not supported" in _message(excinfo)
    assert "batch_size, patience" in str(excinfo.value)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("batch_size", 0, [">= 1"]),
        ("batch_size", True, [">= 1"]),
        ("learning_rate", -1, ["> 0", "<= 1"]),
        ("learning_rate", float("nan"), ["finite"]),
        ("patch_size", 130, ["multiple of 4", ">= 16", "<= 1024"]),
        ("loss", "l2", ["'reference'", "'fft2d'"]),
        ("precision", "fp8", ["'auto'", "'32-true'", "'bf16-mixed'", "'16-mixed'"]),
        ("strategy", "magic", ["'auto'", "'ddp'", "'ddp_spawn'"]),
        ("augmentation", "rotate", ["'none'", "'flip'", "'flip_rot90'"]),
        ("devices", 0, ["'auto'", "-1 = all"]),
        ("devices", [0, 0], ["distinct"]),
        ("seed", -1, ["4294967295"]),
        ("weights_path", "", ["non-empty"]),
    ],
)
def test_invalid_values_name_key_value_and_allowed(
    tmp_path: Path, key: str, value: object, allowed: list[str]
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TrainConfig(**{key: value})
    text = _message(excinfo)
    line = next(line.strip() for line in text.splitlines() if line.strip().startswith(key))
    assert line.endswith(f"(got {value!r})")
    for fragment in allowed:
        assert fragment in line

    # The same problem in a file gives the same line, with the file named.
    path = _write(tmp_path / "bad.yaml", yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert "bad.yaml" in _message(excinfo) and line.split(" (got")[0] in str(excinfo.value)


def test_one_line_per_problem() -> None:
    with pytest.raises(ConfigError) as excinfo:
        TrainConfig(batch_size=0, loss="l2", devices=[0, "x"])
    lines = _message(excinfo).splitlines()
    assert lines[0] == "invalid training configuration (3 problems):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["batch_size", "loss", "devices"]
    assert lines[3].endswith("(got [0, 'x'])")


def test_val_freq_beyond_num_steps_is_allowed() -> None:
    """The original's notebooks set NUM_STEPS alone; training then validates at the end."""
    config = TrainConfig()
    config["NUM_STEPS"] = 50
    assert (config.num_steps, config.val_freq) == (50, 100)


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("32", "32-true"),
        (32, "32-true"),
        ("float32", "32-true"),
        ("bf16", "bf16-mixed"),
        ("bfloat16", "bf16-mixed"),
        ("16", "16-mixed"),
        (16, "16-mixed"),
        ("16-mixed", "16-mixed"),
        ("AUTO", "auto"),
    ],
)
def test_precision_aliases_are_normalised(alias: object, name: str) -> None:
    assert TrainConfig(precision=alias).precision == name


def test_precision_is_auto_by_default_and_kept_in_files(tmp_path: Path) -> None:
    """A run's config.yaml keeps 'auto', so a resumed run chooses again for its machine."""
    assert TrainConfig().precision == "auto"
    path = cfg.save(TrainConfig(), tmp_path / "config.yaml")
    assert "precision: auto" in path.read_text()
    assert cfg.load(path).precision == "auto"
    # a file written before 'auto' existed keeps its explicit precision
    old = _write(tmp_path / "old.yaml", "precision: 32-true\n")
    assert cfg.load(old).precision == "32-true"


# ---- the dict interface ------------------------------------------------------------------


def test_item_assignment_is_validated_and_atomic() -> None:
    config = TrainConfig()
    config["batch_size"] = 16
    assert config.batch_size == 16 and config["batch_size"] == 16
    before = config.to_dict()
    with pytest.raises(ConfigError) as excinfo:
        config["batch_size"] = 0
    assert "batch_size: must be an integer >= 1 (got 0)" in _message(excinfo)
    with pytest.raises(ConfigError, match="val_freq: must be an integer >= 1"):
        config["val_freq"] = 0
    with pytest.raises(ConfigError, match="did you mean 'patience'"):
        config.patients = 3
    assert config.to_dict() == before


def test_mapping_access_like_the_original_dict() -> None:
    config = TrainConfig(recipe="paper")
    assert dict(config) == config.to_dict() == PAPER_RECIPE
    assert list(config) == list(PAPER_RECIPE) and len(config) == len(PAPER_RECIPE)
    assert "NUM_STEPS" in config and "num_steps" in config and "nope" not in config
    assert config["NUM_STEPS"] == 2000 and config.get("nope", 7) == 7
    with pytest.raises(KeyError, match="did you mean 'learning_rate'") as excinfo:
        config["learnig_rate"]
    assert isinstance(excinfo.value, ConfigError)
    config.update({"NUM_STEPS": 40}, val_freq=20)
    assert (config.num_steps, config.val_freq) == (40, 20)
    assert pickle.loads(pickle.dumps(config)) == config == copy.deepcopy(config)


def test_val_batch_size_is_optional_and_checked_like_batch_size() -> None:
    """Unset (None, the default) means "use batch_size"; the trainer resolves that itself."""
    assert TrainConfig().val_batch_size is None
    assert TrainConfig(val_batch_size=8).val_batch_size == 8
    assert (
        TrainConfig(val_batch_size=8).with_overrides(val_batch_size="null").val_batch_size is None
    )
    assert cfg.merge(TrainConfig(), cfg.parse_overrides("val_batch_size=4")).val_batch_size == 4
    for bad in (0, True, 1.5, "x"):
        with pytest.raises(ConfigError) as excinfo:
            TrainConfig(val_batch_size=bad)
        assert (
            f"val_batch_size: must be an integer >= 1, or null to use batch_size (got {bad!r})"
            in _message(excinfo)
        )


def test_with_overrides_and_merge_leave_the_original_alone() -> None:
    config = TrainConfig()
    changed = cfg.merge(config, {"NUM_STEPS": 500, "augmentation": "flip"})
    assert (changed.num_steps, changed.augmentation) == (500, "flip")
    assert config == TrainConfig()
    assert cfg.merge(ORIGINAL_DEFAULTS, {"batch_size": 8}).batch_size == 8
    with pytest.raises(ConfigError, match="given twice"):
        cfg.merge(config, {"NUM_STEPS": 500, "num_steps": 600})
    with pytest.raises(ConfigError, match="learning_rate: must be"):
        config.with_overrides(learning_rate=2)


# ---- command-line overrides --------------------------------------------------------------


def test_parse_overrides_types_values() -> None:
    parsed = cfg.parse_overrides(
        [
            "batch_size=16",
            "learning_rate=5e-4",
            "augmentation=flip",
            "devices=[0, 1]",
            "seed=null",
            "progress=false",
            "NUM_STEPS=500",
            "weights_path=runs/a b",
        ]
    )
    assert parsed == {
        "batch_size": 16,
        "learning_rate": 5e-4,
        "augmentation": "flip",
        "devices": [0, 1],
        "seed": None,
        "progress": False,
        "num_steps": 500,
        "weights_path": "runs/a b",
    }
    assert type(parsed["learning_rate"]) is float
    merged = TrainConfig().with_overrides(**parsed)
    assert merged.learning_rate == 5e-4 and merged.seed is None
    assert cfg.parse_overrides("batch_size=4") == {"batch_size": 4}


def test_parse_overrides_reports_every_malformed_item() -> None:
    items = [
        "batch_size",  # no '='
        "=3",  # no key
        "patience=",  # no value
        "learnig_rate=0.1",  # unknown key
        "patch_size=[1",  # bad YAML
        "seed=1",
        "seed=2",  # twice
        "weights_path=a: b",  # a mapping
    ]
    with pytest.raises(ConfigError) as excinfo:
        cfg.parse_overrides(items)
    lines = _message(excinfo).splitlines()
    assert lines[0] == "invalid overrides (7 problems):"
    text = "\n".join(lines)
    assert "'batch_size': expected key=value" in text
    assert "'=3': expected key=value" in text
    assert "patience: no value after '='" in text
    assert "did you mean 'learning_rate'?" in text
    assert "patch_size: value is not valid YAML" in text
    assert "seed: given more than once" in text
    assert "weights_path: value reads as a mapping" in text


# ---- atomic save -------------------------------------------------------------------------


def test_save_is_atomic_and_overwrites_by_default(tmp_path: Path) -> None:
    path = tmp_path / "run" / "config.yaml"  # the folder does not exist yet
    cfg.save(TrainConfig(), path)
    cfg.save(TrainConfig(batch_size=8), path)  # replacing is the default, as the original
    assert cfg.load(path).batch_size == 8
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]

    with pytest.raises(FileExistsError, match="overwrite=True"):
        cfg.save(TrainConfig(batch_size=4), path, overwrite=False)
    assert cfg.load(path).batch_size == 8
    with pytest.raises(ConfigError, match="folder"):
        cfg.save(TrainConfig(), tmp_path)


def test_failed_save_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cfg.save(TrainConfig(batch_size=8), tmp_path / "config.yaml")
    old = path.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cfg.save(TrainConfig(batch_size=4), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]

    with pytest.raises(ConfigError, match="batch_size"):
        cfg.save({"batch_size": 0}, tmp_path / "invalid.yaml")
    assert not (tmp_path / "invalid.yaml").exists()


# ---- import weight and round trips -------------------------------------------------------


def test_import_leaves_torch_out() -> None:
    code = (
        "import sys, debcr.config\n"
        "heavy = {'torch', 'numpy', 'lightning', 'pytorch_lightning'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


_paths = st.text(
    st.characters(codec="utf-8", min_codepoint=32, exclude_characters="\x7f"),
    min_size=1,
    max_size=24,
).filter(
    # Words that mean null ('none', '~') would come back as None for init_model.
    lambda s: (
        s.strip().lower() not in {"", "none", "null", "~"}
        and not any(127 <= ord(c) < 160 for c in s)
    )
)


@st.composite
def _valid_settings(draw: st.DrawFn) -> dict[str, object]:
    num_steps = draw(st.integers(1, 10**6))
    return {
        "weights_path": draw(_paths),
        "batch_size": draw(st.integers(1, 4096)),
        "num_steps": num_steps,
        "val_freq": draw(st.integers(1, num_steps)),
        "learning_rate": draw(st.floats(1e-12, 1.0, exclude_min=False)),
        "patch_size": 4 * draw(st.integers(4, 256)),
        "loss": draw(st.sampled_from(["reference", "fft2d"])),
        "augmentation": draw(st.sampled_from(["none", "flip", "flip_rot90"])),
        "precision": draw(st.sampled_from(sorted(cfg.PRECISION_ALIASES))),
        "devices": draw(
            st.one_of(
                st.just("auto"),
                st.integers(1, 8),
                st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True),
            )
        ),
        "seed": draw(st.one_of(st.none(), st.integers(0, cfg.MAX_SEED))),
        "init_model": draw(st.one_of(st.none(), _paths)),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(settings_=_valid_settings())
def test_valid_settings_round_trip_through_yaml(
    tmp_path: Path, settings_: dict[str, object]
) -> None:
    config = TrainConfig(**settings_)
    path = cfg.save(config, tmp_path / "config.yaml")
    assert cfg.load(path) == config
    # Every key the original knows reads back the same with the original's own loader.
    ours = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert ours["NUM_STEPS"] == config.num_steps
    assert ours["weights_path"] == config.weights_path
    assert ours["learning_rate"] == config.learning_rate
