"""VGGish (mars_dist.eval.features.vggish): torchvggish's state-dict layout, its front-end, loading and its errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mars_dist.eval.features.vggish import (
    VGGish,
    VGGishWeightsError,
    examples_per_note,
    load_vggish,
    log_mel_examples,
    mel_matrix,
)

# torchvggish's VGG: features = [conv, relu, pool] x 2 + [conv, relu, conv, relu, pool] x 2,
# embeddings = [linear, relu] x 3
TORCHVGGISH_LAYOUT = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}


def shaped_zeros(layout):
    """A state dict of the right shapes that costs nothing on disk (one stored zero, expanded)."""
    return {k: torch.zeros(1).expand(*shape) for k, shape in layout.items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(path, state dict): random VGGish weights plus torchvggish-style PCA tensors (pproc.*, means [128, 1])."""
    torch.manual_seed(0)
    state = VGGish().state_dict()
    q, _ = torch.linalg.qr(torch.randn(128, 128))
    state["pproc.pca_eigen_vectors"], state["pproc.pca_means"] = q, torch.randn(128, 1)
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(state, path)
    return path, state


def brute_force_log_mel(wave):
    """VGGish's front-end with explicit loops: frames, periodic Hann, |rfft 512|, HTK-mel triangles, log(+0.01)."""
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(125.0), mel(7500.0)
    edges = [lo + (hi - lo) * i / 65 for i in range(66)]
    weights = np.zeros((257, 64))
    for k in range(257):  # DC (0 Hz, below 125 Hz) gets no weight, as torchvggish zeroes it
        m = mel(k * 8000.0 / 256)
        for b in range(64):
            left, center, right = edges[b], edges[b + 1], edges[b + 2]
            weights[k, b] = max(0.0, min((m - left) / (center - left), (right - m) / (right - center)))
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / 400) for n in range(400)])
    frames = [wave[s:s + 400] for s in range(0, len(wave) - 399, 160)]
    spectra = np.array([np.abs(np.fft.rfft(f * window, 512)) for f in frames])
    return np.log(spectra @ weights + 0.01), weights


def test_the_network_has_torchvggish_state_dict_layout():
    assert {k: tuple(v.shape) for k, v in VGGish().state_dict().items()} == TORCHVGGISH_LAYOUT


def test_a_torchvggish_weights_file_loads_strictly_and_round_trips(weights):
    path, state = weights
    model = load_vggish(path)
    assert not model.training and not model.postprocess
    for key, value in model.state_dict().items():
        expected = state[key] if key in state else state[f"pproc.{key}"].reshape(value.shape)
        assert torch.equal(value, expected), key
    wave = 0.1 * torch.randn(2, 64000, generator=torch.Generator().manual_seed(1))
    emb = model.embed(wave)
    assert emb.shape == (8, 128) and emb.dtype == torch.float32  # 4 examples of 0.96 s per 4 s note
    assert torch.equal(model.embed(wave[1]), emb[4:])  # note-major rows
    assert (emb > 0).any()


def test_embeddings_flatten_the_conv_output_in_tensorflow_order(weights):
    model = load_vggish(weights[0])
    x = log_mel_examples(0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(2)))[0][:, None]
    with torch.no_grad():
        conv = model.features(x)  # [M, 512, 6, 4]
        torchvggish_order = torch.transpose(torch.transpose(conv, 1, 3), 1, 2).contiguous().view(len(x), -1)
        torch.testing.assert_close(model(x), model.embeddings(torchvggish_order), rtol=0, atol=0)


def test_pca_postprocessing_is_used_only_when_asked_for(weights):
    path, state = weights
    raw, post = load_vggish(path), load_vggish(path, postprocess=True)
    wave = 0.1 * torch.randn(20000, generator=torch.Generator().manual_seed(3))
    expected = (raw.embed(wave) - state["pproc.pca_means"].T) @ state["pproc.pca_eigen_vectors"].T
    torch.testing.assert_close(post.embed(wave), expected)


