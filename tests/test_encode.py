"""`python -m mars_dist.encode encode/decode` on real tiny shards with an exported tiny tokenizer."""
import json

import numpy as np
import pytest
import torch

from mars_dist.data.sample_reader import SampleReader, ShardIndex
from mars_dist.encode import main, read_tokens
from mars_dist.models.builders import load_model
from tests.ar_exports import tokenizer_export


@pytest.fixture(scope="module")
def exported_tokenizer(tmp_path_factory):
    return tokenizer_export(tmp_path_factory.mktemp("tok_export"))


def test_encode_writes_token_maps_that_match_the_tokenizer_and_decode_inverts_them(tiny_shards, exported_tokenizer, tmp_path):
    tokens_dir, decoded_dir = tmp_path / "tokens", tmp_path / "decoded"
    assert main(["encode", "--tokenizer", str(exported_tokenizer), "--shards", tiny_shards["valid"],
                 "--out", str(tokens_dir), "--batch-size", "4", "--device", "cpu"]) == 0
    meta = read_tokens(str(tokens_dir))
    manifest = tiny_shards["manifests"]["valid"]
    assert meta["num_samples"] == manifest["num_samples"] == 16
    assert [s["num_samples"] for s in meta["shards"]] == [s["num_samples"] for s in manifest["shards"]]
    assert not list(tokens_dir.glob(".*")), "no temporary files left"

    tokenizer, _ = load_model(exported_tokenizer, expected=("tokenizer",))
    index = ShardIndex.load(tiny_shards["valid"], manifest, None)
    reader = SampleReader(tiny_shards["valid"], None, index, manifest["cmx_shape"])
    with np.load(tokens_dir / meta["shards"][0]["name"]) as data:
        keys = list(data["keys"])
        idx0 = [torch.from_numpy(data[f"idx_s{si}"]).long() for si in range(len(meta["scales"]))]
        pitch = data["pitch"]
    by_key = {sample["key"]: sample for sample in (reader[i] for i in range(len(reader)))}
    samples = [by_key[k] for k in keys]
    assert list(pitch) == [s["pitch"] for s in samples]
    expected = tokenizer.encode(torch.from_numpy(np.stack([s["cmx"] for s in samples])).float())
    for si, (got, want) in enumerate(zip(idx0, expected)):
        assert torch.equal(got, want), f"scale {si}: stored token map differs from tokenizer.encode"

    assert main(["decode", "--tokenizer", str(exported_tokenizer), "--tokens", str(tokens_dir),
                 "--out", str(decoded_dir), "--limit", "2", "--device", "cpu"]) == 0
    decoded = sorted(decoded_dir.glob("*.cmx.npy"))
    assert len(decoded) == 2
    x = np.load(decoded_dir / f"{keys[0]}.cmx.npy")
    with torch.no_grad():
        want = tokenizer.decode_indices([i[:1] for i in idx0]).clamp(-1, 1)[0].numpy()
    np.testing.assert_allclose(x, want, atol=1e-5)


def test_decode_rejects_a_foreign_tokens_folder(exported_tokenizer, tmp_path):
    (tmp_path / "tokens.json").write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ValueError, match="mars_dist.tokens/1"):
        main(["decode", "--tokenizer", str(exported_tokenizer), "--tokens", str(tmp_path), "--out", str(tmp_path / "o")])
