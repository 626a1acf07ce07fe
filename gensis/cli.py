"""``gensis COMMAND key=value ...``: compose ``configs/COMMAND.yaml`` (Hydra), validate, dispatch.

Bad input ends in one line on stderr naming the key, value or file, and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

from gensis.errors import GensisError


def _load(target: str):
    """The object at ``"module:attribute"``, imported on first use (so that --help stays fast)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    schema_target: str   # "module:ConfigClass"
    run_target: str      # "module:function" taking the validated config

    def schema(self) -> type:
        return _load(self.schema_target)

    def run(self, cfg) -> int:
        return _load(self.run_target)(cfg)


def run_tile(cfg) -> int:
    from gensis.slides.shards import merge_tilings
    from gensis.slides.tiling import print_summary, run_tiling

    if cfg.merge:
        merge_tilings(Path(cfg.out))
        return 0
    summary = run_tiling(cfg)
    print_summary(summary)
    if summary.failed and not cfg.skip_errors:
        print(f"gensis tile: {len(summary.failed)} slide(s) failed; fix them and re-run to resume, "
              f"or pass skip_errors=true", file=sys.stderr)
        return 1
    return 0


def run_synth(cfg) -> int:
    from gensis.slides.synthetic import write_cohort, write_synthetic_slide

    if cfg.cohort > 0:
        csv_path = write_cohort(cfg.out, cfg.cohort, size=min(cfg.width, cfg.height), mpp=cfg.mpp, seed=cfg.seed,
                                lesion_radius_um=cfg.lesion_um, progress=cfg.progress)
        print(f"wrote {cfg.cohort} slides ({min(cfg.width, cfg.height)} px at {cfg.mpp} um/px) and {csv_path}")
        return 0
    path = write_synthetic_slide(cfg.out, cfg.width, cfg.height, cfg.mpp, cfg.seed, cfg.level_factor,
                                 progress=cfg.progress, stain=cfg.stain)
    print(f"wrote {path} ({cfg.width} x {cfg.height} px at {cfg.mpp} um/px) and its label map")
    return 0


COMMANDS = {
    "tile": Command("tile", "cut whole-slide images into tissue tiles (coords, tiles.h5 or images, QC, manifest)",
                    "gensis.config.tile:TileConfig", "gensis.cli:run_tile"),
    "stage1": Command("stage1", "train the stage-1 DINO encoder on tiles",
                      "gensis.config.stage1:Stage1Config", "stages.stage1:run"),
    "embed": Command("embed", "embed every tile with an encoder run into embeddings.h5",
                     "gensis.config.features:EmbedConfig", "gensis.evaluation.embed_run:run"),
    "features": Command("features", "per-slide tile features <slide>.h5 (features, coords) for MIL (CLAM, TRIDENT)",
                        "gensis.config.features:SlideFeaturesConfig", "gensis.evaluation.slide_features:run"),
    "mil": Command("mil", "slide-level gated attention MIL on gensis features, k-fold cross-validated (metrics.json)",
                   "gensis.config.mil:MILConfig", "gensis.evaluation.mil_run:run"),
    "eval": Command("eval", "kNN and linear probe of an encoder on labeled tiles (metrics.json, report.md)",
                    "gensis.config.features:EvalConfig", "gensis.evaluation.eval_run:run"),
    "stage2": Command("stage2", "train the stage-2 diffusion model that draws tiles from stage-1 embeddings",
                      "gensis.config.stage2:Stage2Config", "stages.stage2:run"),
    "autoencoder": Command("autoencoder", "train an AutoencoderKL on tiles for latent-space stage 2 (out/vae)",
                           "gensis.config.stage2:AutoencoderConfig", "stages.autoencoder:run"),
    "generate": Command("generate", "draw K views of every tile and M interpolated images into views.h5",
                        "gensis.config.stage2:GenerateConfig", "gensis.diffusion.generate_run:run"),
    "assess": Command("assess", "fidelity, diversity and interpolation of a stage-2 model (generation.md)",
                      "gensis.config.stage2:AssessConfig", "gensis.evaluation.generation_quality:run"),
    "stage3": Command("stage3", "train the stage-3 Gen-DINO encoder on tiles, their generated views and "
                      "interpolations", "gensis.config.stage3:Stage3Config", "stages.stage3:run"),
    "synth": Command("synth", "write the built-in synthetic H&E-like slide with known tissue regions",
                     "gensis.config.demo:SynthConfig", "gensis.cli:run_synth"),
    "demo": Command("demo", "the whole pipeline on the built-in synthetic slide, ending in report.md",
                    "gensis.config.demo:DemoConfig", "gensis.demo_run:run"),
}


def _usage() -> str:
    lines = ["usage: gensis COMMAND [key=value ...]   (gensis COMMAND --help for its keys)", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {name.ljust(width)}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "any command takes experiment=tiny to run in seconds on a CPU",
              "errors are one line; set GENSIS_DEBUG=1 to see the traceback of an unexpected one"]
    return "\n".join(lines)


def _command_help(command: Command) -> str:
    from gensis.config.compose import describe_schema

    schema = command.schema()
    defaults = _yaml_defaults(command.name)
    rows = describe_schema(schema)
    lines = [f"usage: gensis {command.name} [key=value ...]   (GENSIS_DEBUG=1: tracebacks of unexpected errors)",
             "", command.help, "", "keys (default):"]
    width = max(len(k) for k, _, _ in rows)
    for key, default, text in rows:
        shown = defaults.get(key, default)
        lines.append(f"  {key.ljust(width)}  {shown!s:<12}  {text}")
    return "\n".join(lines)


def _yaml_defaults(name: str) -> dict:
    from omegaconf import OmegaConf

    from gensis.config.compose import config_dir

    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    flat = {}

    def walk(node, prefix):
        for key in node:
            if key == "defaults":
                continue
            value = node._get_node(key)
            if OmegaConf.is_dict(value):
                walk(value, prefix + str(key) + ".")
            else:
                raw = value._value()
                flat[prefix + str(key)] = "(required)" if raw == "???" else ("null" if raw is None else raw)

    walk(cfg, "")
    return flat


def _all_blocks() -> set:
    blocks = set()
    for command in COMMANDS.values():
        blocks |= {f.name for f in dataclasses.fields(command.schema())}
    return blocks


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gensis: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    if any(a in ("-h", "--help") for a in args):
        print(_command_help(command))
        return 0
    try:
        from gensis.config.compose import compose_config
        from gensis.quiet_logs import quiet_third_party

        quiet_third_party()

        cfg = compose_config(name, command.schema(), args, other_blocks=_all_blocks())
        return int(command.run(cfg) or 0)
    except GensisError as err:
        print(f"gensis {name}: error: {_one_line(err).removeprefix(f'gensis {name}: ')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gensis {name}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # unexpected: one line, the traceback only when asked for
        if os.environ.get("GENSIS_DEBUG"):
            raise
        from gensis.errors import disk_full_error, is_disk_full

        message = str(disk_full_error(None, err)) if is_disk_full(err) else f"{type(err).__name__}: {_one_line(err)}"
        print(f"gensis {name}: error: {message} (GENSIS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    """An error's message on one line; for one re-raised from a DataLoader worker, the worker's own message."""
    text = str(err)
    if "Original Traceback" in text:  # torch wraps a worker's exception with the worker's traceback
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]
