"""The shard set's manifest: names and layout, reading + validation, and the audio-config check.

`manifest.json` (format "mars_dist.shards/1", see docs/data.md) is written last by
data_tools.shard; a reader trusts a shard set only through it. `check_compatible` is how a run
refuses shards made with other audio numbers than its own: feeding a model spectrograms of a
different scale or CMX layout trains silently on the wrong thing.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional

from mars_dist.audio.config import AudioConfig
from mars_dist.audio.frontend import AudioFrontend
from mars_dist.data import fs
from mars_dist.data.remote import RemoteShardSet
from mars_dist.errors import UserValueError

FORMAT = "mars_dist.shards/1"
MANIFEST_NAME = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(UserValueError):
    """manifest.json is missing, malformed, or not compatible with the run: the shards a user named are
    not what the command needs (one error line, exit 2)."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def index_name(index: int) -> str:
    """The sidecar with each sample's byte range in shard `index` (also its completion record)."""
    return f"shard-{index:06d}.index.json"


def manifest_url(url: str) -> str:
    """`url` names the shard folder / prefix, or manifest.json itself."""
    return url if url.endswith(".json") else fs.join(url, MANIFEST_NAME)


def read_manifest(url: str, storage_options: Optional[Mapping[str, Any]] = None,
                  remote: Optional[RemoteShardSet] = None) -> Dict[str, Any]:
    """The validated manifest of the shard set at `url` (folder, s3:// prefix, or the manifest file).

    With `remote` (the shard set's RemoteShardSet), an S3 read is retried under its policy.
    """
    path = manifest_url(url)
    missing = ManifestError(f"{path}: no manifest. Either nothing was sharded here or sharding did not finish "
                            "(the manifest is written last); run mars-shard again to complete it")
    if remote is not None and fs.is_s3(url) and not url.endswith(".json"):
        try:
            blob = remote.read(MANIFEST_NAME)
        except FileNotFoundError:
            raise missing from None
    else:
        if not fs.exists(path, storage_options):
            raise missing
        blob = fs.read_bytes(path, storage_options)
    try:
        manifest = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    validate_manifest(manifest, path)
    return manifest


def _expect(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise ManifestError(f"{where}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_manifest(manifest: Any, where: str) -> None:
    """Raise ManifestError naming the first field that does not follow the documented format."""
    _expect(isinstance(manifest, dict), where, f"expected a JSON object, got {type(manifest).__name__}")
    _expect(manifest.get("format") == FORMAT, where, f"format={manifest.get('format')!r}, expected {FORMAT!r}")
    required = {"split": str, "audio": dict, "cmx_shape": list, "num_samples": int, "shards": list,
                "channel_mean": list, "channel_std": list, "skipped": list, "seed": int, "created": str}
    for key, kind in required.items():
        value = manifest.get(key)
        ok = _is_int(value) if kind is int else isinstance(value, kind)
        _expect(ok, where, f"field {key!r}={value!r}: expected {kind.__name__}")
    shape = manifest["cmx_shape"]
    _expect(len(shape) == 3 and all(_is_int(d) and d > 0 for d in shape), where,
            f"cmx_shape={shape!r}: expected [C, H, W] of positive integers")
    for key in ("channel_mean", "channel_std"):
        _expect(len(manifest[key]) == shape[0] and all(isinstance(v, (int, float)) for v in manifest[key]),
                where, f"{key} has {len(manifest[key])} entries, expected one number per channel ({shape[0]})")
    for i, shard in enumerate(manifest["shards"]):
        at = f"shards[{i}]"
        _expect(isinstance(shard, dict), where, f"{at}: expected an object")
        for key in ("name", "index", "sha256"):
            _expect(isinstance(shard.get(key), str), where, f"{at}.{key}={shard.get(key)!r}: expected a string")
        for key in ("num_samples", "bytes"):
            _expect(_is_int(shard.get(key)) and shard[key] >= 0, where,
                    f"{at}.{key}={shard.get(key)!r}: expected a non-negative integer")
        _expect(bool(_SHA256.match(shard["sha256"])), where, f"{at}.sha256={shard['sha256']!r}: expected 64 hex digits")
    total = sum(s["num_samples"] for s in manifest["shards"])
    _expect(total == manifest["num_samples"], where,
            f"num_samples={manifest['num_samples']} but the shards list {total} samples")
    for i, item in enumerate(manifest["skipped"]):
        _expect(isinstance(item, dict) and isinstance(item.get("note_str"), str)
                and isinstance(item.get("problem"), str), where,
                f"skipped[{i}]={item!r}: expected {{note_str, problem}}")


def _flatten(tree: Any, prefix: str) -> Dict[str, Any]:
    if isinstance(tree, dict):
        flat: Dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{key}"))
        return flat
    return {prefix: tree}


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


def audio_differences(manifest_audio: Mapping[str, Any], run_audio: Mapping[str, Any]) -> List[str]:
    """'audio.key: manifest X, run Y' for every leaf that differs (JSON-normalised, so tuples == lists)."""
    ours = _flatten(json.loads(json.dumps(run_audio)), "audio")
    theirs = _flatten(json.loads(json.dumps(manifest_audio)), "audio")
    missing = _Absent()
    return [f"{key}: manifest {theirs.get(key, missing)!r}, run {ours.get(key, missing)!r}"
            for key in sorted(set(ours) | set(theirs)) if ours.get(key, missing) != theirs.get(key, missing)]


def check_compatible(manifest: Mapping[str, Any], audio_cfg: AudioConfig, where: str = "shard manifest") -> None:
    """Raise ManifestError (a ValueError) naming every audio/CMX number where the shards differ from the run."""
    frontend = AudioFrontend(audio_cfg)
    differences = audio_differences(manifest["audio"], frontend.describe())
    if list(manifest["cmx_shape"]) != list(frontend.cmx_shape):
        differences.append(f"cmx_shape: manifest {list(manifest['cmx_shape'])}, run {list(frontend.cmx_shape)}")
    if differences:
        raise ManifestError(f"{where}: the shards were made with other audio settings than this run's "
                            f"(re-shard, or set the run's audio config to match):\n  " + "\n  ".join(differences))
