"""Random access to single samples of a shard set, through the index sidecars' byte ranges.

A sample is one byte range of its tar, parsed by webdataset's tar iterator and decoded by
webdataset's decoder. Where the bytes come from is a source (mars_dist.data.shard_source): the
local folder, one ranged GET per sample on S3, or a whole shard in the node's cache. Random access
is what lets the stream's order be a pure function of (seed, epoch, position), independent of
how shards fall onto ranks and workers (see docs/data.md, "Stream").
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_iterator

from mars_dist.data import fs as storage
from mars_dist.data.remote import RemoteShardSet
from mars_dist.data.retry import RetryConfig
from mars_dist.data.shard_source import direct_source
from mars_dist.labels import SAMPLE_FIELDS

_MEMBERS = ("cmx.npy", "json")  # the optional .flac is not needed for training and is not decoded
AUDIO_MEMBER = "flac"  # the original note, present when the shards were written with --with-audio


class ShardFormatError(ValueError):
    """An index sidecar or a tar does not match the manifest or the documented shard format."""


class ShardIndex:
    """Where sample i (manifest shard order, then order inside the shard) lives: shard, bytes, key."""

    def __init__(self, shard_names: Sequence[str], keys: Sequence[str], shard_of_N: np.ndarray,
                 range_N2: np.ndarray):
        self.shard_names = list(shard_names)
        self.keys_N = np.asarray(keys, dtype=np.str_)  # one buffer: shared by forked workers, no refcounts
        self.shard_of_N = shard_of_N
        self.range_N2 = range_N2

    def __len__(self) -> int:
        return len(self.keys_N)

    @classmethod
    def load(cls, url: str, manifest: Dict[str, Any], storage_options: Optional[Dict[str, Any]],
             remote: Optional[RemoteShardSet] = None) -> "ShardIndex":
        """Read every shard's index sidecar and check it against the manifest.

        On S3 the sidecars are fetched concurrently and retried (through `remote` if given).
        """
        shards = manifest["shards"]
        if not shards:
            raise ShardFormatError(f"{storage.join(url, 'manifest.json')}: lists no shards")
        names = [s["index"] for s in shards]
        if storage.is_s3(url):
            try:
                blobs = (remote or RemoteShardSet(url, storage_options, RetryConfig())).read_many(names)
            except FileNotFoundError as exc:
                raise ShardFormatError(f"cannot read an index sidecar: {exc}") from exc
        else:
            blobs = []
            for name in names:
                try:
                    with open(os.path.join(url, name), "rb") as f:
                        blobs.append(f.read())
                except OSError as exc:
                    raise ShardFormatError(f"{storage.join(url, name)}: cannot read the index sidecar: {exc}") from exc
        keys: List[str] = []
        shard_ids, ranges = [], []
        for shard_id, (shard, blob) in enumerate(zip(shards, blobs)):
            where = storage.join(url, shard["index"])
            sidecar = json.loads(blob)
            n = int(shard["num_samples"])
            if len(sidecar.get("keys", ())) != n or len(sidecar.get("ranges", ())) != n:
                raise ShardFormatError(f"{where}: {len(sidecar.get('keys', ()))} keys and "
                                       f"{len(sidecar.get('ranges', ()))} ranges, but the manifest says "
                                       f"{shard['name']} holds {n} samples")
            keys.extend(sidecar["keys"])
            shard_ids.append(np.full(n, shard_id, dtype=np.int32))
            ranges.append(np.asarray(sidecar["ranges"], dtype=np.int64).reshape(n, 2))
        return cls([s["name"] for s in shards], keys, np.concatenate(shard_ids), np.concatenate(ranges))


class SampleReader(torch.utils.data.Dataset):
    """Map-style dataset over a shard set: reader[i] is sample i as numpy CMX + labels + key.

    `with_audio=True` also decodes the stored original note ("audio": float32 [num_samples]),
    for evaluation against the real waveform; the shard set must have been written --with-audio.
    `source` (mars_dist.data.shard_source) says where the bytes come from; by default straight
    from `url` (local reads, or one ranged GET per sample on S3). Sources open files and
    filesystems lazily in each process that reads (DataLoader workers included), never inherited
    through fork: s3fs clients are not fork-safe.
    """

    def __init__(self, url: str, storage_options: Optional[Dict[str, Any]], index: ShardIndex,
                 cmx_shape: Sequence[int], with_audio: bool = False, source=None):
        self.url = url
        self.index = index
        self.cmx_shape = tuple(cmx_shape)
        self.members = _MEMBERS + ((AUDIO_MEMBER,) if with_audio else ())
        self._decode = wds.autodecode.Decoder([], only=list(_MEMBERS))
        self.source = source or direct_source(url, storage_options, [{"name": n} for n in index.shard_names])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        shard_id = int(self.index.shard_of_N[i])
        start, end = (int(v) for v in self.index.range_N2[i])
        where = f"{self.source.where(shard_id)} bytes [{start}, {end})"
        blob = self.source.read(shard_id, start, end)
        members = ({**m, "__url__": where} for m in tar_file_iterator(
            io.BytesIO(blob), select_files=lambda name: name.endswith(self.members)))
        samples = list(group_by_keys(members))
        key = str(self.index.keys_N[i])
        if len(samples) != 1 or samples[0]["__key__"] != key or not all(m in samples[0] for m in self.members):
            found = [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in samples]
            raise ShardFormatError(f"{where}: expected sample {key!r} with members {list(self.members)}, found {found}; "
                                   "the index sidecar does not match the tar (or, for the .flac, the shards were "
                                   "written without --with-audio)")
        sample = self._decode(samples[0])
        cmx = sample["cmx.npy"]
        if cmx.shape != self.cmx_shape or cmx.dtype != np.float16:
            raise ShardFormatError(f"{where}: {key}.cmx.npy is {cmx.dtype} {list(cmx.shape)}, "
                                   f"expected float16 {list(self.cmx_shape)} (manifest cmx_shape)")
        labels = sample["json"]
        missing = [f for f in SAMPLE_FIELDS if not isinstance(labels.get(f), int)]
        if missing:
            raise ShardFormatError(f"{where}: {key}.json lacks integer fields {missing}")
        item = {"key": key, "cmx": cmx, **{f: labels[f] for f in SAMPLE_FIELDS}}
        if AUDIO_MEMBER in self.members:
            item["audio"] = sf.read(io.BytesIO(samples[0][AUDIO_MEMBER]), dtype="float32")[0]
        return item


def collate_micro_batch(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Samples -> a micro-batch: cmx float16 [m, C, H, W] as stored, LongTensor labels [m], keys."""
    batch: Dict[str, Any] = {"cmx": torch.from_numpy(np.stack([s["cmx"] for s in samples]))}
    for field in SAMPLE_FIELDS:
        batch[field] = torch.tensor([s[field] for s in samples], dtype=torch.long)
    batch["key"] = [s["key"] for s in samples]
    return batch
