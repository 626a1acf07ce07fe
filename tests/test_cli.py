"""The command line: help, and one clear line (no traceback) for every kind of bad input."""

import dataclasses

import pytest

from gensis.config.compose import compose_config, experiment_presets
from gensis.config.tile import TileConfig
from gensis.errors import GensisError
from tests.conftest import run_cli


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("tile", "stage1", "embed", "eval", "synth", "demo"):
        assert f"  {command} " in result.stdout


def test_command_help_shows_keys_and_defaults():
    result = run_cli("tile", "--help")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "224" in lines["tile.size"]
    assert "(required)" in lines["slides"]
    assert "h5" in lines["tile.format"]


@pytest.mark.parametrize("args, words", [
    (["slides=x", "out=y", "tile.bogus=1"], ["unknown key", "tile.bogus"]),
    (["slides=x", "out=y", "tile.size=abc"], ["tile.size", "abc"]),
    (["out=y"], ["missing required key", "slides"]),
    (["slides=does/not/exist", "out=y"], ["does/not/exist", "no such file"]),
    (["slides=x", "out=y", "tile.format=gif"], ["tile.format", "gif"]),
    (["slides=x", "out=y", "experiment=nope"], ["experiment/nope", "tiny"]),
    (["slides", "out=y"], ["'slides'", "key=value"]),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, words):
    result = run_cli("tile", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message


def test_unknown_command(tmp_path):
    result = run_cli("tiles", cwd=tmp_path)
    assert result.returncode == 2 and "unknown command 'tiles'" in result.stderr


def test_experiment_tiny_and_overrides_compose():
    from gensis.cli import _all_blocks

    cfg = compose_config("tile", TileConfig, ["slides=a", "out=b", "experiment=tiny", "tile.size=48"],
                         other_blocks=_all_blocks())
    assert isinstance(cfg, TileConfig)
    assert cfg.tile.size == 48          # the user's override wins over the preset
    assert cfg.tile.mpp == 2.0          # from the preset
    assert cfg.workers == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tile.size = 3               # configs are frozen


def test_value_checks_name_the_key():
    with pytest.raises(GensisError, match="tile.min_tissue"):
        compose_config("tile", TileConfig, ["slides=a", "out=b", "tile.min_tissue=2"])


@pytest.mark.parametrize("preset", experiment_presets())
def test_every_preset_composes_for_every_command(preset):
    from gensis.cli import COMMANDS, _all_blocks

    required = {"tile": ["slides=a", "out=b"], "stage1": ["data.path=a", "out=b"],
                "embed": ["encoder=a", "data.path=b", "out=c"], "eval": ["encoder=a", "out=b"],
                "synth": ["out=a.svs"], "demo": [], "stage2": ["data.path=a", "encoder=b", "out=c"],
                "autoencoder": ["data.path=a", "out=b"],
                "generate": ["diffusion=a", "encoder=b", "data.path=c", "out=d"],
                "assess": ["diffusion=a", "encoder=b", "data.path=c", "out=d"],
                "stage3": ["data.path=a", "views=b", "out=c"]}
    for name, command in COMMANDS.items():
        compose_config(name, command.schema(), [*required[name], f"experiment={preset}"], other_blocks=_all_blocks())


def test_resume_compares_settings_with_the_runs_config(tmp_path):
    from gensis.cli import _all_blocks
    from gensis.config.compose import to_yaml
    from gensis.config.stage3 import Stage3Config
    from gensis.training.run_dir import changed_settings

    def config(*overrides):
        return compose_config("stage3", Stage3Config, ["data.path=a", "views=b", f"out={tmp_path}",
                                                        "experiment=tiny", *overrides], other_blocks=_all_blocks())

    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(config()))
    assert changed_settings(saved, config()) == []
    # more epochs, other workers, monitoring: a resume may change them
    assert changed_settings(saved, config("optim.epochs=9", "data.workers=0", "data.val=c")) == []
    assert changed_settings(saved, config("gen.p=0.25", "dino.out_dim=32")) == ["dino.out_dim: 256 -> 32",
                                                                               "gen.p: 0.5 -> 0.25"]
    # a run saved before the schema gained a key reads that key as its default, not as a change
    saved.write_text("\n".join(line for line in saved.read_text().splitlines() if "source_size" not in line))
    assert changed_settings(saved, config()) == []


def test_another_commands_key_given_as_an_argument_is_refused():
    result = run_cli("stage1", "data.path=a", "out=b", "experiment=cpu_quality", "train.epochs=11")
    assert result.returncode == 2
    assert "'train.epochs' is not a setting of this command" in result.stderr and "Traceback" not in result.stderr