def test_a_plain_state_dict_without_pca_loads(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(shaped_zeros(TORCHVGGISH_LAYOUT), path)
    assert load_vggish(path).embed(torch.zeros(16000)).shape == (1, 128)
    with pytest.raises(VGGishWeightsError, match=r"plain.pth: postprocess=True needs pca_eigen_vectors and pca_means"):
        load_vggish(path, postprocess=True)


def test_load_errors_name_the_path_and_the_first_mismatches(tmp_path):
    with pytest.raises(VGGishWeightsError, match=r"nope.pth: no such file"):
        load_vggish(tmp_path / "nope.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(VGGishWeightsError, match=r"garbage.pth: not a readable torch state dict"):
        load_vggish(tmp_path / "garbage.pth")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(VGGishWeightsError, match=r"list.pth: holds a list, not a state dict"):
        load_vggish(tmp_path / "list.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: refused by weights_only
    with pytest.raises(VGGishWeightsError, match=r"module.pth: not a readable torch state dict"):
        load_vggish(tmp_path / "module.pth")
    renamed = shaped_zeros(TORCHVGGISH_LAYOUT)
    renamed["fc.weight"] = renamed.pop("embeddings.4.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(VGGishWeightsError, match=r"renamed.pth: not a VGGish .*missing keys: embeddings.4.weight; "
                                                 r"unexpected keys: fc.weight"):
        load_vggish(tmp_path / "renamed.pth")
    reshaped = dict(TORCHVGGISH_LAYOUT, **{"features.0.weight": (64, 3, 3, 3)})
    torch.save(shaped_zeros(reshaped), tmp_path / "rgb.pth")
    with pytest.raises(VGGishWeightsError, match=r"wrong shapes: features.0.weight \[64, 3, 3, 3\] "
                                                 r"\(expected \[64, 1, 3, 3\]\)"):
        load_vggish(tmp_path / "rgb.pth")


def test_front_end_equals_a_brute_force_vggish_log_mel():
    wave = np.random.default_rng(4).standard_normal(16000) * 0.1
    log_mel, weights = brute_force_log_mel(wave)
    np.testing.assert_allclose(mel_matrix().numpy(), weights, rtol=1e-12, atol=1e-12)
    assert log_mel.shape == (98, 64)  # 1 + (16000 - 400) // 160 frames
    examples = log_mel_examples(wave)
    assert examples.shape == (1, 1, 96, 64)
    np.testing.assert_allclose(examples[0, 0].numpy(), log_mel[:96], rtol=1e-5, atol=1e-5)


def test_a_1khz_tone_peaks_in_the_band_around_1khz():
    t = np.arange(32000) / 16000
    examples = log_mel_examples(np.sin(2 * np.pi * 1000.0 * t))
    band = int(examples.mean(dim=(0, 1, 2)).argmax())
    mel = lambda f: 1127.0 * np.log1p(f / 700.0)  # noqa: E731
    centers_hz = 700.0 * np.expm1(np.linspace(mel(125.0), mel(7500.0), 66)[1:-1] / 1127.0)
    assert abs(band - int(np.abs(centers_hz - 1000.0).argmin())) <= 1


def test_example_counts_and_input_errors():
    assert examples_per_note(64000) == 4 and examples_per_note(15600) == 1 and examples_per_note(15599) == 0
    assert log_mel_examples(torch.zeros(3, 64000)).shape == (3, 4, 96, 64)
    with pytest.raises(ValueError, match=r"sample_rate=44100: VGGish takes 16000 Hz audio"):
        log_mel_examples(torch.zeros(64000), sample_rate=44100)
    with pytest.raises(ValueError, match=r"notes of 8000 samples are shorter than one VGGish example \(15600 samples"):
        log_mel_examples(torch.zeros(2, 8000))
    with pytest.raises(ValueError, match=r"expected real mono waveforms \[B, N\] or \[N\], got shape \[2, 2, 64000\]"):
        log_mel_examples(torch.zeros(2, 2, 64000))
