"""MSE / MAE on the 80-band evaluation mel (mars_dist.audio.mel.eval_mel, values in [0, 1]), MARS Table 1.

- paired: a reconstruction against its own reference note (tokenizer rows of the table);
- nearest: each generated note against the reference note nearest to it by MSE (generator rows: a
  generated note has no reference of its own). The search is the O(M N P) part of the evaluation, so
  it runs in torch (any device), in float64, over chunks of both sets: memory is bounded by the
  chunk sizes, never by M x N, and 10k x 10k notes of 80 x 251 bins fit easily.

Inputs are numpy arrays or torch tensors [N, 80, T] (any trailing shape; rows are flattened). At 10k
notes a pass over a set is the cost, so finiteness is checked on the sums each pass computes anyway.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from mars_dist.eval.metrics._arrays import check_positive_int

CHUNK_ROWS = 1024


def _rows(x, name: str) -> Tuple[torch.Tensor, List[int]]:
    """(x as a [N, P] tensor, x's original shape) after checking it is a non-empty real array."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    shape = list(t.shape)
    if t.ndim < 2 or t.shape[0] == 0 or t[0].numel() == 0:
        raise ValueError(f"{name}: expected mels of shape [N, 80, T] (or [N, P]) with N >= 1, got {shape}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected real numbers, got dtype {t.dtype}")
    return t.reshape(t.shape[0], -1), shape


def _check_finite(sums: torch.Tensor, rows: torch.Tensor, name: str, first_row: int) -> None:
    if not torch.isfinite(sums).all():
        bad = first_row + int(torch.nonzero(~torch.isfinite(rows).all(1))[0, 0])
        raise ValueError(f"{name}: non-finite values (first in row {bad}); mels must be finite")


def _error_sums(a_CP: torch.Tensor, b_CP: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of squared and of absolute differences of float64 `a_CP` and `b_CP` (neither is modified:
    either may be the caller's array). One temporary, few passes: at 10k x 20080 bins the passes are the cost."""
    diff = a_CP - b_CP
    return torch.einsum("cp,cp->c", diff, diff), diff.abs_().sum(1)


def paired_mel_error(mel_ref_NFT, mel_est_NFT) -> Dict[str, Any]:
    """{"mse", "mae", "notes"} between equally shaped reference and estimated mels, averaged over every bin."""
    (ref, ref_shape), (est, est_shape) = _rows(mel_ref_NFT, "mel_ref_NFT"), _rows(mel_est_NFT, "mel_est_NFT")
    if ref_shape != est_shape:
        raise ValueError(f"paired mel error: mel_ref_NFT has shape {ref_shape} but mel_est_NFT {est_shape}; "
                         f"row i of both must be the same note")
    sq_err, abs_err = 0.0, 0.0
    for a in range(0, len(est), CHUNK_ROWS):  # chunks: no float64 copy of the whole set
        est_CP, ref_CP = est[a:a + CHUNK_ROWS], ref[a:a + CHUNK_ROWS].to(est.device)
        sq_C, abs_C = _error_sums(est_CP.to(torch.float64), ref_CP)
        if not torch.isfinite(sq_C).all():
            _check_finite(ref_CP.sum(1), ref_CP, "mel_ref_NFT", a)
            _check_finite(sq_C, est_CP, "mel_est_NFT", a)
        sq_err, abs_err = sq_err + float(sq_C.sum()), abs_err + float(abs_C.sum())
    return {"mse": sq_err / est.numel(), "mae": abs_err / est.numel(), "notes": int(ref.shape[0])}


def nearest_mel_error(mel_gen_MFT, mel_ref_NFT, chunk: int = CHUNK_ROWS,
                      device: Optional[Union[str, torch.device]] = None) -> Dict[str, Any]:
    """Each generated mel against its MSE-nearest reference mel: {"mse", "mae", "nearest_index", "notes"}.

    "mse"/"mae" are means over generated notes of the error to that nearest reference (MAE of the
    same pair: nearest by MSE, as the protocol defines one neighbour). "nearest_index" [M] indexes the
    reference rows; ties go to the lowest index. The squared distances for the search come from
    |g|^2 - 2 g.r + |r|^2 in float64; the reported errors are recomputed from the chosen pairs directly.
    `device`: where the chunks are computed (default: the device of `mel_gen_MFT`, else CPU). 10k x 10k
    notes of 80 x 251 bins are 4e12 float64 flops: ~3.5 minutes on one CPU core (docs/eval.md), so pass
    a GPU when there is one.
    """
    (gen, gen_shape), (ref, ref_shape) = _rows(mel_gen_MFT, "mel_gen_MFT"), _rows(mel_ref_NFT, "mel_ref_NFT")
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"nearest mel error: generated mels have {gen.shape[1]} bins per note ({gen_shape}) but "
                         f"reference mels {ref.shape[1]} ({ref_shape}); both must be eval_mel of equally long notes")
    chunk = check_positive_int(chunk, "chunk")
    device = torch.device(device) if device is not None else gen.device
    f64 = dict(device=device, dtype=torch.float64)
    ref_norm_N = torch.empty(len(ref), **f64)
    for b in range(0, len(ref), chunk):
        ref_norm_N[b:b + chunk] = ref[b:b + chunk].to(**f64).square().sum(1)
        _check_finite(ref_norm_N[b:b + chunk], ref[b:b + chunk], "mel_ref_NFT", b)
    nearest_M = torch.empty(len(gen), dtype=torch.long, device=device)
    sq_err, abs_err = 0.0, 0.0
    for a in range(0, len(gen), chunk):
        g_CP = gen[a:a + chunk].to(**f64)
        g_norm_C = g_CP.square().sum(1)
        _check_finite(g_norm_C, gen[a:a + chunk], "mel_gen_MFT", a)
        best_C = torch.full((len(g_CP),), float("inf"), **f64)
        best_idx_C = torch.zeros(len(g_CP), dtype=torch.long, device=device)
        for b in range(0, len(ref), chunk):
            d_CB = g_norm_C[:, None] - 2.0 * (g_CP @ ref[b:b + chunk].to(**f64).T) + ref_norm_N[None, b:b + chunk]
            value_C, idx_C = d_CB.min(dim=1)
            better = value_C < best_C  # strict: an equal later reference keeps the earlier index
            best_C = torch.where(better, value_C, best_C)
            best_idx_C = torch.where(better, idx_C + b, best_idx_C)
        sq_C, abs_C = _error_sums(g_CP, ref[best_idx_C.to(ref.device)].to(device))
        sq_err, abs_err = sq_err + float(sq_C.sum()), abs_err + float(abs_C.sum())
        nearest_M[a:a + len(g_CP)] = best_idx_C
    bins = len(gen) * gen.shape[1]  # every note has as many bins: the mean of per-note means is the overall mean
    return {"mse": sq_err / bins, "mae": abs_err / bins, "nearest_index": nearest_M.cpu().tolist(),
            "notes": int(len(gen))}
