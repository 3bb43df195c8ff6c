"""Encode shards into multi-scale token maps with an exported tokenizer, and decode token maps back.

    mars-encode encode --tokenizer EXPORT_DIR --shards URL --out DIR [--batch-size 32]
    mars-encode decode --tokenizer EXPORT_DIR --tokens DIR --out DIR [--limit 8] [--wav]

`encode` writes, per input shard, `DIR/shard-XXXXXX.tokens.npz` with `keys` (note_str), the labels
(pitch, velocity, instrument_family, instrument_source, instrument) and one int32 array per scale
`idx_s{k}` [N, h_k, w_k]; then `DIR/tokens.json` (format, scales, codebook size, the tokenizer and
the shards it came from), written last: its presence means the set is complete. Every file is
written to a temporary name and renamed. `decode` turns token maps back into CMX tensors
(`{key}.cmx.npy`, float32) and, with `--wav`, Griffin-Lim audio, for inspection.
EXPORT_DIR is an export of the tokenizer task's "tokenizer_ema" (or "tokenizer") model.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mars_dist.cli import make_parser, console_script
from mars_dist.device import DEVICE_CHOICES, resolve_device
from mars_dist.errors import UserFileNotFoundError, UserValueError
from mars_dist.generation.loaders import ExportedTokenizer, load_tokenizer
from mars_dist.io.atomic import atomic_write_bytes
from mars_dist.labels import SAMPLE_FIELDS

TOKENS_FORMAT = "mars_dist.tokens/1"
TOKENS_MANIFEST = "tokens.json"


def _tokenizer_on(export_dir: str, device: str) -> tuple[ExportedTokenizer, torch.device]:
    dev = resolve_device(device, 0, key="--device")
    tokenizer = load_tokenizer(Path(export_dir))
    tokenizer.module.to(dev)
    return tokenizer, dev


def encode_shards(export_dir: str, shards_url: str, out_dir: str, batch_size: int = 32, device: str = "auto",
                  storage_options: Optional[Dict[str, Any]] = None) -> Path:
    """Token maps of every sample of a shard set, one .npz per shard; returns the tokens.json path."""
    from mars_dist.data.manifest import read_manifest
    from mars_dist.data.sample_reader import SampleReader, ShardIndex, collate_micro_batch

    exported, dev = _tokenizer_on(export_dir, device)
    tokenizer, config = exported.module, exported.config
    manifest = read_manifest(shards_url, storage_options)
    if tuple(manifest["cmx_shape"]) != tokenizer.in_shape:
        raise UserValueError(f"{shards_url}/manifest.json: cmx_shape {manifest['cmx_shape']} but the tokenizer in "
                             f"{export_dir} was trained on {list(tokenizer.in_shape)}")
    index = ShardIndex.load(shards_url, manifest, storage_options)
    reader = SampleReader(shards_url, storage_options, index, manifest["cmx_shape"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: List[Dict[str, Any]] = []
    for shard_id, shard_name in enumerate(index.shard_names):
        members = np.flatnonzero(index.shard_of_N == shard_id)
        arrays: Dict[str, List[np.ndarray]] = {}
        for start in range(0, len(members), batch_size):
            batch = collate_micro_batch([reader[int(i)] for i in members[start:start + batch_size]])
            with torch.no_grad():
                idx_list = tokenizer.encode(batch["cmx"].to(dev, torch.float32))
            for si, idx in enumerate(idx_list):
                arrays.setdefault(f"idx_s{si}", []).append(idx.cpu().numpy().astype(np.int32))
            for name in SAMPLE_FIELDS:
                arrays.setdefault(name, []).append(batch[name].numpy())
            arrays.setdefault("keys", []).append(np.asarray(batch["key"]))
        name = shard_name.replace(".tar", ".tokens.npz")
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.concatenate(v) for k, v in arrays.items()})
        atomic_write_bytes(out / name, buffer.getvalue())
        written.append({"name": name, "source": shard_name, "num_samples": int(len(members))})
        print(f"{shard_name}: {len(members)} notes -> {out / name}", flush=True)
    meta = {
        "format": TOKENS_FORMAT,
        "tokenizer": str(export_dir),
        "tokenizer_step": config.get("step"),
        "scales": [list(s) for s in tokenizer.scales],
        "codebook_size": tokenizer.quantizer.codebook_size,
        "source": shards_url,
        "source_split": manifest.get("split"),
        "num_samples": sum(s["num_samples"] for s in written),
        "shards": written,
    }
    atomic_write_bytes(out / TOKENS_MANIFEST, json.dumps(meta, indent=1).encode())
    return out / TOKENS_MANIFEST


def read_tokens(tokens_dir: str) -> Dict[str, Any]:
    """tokens.json of a finished encode, checked."""
    path = Path(tokens_dir) / TOKENS_MANIFEST
    if not path.is_file():
        raise UserFileNotFoundError(f"{path}: missing; {tokens_dir} is not a finished `mars-encode encode` output")
    meta = json.loads(path.read_text())
    if meta.get("format") != TOKENS_FORMAT:
        raise UserValueError(f"{path}: format {meta.get('format')!r}, expected {TOKENS_FORMAT!r}")
    return meta


def decode_tokens(export_dir: str, tokens_dir: str, out_dir: str, limit: int = 0, wav: bool = False,
                  device: str = "auto") -> List[str]:
    """Token maps -> `{key}.cmx.npy` (and `{key}.wav`); returns the keys decoded."""
    exported, dev = _tokenizer_on(export_dir, device)
    tokenizer = exported.module
    meta = read_tokens(tokens_dir)
    if [list(s) for s in tokenizer.scales] != meta["scales"] or tokenizer.quantizer.codebook_size != meta["codebook_size"]:
        raise UserValueError(f"{tokens_dir}: token maps of scales {meta['scales']} over {meta['codebook_size']} codes, "
                             f"but the tokenizer {export_dir} has scales {[list(s) for s in tokenizer.scales]} over "
                             f"{tokenizer.quantizer.codebook_size} codes: decode with the tokenizer that encoded them")
    frontend = exported.frontend if wav else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: List[str] = []
    for shard in meta["shards"]:
        with np.load(Path(tokens_dir) / shard["name"]) as data:
            keys = [str(k) for k in data["keys"]]
            idx_all = [data[f"idx_s{si}"] for si in range(len(meta["scales"]))]
        for start in range(0, len(keys), 16):
            take = keys[start:start + 16]
            if limit:
                take = take[:limit - len(done)]
            if not take:
                break
            idx_list = [torch.from_numpy(a[start:start + len(take)]).long().to(dev) for a in idx_all]
            with torch.no_grad():
                cmx = tokenizer.decode_indices(idx_list).float().clamp(-1, 1).cpu()
            for key, x in zip(take, cmx):
                buffer = io.BytesIO()
                np.save(buffer, x.numpy())
                atomic_write_bytes(out / f"{key}.cmx.npy", buffer.getvalue())
                if frontend is not None:
                    import soundfile

                    buffer = io.BytesIO()
                    soundfile.write(buffer, frontend.cmx_to_wave(x).numpy(), frontend.cfg.stft.sample_rate, format="WAV")
                    atomic_write_bytes(out / f"{key}.wav", buffer.getvalue())
                done.append(key)
        if limit and len(done) >= limit:
            break
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser("mars-encode", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="shards -> token maps")
    enc.add_argument("--tokenizer", required=True, help="exported tokenizer folder (model.safetensors + config.json)")
    enc.add_argument("--shards", required=True, help="shard folder or s3:// prefix holding manifest.json")
    enc.add_argument("--out", required=True)
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    dec = sub.add_parser("decode", help="token maps -> CMX (.cmx.npy) and optionally Griffin-Lim .wav")
    dec.add_argument("--tokenizer", required=True, help="exported tokenizer folder")
    dec.add_argument("--tokens", required=True, help="output folder of `encode`")
    dec.add_argument("--out", required=True)
    dec.add_argument("--limit", type=int, default=0, help="decode at most this many notes (0 = all)")
    dec.add_argument("--wav", action="store_true", help="also write Griffin-Lim audio")
    dec.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1 or getattr(args, "limit", 0) < 0:
        parser.error("--batch-size must be >= 1 and --limit >= 0")
    if args.command == "encode":
        path = encode_shards(args.tokenizer, args.shards, args.out, args.batch_size, args.device)
        print(f"wrote {path}")
    else:
        keys = decode_tokens(args.tokenizer, args.tokens, args.out, args.limit, args.wav, args.device)
        print(f"decoded {len(keys)} notes into {args.out}")
    return 0


entry = console_script(main, "mars-encode")


if __name__ == "__main__":
    entry()
