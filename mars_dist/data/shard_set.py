"""A shard set opened for random access by index (evaluation, validation passes), its manifest checked
against the audio settings of the model that will read it."""
from __future__ import annotations

from typing import Any, Dict, Optional

from mars_dist.data.manifest import ManifestError, check_compatible, manifest_url, read_manifest
from mars_dist.data.sample_reader import AUDIO_MEMBER, SampleReader, ShardFormatError, ShardIndex
from mars_dist.errors import UserValueError


class ShardSetError(UserValueError):
    """A shard set that cannot be read, or was made with other audio settings than the model's."""


def open_shard_set(url: str, audio_cfg: Any, storage_options: Optional[Dict[str, Any]] = None,
                   with_audio: Optional[bool] = None):
    """(manifest, SampleReader) of a shard set whose audio numbers must be `audio_cfg`'s.

    `with_audio=None` decodes the stored originals when the set has them. Problems with the set
    (no manifest, other audio settings) are ShardSetError, a user error naming the set.
    """
    try:
        manifest = read_manifest(url, storage_options)
        check_compatible(manifest, audio_cfg, where=manifest_url(url))
        has_audio = AUDIO_MEMBER in manifest.get("members", [])
        if with_audio and not has_audio:
            raise ShardSetError(f"{url}: the shards hold no original audio (write them with --with-audio)")
        index = ShardIndex.load(url, manifest, storage_options)
    except (ManifestError, ShardFormatError) as err:
        raise ShardSetError(str(err)) from None
    reader = SampleReader(url, storage_options, index, manifest["cmx_shape"],
                          with_audio=has_audio if with_audio is None else with_audio)
    return manifest, reader
