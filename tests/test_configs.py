"""Configuration: every YAML mirrors its dataclass, overrides are kept, and ``--help`` is fast and truthful."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from fitting.config import FittingConfig, PreprocessConfig, RenderConfig
from fitting.runner import resolve_config
from models.config import DetailTrainingConfig, UVAPMBuildConfig
from tests.conftest import REPO
from utils.config import ConfigError, config_to_dict, load_config

#: YAML file -> its schema.
CONFIGS = {
    "fitting.yaml": FittingConfig,
    "preprocess.yaml": PreprocessConfig,
    "detail.yaml": DetailTrainingConfig,
    "uvapm.yaml": UVAPMBuildConfig,
    "render.yaml": RenderConfig,
}

#: command (as the README prints it, run from the repository) -> (usage line, a default its --help must show,
#: the schema its --set overrides go to).
COMMANDS = {
    ("run_rgb_fitting.sh",): ("usage: bash run_rgb_fitting.sh", f"(default: {FittingConfig().batch_size})",
                              FittingConfig),
    ("-m", "fitting.preprocess"): ("usage: python -m fitting.preprocess",
                                   f"(default: {PreprocessConfig().min_face_size})", PreprocessConfig),
    ("train_detail_generator.py",): ("usage: train_detail_generator.py [-h] --dataset_path DATASET_PATH",
                                     f"(default: {DetailTrainingConfig().model.latent_grid})", DetailTrainingConfig),
    ("render_3d_face.py",): ("usage: render_3d_face.py", f"(default: {RenderConfig().resolution})", RenderConfig),
    ("-m", "models.uv_albedo_model", "build"): ("usage: python -m models.uv_albedo_model build",
                                                f"(default: {UVAPMBuildConfig().components})", UVAPMBuildConfig),
}


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}"}
    return out


@pytest.mark.parametrize("name", CONFIGS)
def test_yaml_holds_exactly_the_dataclass_defaults(name):
    schema = CONFIGS[name]
    path = REPO / "configs" / name
    written = yaml.safe_load(path.read_text())
    defaults = config_to_dict(schema())
    assert _keys(written) == _keys(defaults), sorted(_keys(written) ^ _keys(defaults))
    assert load_config(schema, path) == schema()


def test_unknown_keys_and_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="shape.refine.nope"):
        load_config(FittingConfig, REPO / "configs" / "fitting.yaml", ["shape.refine.nope=1"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(FittingConfig, None, ["batch_size=many"])


def test_derived_settings_keep_explicit_overrides():
    """'' means "the run's value"; an explicit override of a stage's own value is never replaced."""
    inherited = resolve_config(load_config(FittingConfig, None, ["device=cpu", "checkpoints_dir=ck", "overwrite=true"]))
    assert (inherited.preprocess.device, inherited.preprocess.checkpoints_dir) == ("cpu", "ck")
    assert inherited.preprocess.overwrite
    explicit = resolve_config(load_config(FittingConfig, None, ["device=cpu", "preprocess.device=cuda:1",
                                                                 "preprocess.checkpoints_dir=other"]))
    assert (explicit.preprocess.device, explicit.preprocess.checkpoints_dir) == ("cuda:1", "other")


def test_every_field_is_documented():
    """Each setting appears in its dataclass's docstring (nested groups are documented by their own class)."""

    def walk(schema):
        for field in dataclasses.fields(schema):
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if dataclasses.is_dataclass(default):
                yield from walk(type(default))
            elif field.name not in (schema.__doc__ or ""):
                yield f"{schema.__name__}.{field.name}"

    missing = [name for schema in CONFIGS.values() for name in walk(schema)]
    assert not missing, missing


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_answers_without_loading_torch(command):
    """``--help`` names the command as users type it, shows the dataclass defaults, gives a ``--set`` example
    that is a setting of its own config, and imports no torch."""
    usage, default, schema = COMMANDS[command]
    if command[0].endswith(".sh"):
        run = subprocess.run(["bash", str(REPO / command[0]), "--help"], capture_output=True, text=True, cwd=REPO)
    else:
        probe = ("import runpy, sys; sys.argv = {argv!r}; "
                 "import atexit; atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else 'NO TORCH'))\n"
                 "try:\n    runpy.run_{kind}({target!r}, run_name='__main__')\nexcept SystemExit:\n    pass")
        if command[0] == "-m":
            code = probe.format(argv=[command[1], *command[2:], "--help"], kind="module", target=command[1])
        else:
            code = probe.format(argv=[command[0], "--help"], kind="path", target=command[0])
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert run.stdout.strip().endswith("NO TORCH"), run.stdout[-300:] + run.stderr[-2000:]
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    assert text.startswith(usage) and default in text, text[:400]
    example = re.search(r"e\.g\. --set (\S+)", text).group(1)
    key, value = example.split("=")
    changed = load_config(schema, None, [example])
    assert str(OmegaConf.select(OmegaConf.structured(changed), key)) == value != str(
        OmegaConf.select(OmegaConf.structured(schema()), key))
