"""Every change of the export format and of stored run configs, in one place: older files are
upgraded when read, so exports and checkpoints written by earlier versions keep working.

- format 1 -> 2: run configs from before tasks owned their settings (only the task's own section is
  kept; the discriminator's lr moved from optim.disc_lr to tokenizer.disc.lr). Checkpoints of that
  time store such run configs too (`upgrade_run_config`).
- format 2 -> 3: exports stored the whole run config; now they store the builder key, the
  architecture and the builder's inputs (mars_dist/io/exports.py). The next-scale AR, once the task
  `ar` with the section `ar:`, is the family `next_scale`.

The tables below are snapshots of the old formats (which keys of a format-2 section were training
settings rather than architecture), not imports of today's code: an old file means what it meant
when it was written.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

from mars_dist.errors import UserValueError

FORMAT_1, FORMAT_2 = "mars_dist.export/1", "mars_dist.export/2"
CURRENT_FORMAT = "mars_dist.export/3"
READABLE_FORMATS = (FORMAT_1, FORMAT_2, CURRENT_FORMAT)

# The renamed generator: task, section and trained model "ar" are the family "next_scale".
RENAMED_TASKS = {"ar": "next_scale"}
# Format-2 run-config sections: the keys that configured training, not the model's architecture.
TRAINING_KEYS = {
    "tokenizer": {"lambda_recon", "lambda_vq", "lambda_adv", "ema_decay", "disc"},
    "classifier": {"family_weight", "label_smoothing", "gain_db", "valid_limit", "valid_batch"},
    "generator": {"tokenizer_path", "media_notes", "media_cfg_scale", "media_top_p"},
}
DISCRIMINATOR_TRAINING_KEYS = {"start_step", "max_adaptive_weight", "lr"}
# Provenance fields kept as they were.
PROVENANCE = ("step", "checkpoint", "backend", "shapes", "num_parameters", "data_info")


class ExportError(UserValueError):
    """A folder that is not a finished export of a readable format (or one that lacks what its format
    always held)."""


def upgrade_run_config(values: Dict[str, Any]) -> Dict[str, Any]:
    """A run config stored before tasks owned their settings (format-1 exports, checkpoints of that
    time) -> the later layout; a later config is returned unchanged."""
    if "disc_lr" not in values.get("optim", {}):
        return values
    upgraded = copy.deepcopy(values)
    disc_lr = upgraded["optim"].pop("disc_lr")
    task = upgraded.get("task", "tokenizer")
    for section in ("tokenizer", "ar"):
        if section != task:
            upgraded.pop(section, None)
    if task == "tokenizer":
        upgraded.setdefault("tokenizer", {}).setdefault("disc", {})["lr"] = disc_lr
    return upgraded


def _without(section: Dict[str, Any], keys) -> Dict[str, Any]:
    return {k: v for k, v in section.items() if k not in keys}


def _format2_to_3(config: Dict[str, Any], where: str) -> Dict[str, Any]:
    """What a format-2 export's run config says, as builder + architecture + inputs."""
    try:
        run, task, model = config["run_config"], config["task"], config["model"]
        audio, data_info = run["audio"], config.get("data_info", {})
        if task == "tokenizer" and model == "discriminator":
            section = run["tokenizer"]["disc"]
            builder, arch = "patchgan", _without(section, DISCRIMINATOR_TRAINING_KEYS)
            inputs = {"in_channels": int(data_info["cmx_shape"][0])}
        elif task == "tokenizer":
            builder, arch = "tokenizer", _without(run["tokenizer"], TRAINING_KEYS["tokenizer"])
            inputs = {"cmx_shape": [int(v) for v in data_info["cmx_shape"]]}
        elif task == "classifier":
            builder, arch = "classifier", _without(run["classifier"], TRAINING_KEYS["classifier"])
            stft = audio["stft"]
            inputs = {"spec_shape": [int(stft["n_fft"]) // 2, int(stft["num_frames"])]}
        else:  # a generator task: its section is named like the task (the part after ':' for an outside one)
            section = run[task.rpartition(":")[2]]
            builder, arch, inputs = RENAMED_TASKS.get(task, task), _without(section, TRAINING_KEYS["generator"]), {}
    except (KeyError, TypeError, IndexError) as err:
        raise ExportError(f"{where}: a {FORMAT_2} export without {err} (damaged? re-export the checkpoint)") from None
    upgraded = {"format": CURRENT_FORMAT, "builder": builder, "architecture": arch, "inputs": inputs, "audio": audio,
                "model": RENAMED_TASKS.get(model, model), "task": RENAMED_TASKS.get(task, task)}
    upgraded.update({k: config[k] for k in PROVENANCE if k in config})
    return upgraded


def upgrade(config: Dict[str, Any], where: str) -> Dict[str, Any]:
    """An export's config.json of any readable format -> the current format."""
    if config["format"] == FORMAT_1:
        config = {**config, "format": FORMAT_2, "run_config": upgrade_run_config(config["run_config"])}
    if config["format"] == FORMAT_2:
        config = _format2_to_3(config, where)
    return config
