"""The command line: help, and one clear line (no traceback) for every kind of bad input."""

import dataclasses
import shutil

import pytest

from gensis.config.compose import compose_config, experiment_presets
from gensis.config.tile import TileConfig
from gensis.errors import GensisError
from tests.conftest import run_cli


# every command the README documents, with one key each command's --help must list
DOCUMENTED = {"tile": "slides", "stage1": "data.path", "embed": "encoder", "eval": "encoder", "stage2": "encoder",
              "autoencoder": "data.path", "generate": "diffusion", "assess": "diffusion", "stage3": "views",
              "synth": "out", "demo": "out", "features": "tiles", "mil": "labels"}


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(DOCUMENTED)
    assert "GENSIS_DEBUG=1" in result.stdout


@pytest.mark.parametrize("command, key", sorted(DOCUMENTED.items()))
def test_every_command_has_help_with_its_keys(command, key):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert key in {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}


def test_paths_with_any_letters_work_as_plain_arguments(synthetic_slide, tmp_path):
    """Non-ASCII letters, spaces, commas, brackets, '=', quotes and a backslash: Hydra's grammar refuses them
    unquoted; gensis quotes every text setting itself."""
    folder = tmp_path / "é, [1]=x"
    folder.mkdir()
    slide = folder / "cas 'é' \\ 1.svs"
    shutil.copy(synthetic_slide, slide)
    tiles = tmp_path / "tiles=é, [a]"
    result = run_cli("tile", f"slides={slide}", f"out={tiles}", "experiment=tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tiles / "coords" / "cas 'é' \\ 1.h5").is_file()
    run = tmp_path / "run é=[2], \\"
    result = run_cli("stage1", f"data.path={tiles}", f"out={run}", "experiment=tiny", "trainer.max_steps=1",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_cli("embed", f"data.path={tiles}", f"encoder={run}", f"out={tmp_path / 'e, [b]=é.h5'}",
                     "experiment=tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e, [b]=é.h5").is_file()


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


def test_a_config_folder_of_ones_own_may_be_given_relative_to_the_working_directory(tmp_path, monkeypatch):
    from gensis.config.compose import config_dir

    shutil.copytree(config_dir(), tmp_path / "my_configs")
    (tmp_path / "my_configs" / "experiment" / "tiny.yaml").write_text("# @package _global_\ntile:\n  size: 40\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENSIS_CONFIG_DIR", "my_configs")
    assert compose_config("tile", TileConfig, ["slides=a", "out=b", "experiment=tiny"]).tile.size == 40


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
                "stage3": ["data.path=a", "views=b", "out=c"], "features": ["encoder=a", "tiles=b", "out=c"],
                "mil": ["features=a", "labels=b", "out=c"]}
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
