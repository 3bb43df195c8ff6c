"""MSE / MAE on the evaluation mel (mars_dist.eval.metrics.mel_error): paired and nearest-neighbour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_dist.audio.mel import eval_mel, mel_mse_mae
from mars_dist.eval.metrics.mel_error import nearest_mel_error, paired_mel_error


def random_mels(rng, n, bands=6, frames=9):
    return rng.random((n, bands, frames)).astype(np.float32)


def test_paired_error_on_eval_mels_equals_the_audio_modules_mel_mse_mae():
    g = torch.Generator().manual_seed(0)
    wave_ref, wave_est = torch.randn(3, 16000, generator=g) * 0.1, torch.randn(3, 16000, generator=g) * 0.1
    result = paired_mel_error(eval_mel(wave_ref), eval_mel(wave_est))
    mse, mae = mel_mse_mae(wave_ref, wave_est)
    assert result["mse"] == pytest.approx(mse, rel=1e-12) and result["mae"] == pytest.approx(mae, rel=1e-12)
    assert result["notes"] == 3


def test_paired_error_is_the_mean_over_every_bin():
    rng = np.random.default_rng(1)
    ref, est = random_mels(rng, 4), random_mels(rng, 4)
    diffs = [float(est[i, b, t]) - float(ref[i, b, t]) for i in range(4) for b in range(6) for t in range(9)]
    result = paired_mel_error(ref, torch.from_numpy(est))
    assert result["mse"] == pytest.approx(sum(d * d for d in diffs) / len(diffs), rel=1e-12)
    assert result["mae"] == pytest.approx(sum(abs(d) for d in diffs) / len(diffs), rel=1e-12)
    assert paired_mel_error(ref, ref) == {"mse": 0.0, "mae": 0.0, "notes": 4}


@pytest.mark.parametrize("chunk", [1, 2, 7, 1024])
def test_nearest_error_equals_a_brute_force_search(chunk):
    rng = np.random.default_rng(2)
    gen, ref = random_mels(rng, 11), random_mels(rng, 17)
    nearest, mses, maes = [], [], []
    for g in gen.astype(np.float64):
        errors = [np.mean((g - r) ** 2) for r in ref.astype(np.float64)]
        j = min(range(len(errors)), key=lambda i: errors[i])
        nearest.append(j)
        mses.append(errors[j])
        maes.append(np.mean(np.abs(g - ref[j].astype(np.float64))))
    result = nearest_mel_error(gen, ref, chunk=chunk)
    assert result["nearest_index"] == nearest
    assert result["mse"] == pytest.approx(np.mean(mses), rel=1e-12)
    assert result["mae"] == pytest.approx(np.mean(maes), rel=1e-12)
    assert result["notes"] == 11


def test_copies_of_reference_notes_find_themselves_with_zero_error():
    rng = np.random.default_rng(3)
    ref = random_mels(rng, 20)
    order = rng.permutation(20)[:12]
    result = nearest_mel_error(torch.from_numpy(ref[order]), ref, chunk=5)
    assert result["nearest_index"] == order.tolist()
    assert result["mse"] == 0.0 and result["mae"] == 0.0


def test_ties_go_to_the_lowest_reference_index_across_chunks():
    rng = np.random.default_rng(4)
    ref = random_mels(rng, 9)
    ref[6] = ref[2]
    assert nearest_mel_error(ref[[2]], ref, chunk=4)["nearest_index"] == [2]
    assert nearest_mel_error(ref[[6]], ref, chunk=1)["nearest_index"] == [2]


def test_mel_errors_name_the_mismatched_arguments():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=r"mel_ref_NFT has shape \[2, 6, 9\] but mel_est_NFT \[3, 6, 9\]"):
        paired_mel_error(random_mels(rng, 2), random_mels(rng, 3))
    with pytest.raises(ValueError, match=r"generated mels have 54 bins per note \(\[2, 6, 9\]\) but reference mels 60"):
        nearest_mel_error(random_mels(rng, 2), random_mels(rng, 3, frames=10))
    with pytest.raises(ValueError, match=r"mel_gen_MFT: expected mels of shape \[N, 80, T\].*got \[54\]"):
        nearest_mel_error(np.zeros(54), random_mels(rng, 3))
    bad = random_mels(rng, 5)
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"mel_ref_NFT: non-finite values \(first in row 3\)"):
        nearest_mel_error(random_mels(rng, 2), bad, chunk=2)
    with pytest.raises(ValueError, match=r"mel_gen_MFT: non-finite values \(first in row 3\)"):
        nearest_mel_error(bad, random_mels(rng, 2), chunk=2)
    with pytest.raises(ValueError, match=r"mel_est_NFT: non-finite values \(first in row 3\)"):
        paired_mel_error(random_mels(rng, 5), bad)
    with pytest.raises(ValueError, match=r"mel_ref_NFT: non-finite values \(first in row 3\)"):
        paired_mel_error(bad, random_mels(rng, 5))
    with pytest.raises(ValueError, match=r"chunk=0: expected an integer >= 1"):
        nearest_mel_error(random_mels(rng, 2), random_mels(rng, 2), chunk=0)
