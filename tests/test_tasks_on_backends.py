"""The real tasks (tokenizer GAN, the generator families) trained by the real Trainer on every distributed backend.

Two launches of real gloo process groups, each running several variants one after the other:
  2 processes x micro-batch 1 x accumulation 2: the GAN (configs/tokenizer/tiny.yaml, discriminator
    active from step 0, dead-code restart every 2 unused steps) on accelerate DDP and FSDP2 and on
    DeepSpeed ZeRO-1/2/3; the same GAN without restarts and quantizer dropout (and with random position init) on DDP and ZeRO-2;
    every generator family through the one generator task, over a tiny exported tokenizer: the
    next-scale AR, the next-token AR and MaskGIT (configs/{next_scale,next_token,maskgit}/tiny.yaml)
    and the toy family defined outside the library (tests/toy_generator/toy.yaml), each on DDP,
    FSDP2 and ZeRO-1/2/3; the next-scale runs on FSDP2 and ZeRO-3 also run the media stage at their
    last step (the sharded weights gathered collectively, notes generated on rank 0);
  1 process x micro-batch 1 x accumulation 4: the GAN without restarts on DDP and ZeRO-2.
The global batch (4 synthetic notes per step) is the same everywhere.

Why the GAN runs without restarts and quantizer dropout when 1 and 2 processes are compared: both
draw from each rank's own RNG and the restart's candidates are rank 0's recent residuals, so they
legitimately differ between world sizes. Everything else, the adaptive weight included, is
computed per micro-batch from that micro-batch alone, and the micro-batches are the same samples
in both layouts: the runs must agree up to the summation order of the gradient reductions.
The compared runs also start from random (not sin-cos) position embeddings: with sin-cos
embeddings many attention-weight gradients of the fresh tiny model are near rounding level
(median |g| ~1e-7 against per-sample terms ~1e-4), and AdamW, which divides each element by its
own magnitude, turns the summation-order noise of those elements into O(lr) update differences
[measured with sin-cos: relative L2 update error 1.2e-4 (DDP), 8e-4 (ZeRO-2); element-wise up to
3e-4]. The property checked here is the engine's arithmetic, which does not depend on the init.

Tolerances (fp32, 3 AdamW steps; measured values in brackets):
- 1 x 4 == 2 x 2 for the GAN on DDP and ZeRO-2, and every backend == DDP for each generator family
  (next-scale, next-token, MaskGIT, toy): every weight within ATOL = 2e-6 [GAN <= 5.6e-7, AR <= 1e-7].
- the media notes of a sharded run (FSDP2, ZeRO-3) == the notes one plain process generates from
  that step's consolidated weights with the same seed and options: the same wav bytes.
- every backend == DDP for the GAN (2 processes): the models' updates (trained minus initial
  weights) agree within a relative L2 error of REL_UPDATE = 1e-2 [ZeRO-1/2/3 <= 9e-5, FSDP2 <= 1.1e-3].
  An element-wise bound does not fit this model: AdamW divides each gradient element by its own
  magnitude, so elements whose gradient is at rounding level (the summation order of FSDP2's
  reduce-scatter differs from DDP's all-reduce) move by O(lr) either way [max 1.3e-4], and the
  tiny config's fourth phi conv, used by no scale, is weight-decayed under ZeRO (zero gradient)
  but not under DDP (no gradient) [1.8e-5]. A generator gradient reaching the discriminator would
  change its update by O(1) in that metric.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
import torch
import torch.nn.functional as F

from mars_dist.audio.frontend import AudioFrontend
from mars_dist.bench.engine import VARIANTS
from mars_dist.config import load_config
from mars_dist.data.geometry import BatchGeometry
from mars_dist.engine.backends import build_backend
from mars_dist.engine.trainer import Trainer
from mars_dist.generation.generator import FamilyGenerator
from mars_dist.generation.loaders import load_tokenizer
from mars_dist.generation.notes import write_notes
from mars_dist.labels import CONDITION_CLASSES
from mars_dist.models.builders import load_model
from mars_dist.models.generators.family import TokenGeometry, family
from mars_dist.models.tokenizer.patchgan import (
    PatchGANDiscriminator,
    adaptive_weight,
    generator_adversarial,
    gradient_into,
    hinge_g_loss,
)
from mars_dist.models.tokenizer.config import DiscriminatorConfig
from mars_dist.tasks.registry import task_class
from mars_dist.tasks.tokenizer import EMA_NAME, TokenizerTask
from tests.ar_exports import CMX_SHAPE, REPO, TOKENIZER_TINY, tokenizer_export
from tests.fixtures.dist import run_distributed

ATOL = 2e-6
REL_UPDATE = 1e-2
STEPS = 3
GLOBAL_BATCH = 4
MICRO_BATCH = 1
BACKENDS: Dict[str, List[str]] = VARIANTS
GAN_BACKENDS = list(BACKENDS)
GENERATOR_BACKENDS = list(BACKENDS)
TOY = "tests.toy_generator.spec:toy"  # a family defined outside the library (tests/toy_generator/)
GENERATOR_TASKS = ["next_scale", "next_token", "maskgit", TOY]  # task = the family's key
GENERATOR_CONFIGS = {**{name: REPO / "configs" / name / "tiny.yaml" for name in GENERATOR_TASKS if name != TOY},
                     TOY: REPO / "tests" / "toy_generator" / "toy.yaml"}
# toy.yaml keeps the default lr (1e-4), under which 3 steps move no weight by 1e-3; the built-in tiny configs' lr
GENERATOR_EXTRA = {TOY: ["optim.lr=1e-3"]}
# The media stage under sharding: at the last step, over VALID_BATCH (media_notes of its label sets).
MEDIA = [f"stages.media.every={STEPS}"]
MEDIA_RUNS = [("next_scale", "fsdp"), ("next_scale", "zero3")]
EXACT_BACKENDS = ["ddp", "zero2"]  # 1 x accumulation 4 == 2 x accumulation 2
# random position init: see "Why the GAN runs ... with random position embeddings" above
NO_RESTART = ["tokenizer.dead_code_steps=0", "tokenizer.quant_dropout=0", "tokenizer.pos_init=random"]
COMMON = ["engine.device=cpu", f"data.batch_size={GLOBAL_BATCH}", f"train.max_steps={STEPS}", "checkpoint.every_steps=0",
          "stages.media.every=0", "train.log_every=1", "logging.wandb_mode=disabled"]
EXTENSIONS_ENV = {
    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mars_dist" / "torch_extensions")),
}
CODEBOOK = "quantizer.codebook.weight"


# ---------------------------------------------------------------------------------------------- data
def global_batch(step: int) -> Dict[str, Any]:
    """Global batch `step`: smooth spectrogram-like CMX images and valid NSynth labels."""
    g = torch.Generator().manual_seed(7000 + step)
    coarse = torch.randn(GLOBAL_BATCH, CMX_SHAPE[0], 8, 8, generator=g)
    return {
        "cmx": torch.tanh(F.interpolate(coarse, size=CMX_SHAPE[1:], mode="bilinear")),
        "pitch": torch.randint(0, 128, (GLOBAL_BATCH,), generator=g),
        "velocity": torch.randint(0, 128, (GLOBAL_BATCH,), generator=g),
        "instrument_family": torch.randint(0, 11, (GLOBAL_BATCH,), generator=g),
        "instrument_source": torch.randint(0, 3, (GLOBAL_BATCH,), generator=g),
        "key": [f"note_{step}_{i}" for i in range(GLOBAL_BATCH)],
    }


VALID_BATCH = global_batch(10_000)  # the Trainer's fixed validation batch (what the media stage conditions on)


class SyntheticStream:
    """The Trainer's stream contract over `global_batch`: this rank's contiguous share of each
    global batch, cut into `grad_accum` micro-batches (the layout the real loader produces)."""

    def __init__(self, rank: int, world_size: int):
        self.rank = rank
        self.geometry = BatchGeometry.of(GLOBAL_BATCH, world_size, MICRO_BATCH)
        self.position = 0

    def __iter__(self):
        micro, accum = self.geometry.micro_batch, self.geometry.grad_accum
        while True:
            batch = global_batch(self.position)
            self.position += 1
            start = self.rank * micro * accum
            yield [{k: v[start + i * micro:start + (i + 1) * micro] for k, v in batch.items()} for i in range(accum)]

    def cursor(self) -> Dict[str, int]:
        return {"global_batches": self.position}


# ---------------------------------------------------------------------------------------------- recording tasks
class RecordsLosses:
    """Task mixin: keeps every micro-step's logged losses, the models' initial weights and every call
    of the media stage on this rank."""

    def build_models(self):
        specs = super().build_models()
        self.initial = {name: {k: v.detach().clone() for k, v in spec.module.state_dict().items()} for name, spec in specs.items()}
        self.losses: List[Dict[str, float]] = []
        self.media: List[Dict[str, Any]] = []
        return specs

    def micro_step(self, batch, models, step, backward):
        logs = super().micro_step(batch, models, step, backward)
        self.losses.append({k: float(v) for k, v in logs.items()})
        return logs

    def log_media(self, step, models, batch, out_dir):
        items = super().log_media(step, models, batch, out_dir)
        self.media.append({"step": step, "out_dir": out_dir, "items": sorted(items)})
        return items


class RecordingTokenizerTask(RecordsLosses, TokenizerTask):
    """Also checks what the generator's backward leaves in the discriminator, and records the codebook
    around every after_step (the only place the restart edits it) next to the backend's own view."""

    backend = None  # set by the worker: full_state_dict gives DeepSpeed's fp32 master weights

    def build_models(self):
        specs = super().build_models()
        self.disc_grads_changed_by_generator_backward: List[int] = []
        self.codebook_steps: List[Dict[str, Any]] = []
        return specs

    def micro_step(self, batch, models, step, backward):
        def grads() -> List[Any]:
            return [None if p.grad is None else p.grad.clone() for p in models.unwrap("discriminator").parameters()]

        def checked_backward(name: str, loss: torch.Tensor) -> None:
            if name != "tokenizer":
                return backward(name, loss)
            # Meaningful where gradients accumulate in .grad until the step (DDP): any change is a leak.
            before = grads()
            backward(name, loss)
            changed = sum((a is None) != (b is None) or (a is not None and not torch.equal(a, b)) for a, b in zip(before, grads()))
            self.disc_grads_changed_by_generator_backward.append(changed)

        return super().micro_step(batch, models, step, checked_backward)

    def after_step(self, step, models):
        codebook = models.unwrap("tokenizer").quantizer.codebook.weight
        with models.parallel.full_tensors([codebook]) as (full,):
            before = full.detach().cpu().clone()
        super().after_step(step, models)
        with models.parallel.full_tensors([codebook]) as (full,):
            after = full.detach().cpu().clone()
        master = self.backend.full_state_dict("tokenizer").get(CODEBOOK)  # collective; complete on rank 0
        self.codebook_steps.append({"before": before, "after": after, "master": master})


RECORDING = {"gan": RecordingTokenizerTask,
             **{name: type(f"Recording{task_class(name).__name__}", (RecordsLosses, task_class(name)), {})
                for name in GENERATOR_TASKS}}


def model_of(task: str) -> str:
    """The trained model (and config section) of a generator task: its family's name."""
    return family(task).name


# ---------------------------------------------------------------------------------------------- per-rank body
def run_config(task_name: str, variant: str, overrides: Sequence[str], run_dir: Path, tokenizer_dir: str):
    config = TOKENIZER_TINY if task_name == "gan" else GENERATOR_CONFIGS[task_name]
    extra = (["tokenizer.disc.start_step=0"] if task_name == "gan" else
             [f"{model_of(task_name)}.tokenizer_path={tokenizer_dir}", *GENERATOR_EXTRA.get(task_name, [])])
    return load_config(config, COMMON + extra + BACKENDS[variant] + list(overrides) + [f"run_dir={run_dir}"])


def _train(task_name: str, variant: str, overrides: List[str], run_dir: Path, tokenizer_dir: str) -> Dict[str, Any]:
    cfg = run_config(task_name, variant, overrides, run_dir, tokenizer_dir)
    task_cls = RECORDING[task_name]
    task = task_cls(cfg, {"cmx_shape": list(CMX_SHAPE)})
    backend = build_backend(cfg)
    task.backend = backend
    stream = SyntheticStream(backend.rank, backend.world_size)
    result = Trainer(cfg, backend, task, stream, valid_batch=VALID_BATCH).train()
    names = list(task.initial)
    out: Dict[str, Any] = {
        "steps": result.step, "world_size": backend.world_size, "grad_accum": stream.geometry.grad_accum,
        "losses": task.losses, "initial": task.initial, "media": task.media, "run_dir": str(run_dir),
        "weights": {name: backend.full_state_dict(name) for name in names},  # trained: complete on rank 0
    }
    if task_name == "gan":
        out["disc_grads_changed_by_generator_backward"] = task.disc_grads_changed_by_generator_backward
        out["codebook_steps"] = task.codebook_steps
    return out


def run_plan(plan: List[tuple], run_root: str, tokenizer_dir: str) -> bytes:
    """Entry point for run_distributed(..., init_process_group=False): trains each (task, variant,
    overrides) of `plan` in turn in this process group; returns torch.save'd results (tensors by value)."""
    results = {key(task, variant, overrides): _train(task, variant, overrides, Path(run_root) / f"run{i:02d}", tokenizer_dir)
               for i, (task, variant, overrides) in enumerate(plan)}
    buffer = io.BytesIO()
    torch.save(results, buffer)
    return buffer.getvalue()


def key(task: str, variant: str, overrides: Sequence[str] = ()) -> str:
    return f"{task}/{variant}/{'+'.join(overrides)}"


def generator_overrides(task: str, variant: str) -> List[str]:
    return MEDIA if (task, variant) in MEDIA_RUNS else []


def generator_key(task: str, variant: str) -> str:
    return key(task, variant, generator_overrides(task, variant))


# ZeRO-3 runs last: DeepSpeed replaces torch.nn.functional.linear process-wide when a ZeRO-3 engine
# is built, and FSDP2's DTensor parameters do not pass through its replacement (one backend per
# process in real runs; several here to keep launches few).
TWO_PROCESS_PLAN = sorted([("gan", v, []) for v in GAN_BACKENDS] + [("gan", v, NO_RESTART) for v in EXACT_BACKENDS]
                          + [(task, v, generator_overrides(task, v)) for task in GENERATOR_TASKS for v in GENERATOR_BACKENDS],
                          key=lambda run: run[1] == "zero3")
ONE_PROCESS_PLAN = [("gan", v, NO_RESTART) for v in EXACT_BACKENDS]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks_on_backends")
    tokenizer_dir = tokenizer_export(root / "tokenizer_export", seed=3)
    out = {}
    for world, plan in ((2, TWO_PROCESS_PLAN), (1, ONE_PROCESS_PLAN)):
        per_rank = run_distributed(run_plan, world, plan, str(root / f"world{world}"), str(tokenizer_dir),
                                   timeout_s=600, init_process_group=False, env=EXTENSIONS_ENV)
        out[world] = [torch.load(io.BytesIO(r), weights_only=False) for r in per_rank]
    out["tokenizer_dir"] = tokenizer_dir
    return out


def relative_update_error(got: Dict[str, torch.Tensor], want: Dict[str, torch.Tensor], initial: Dict[str, torch.Tensor]) -> float:
    """||update_got - update_want|| / ||update_want|| over all floating-point entries of one model."""
    keys = [k for k in initial if initial[k].is_floating_point()]
    delta = torch.cat([(got[k].float() - want[k].float()).flatten() for k in keys])
    update = torch.cat([(want[k].float() - initial[k].float()).flatten() for k in keys])
    return (delta.norm() / update.norm()).item()


def _max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], keys=None) -> float:
    keys = keys if keys is not None else a.keys()
    assert set(keys) <= set(b), f"missing keys: {sorted(set(keys) - set(b))[:5]}"
    return max((a[k].float() - b[k].float()).abs().max().item() for k in keys if a[k].numel())


# ---------------------------------------------------------------------------------------------- single process
def test_generator_gradient_through_the_shadow_equals_backprop_through_the_discriminator():
    """The surrogate formulation gives the tokenizer exactly the gradient of the usual
    lambda_adv * w * hinge_g(D(recon)) (D frozen), and w is the usual adaptive weight."""
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(2, DiscriminatorConfig(channels=8, num_layers=2)).requires_grad_(False)
    gen = torch.nn.Conv2d(2, 2, 3, padding=1)
    x_BCHW = torch.randn(2, 2, 32, 32)
    lambda_adv, lambda_rec = 0.5, 1.0

    recon = gen(x_BCHW)
    rec_loss = lambda_rec * F.mse_loss(recon, x_BCHW)
    g_loss = hinge_g_loss(disc(recon))
    w = adaptive_weight(rec_loss, g_loss, recon, max_weight=1e4)
    classic = torch.autograd.grad(rec_loss + lambda_adv * w * g_loss, list(gen.parameters()))

    recon = gen(x_BCHW)
    rec_loss = lambda_rec * F.mse_loss(recon, x_BCHW)
    adv = generator_adversarial(disc, recon, lambda y: lambda_rec * F.mse_loss(y, x_BCHW), lambda_adv, max_weight=1e4)
    surrogate = gradient_into(recon, adv.grad_out)
    assert surrogate.item() == 0.0, "the surrogate adds a gradient, not a value"
    shadowed = torch.autograd.grad(rec_loss + surrogate, list(gen.parameters()))

    assert adv.weight.item() == pytest.approx(w.item(), rel=1e-6) and adv.weight.item() > 0
    assert adv.g_loss.item() == pytest.approx(g_loss.item(), rel=1e-6)
    for got, want in zip(shadowed, classic):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-5)
    assert all(p.grad is None for p in disc.parameters())


# ---------------------------------------------------------------------------------------------- distributed
@pytest.mark.distributed
@pytest.mark.slow
def test_every_run_used_its_world_size_and_took_every_step(launches):
    for world in (1, 2):
        for rank_results in launches[world]:
            for name, run in rank_results.items():
                assert (run["world_size"], run["steps"]) == (world, STEPS), name
                assert run["grad_accum"] == GLOBAL_BATCH // (world * MICRO_BATCH), name
                assert len(run["losses"]) == STEPS * run["grad_accum"], f"{name}: one micro_step per micro-batch"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("variant", GAN_BACKENDS)
def test_gan_trains_both_models_with_finite_adversarial_losses(launches, variant):
    for rank, results in enumerate(launches[2]):
        run = results[key("gan", variant)]
        for i, logs in enumerate(run["losses"]):
            bad = {k: v for k, v in logs.items() if not torch.isfinite(torch.tensor(v))}
            assert not bad, f"{variant} rank {rank} micro-step {i}: non-finite {bad}"
            assert logs["loss/adaptive_weight"] > 0 and logs["loss/disc"] > 0 and logs["loss/g_adv"] != 0, \
                f"{variant} rank {rank} micro-step {i}: the adversarial term is inactive: {logs}"
    run = launches[2][0][key("gan", variant)]
    for model in ("tokenizer", "discriminator"):
        moved = _max_diff(run["weights"][model], run["initial"][model], [k for k in run["initial"][model] if "." in k and "weight" in k])
        assert moved > 1e-3, f"{variant}: {model} weights did not move ({moved})"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("variant", GAN_BACKENDS)
def test_gan_on_every_backend_trains_the_same_models_as_ddp(launches, variant):
    """The discriminator gets only its own gradient under DDP (checked below); the same updates on
    every backend then mean no backend lets the generator's backward reach it either."""
    run, reference = launches[2][0][key("gan", variant)], launches[2][0][key("gan", "ddp")]
    for model in ("tokenizer", "discriminator", EMA_NAME):
        error = relative_update_error(run["weights"][model], reference["weights"][model], run["initial"][model])
        assert error <= REL_UPDATE, f"{variant} vs ddp: {model}'s update differs by {error:.2e} (relative L2)"


@pytest.mark.distributed
@pytest.mark.slow
def test_generator_backward_leaves_no_gradient_in_the_discriminator(launches):
    for rank, results in enumerate(launches[2]):
        for name in (key("gan", "ddp"), key("gan", "ddp", NO_RESTART)):
            counts = results[name]["disc_grads_changed_by_generator_backward"]
            assert len(counts) == STEPS * 2 and not any(counts), f"{name} rank {rank}: discriminator .grad changed by the generator: {counts}"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("variant", GAN_BACKENDS)
def test_ema_moved_and_is_the_same_on_every_rank(launches, variant):
    runs = [results[key("gan", variant)] for results in launches[2]]
    ema = [run["weights"][EMA_NAME] for run in runs]
    assert _max_diff(ema[0], runs[0]["initial"][EMA_NAME], [k for k in ema[0] if "weight" in k]) > 1e-4, f"{variant}: EMA did not move"
    # The restart candidates are each rank's own recent residuals (rank 0's are used): not shared state.
    for k in (k for k in ema[0] if k != "quantizer.recent_residuals"):
        assert torch.equal(ema[0][k], ema[1][k]), f"{variant}: EMA {k} differs between ranks"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("variant", GAN_BACKENDS)
def test_dead_code_restart_is_identical_on_every_rank_and_survives_the_next_step(launches, variant):
    runs = [results[key("gan", variant)] for results in launches[2]]
    steps0, steps1 = runs[0]["codebook_steps"], runs[1]["codebook_steps"]
    restarted = [int((s["after"] != s["before"]).any(dim=1).sum()) for s in steps0]
    assert restarted[0] == 0 and restarted[1] > 0, f"{variant}: expected restarts at the 2nd step (dead_code_steps=2), got {restarted}"
    for step, (s0, s1) in enumerate(zip(steps0, steps1)):
        assert torch.equal(s0["after"], s1["after"]), f"{variant}: codebook differs between ranks after step {step}"
        # The optimizer's view (DeepSpeed's fp32 master weights) holds the restarted rows too.
        assert torch.equal(s0["master"], s0["after"]), f"{variant}: the backend's weights miss the restart of step {step}"
    rows = (steps0[1]["after"] != steps0[1]["before"]).any(dim=1)
    jump = (steps0[1]["after"][rows] - steps0[1]["before"][rows]).abs().max().item()
    drift = (steps0[2]["before"][rows] - steps0[1]["after"][rows]).abs().max().item()
    assert drift < 0.1 * jump, f"{variant}: the next step moved restarted rows by {drift} (restart moved them by {jump}): undone?"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("variant", EXACT_BACKENDS)
def test_gan_1_process_x_accumulation_4_equals_2_processes_x_2(launches, variant):
    one = launches[1][0][key("gan", variant, NO_RESTART)]["weights"]
    two = launches[2][0][key("gan", variant, NO_RESTART)]["weights"]
    for model in ("tokenizer", "discriminator", EMA_NAME):
        diff = _max_diff(one[model], two[model])
        assert diff <= ATOL, f"{variant}: 1 x 4 vs 2 x 2: {model} differs by {diff}"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("task", GENERATOR_TASKS)
@pytest.mark.parametrize("variant", GENERATOR_BACKENDS)
def test_generators_train_on_every_backend_and_leave_the_frozen_tokenizer_alone(launches, task, variant):
    exported, _ = load_model(launches["tokenizer_dir"], expected=("tokenizer",))
    exported_sd = exported.state_dict()
    model = model_of(task)
    for rank, results in enumerate(launches[2]):
        run = results[generator_key(task, variant)]
        assert all(torch.isfinite(torch.tensor(v)) for logs in run["losses"] for v in logs.values()), f"{task} {variant} rank {rank}"
        frozen = run["weights"]["tokenizer"]
        assert all(torch.equal(frozen[k], exported_sd[k]) for k in exported_sd), f"{task} {variant} rank {rank}: frozen tokenizer changed"
    run = launches[2][0][generator_key(task, variant)]
    assert set(run["initial"]) == {model, "tokenizer"}, f"{task}: the trained model is named after the family"
    assert _max_diff(run["weights"][model], run["initial"][model]) > 1e-3, f"{task} {variant}: weights did not move"
    diff = _max_diff(run["weights"][model], launches[2][0][generator_key(task, "ddp")]["weights"][model])
    assert diff <= ATOL, f"{task} {variant} vs ddp: differs by {diff}"


def media_run(launches, task: str, variant: str):
    """(rank 0's results of the run, its run config, the folder its media stage wrote the notes to)."""
    run = launches[2][0][generator_key(task, variant)]
    cfg = run_config(task, variant, generator_overrides(task, variant), Path(run["run_dir"]), str(launches["tokenizer_dir"]))
    return run, cfg, Path(run["run_dir"]) / "media" / f"step-{STEPS:08d}" / f"{model_of(task)}-step{STEPS:08d}"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("task, variant", MEDIA_RUNS)
def test_media_stage_under_sharding_runs_on_every_rank_and_rank_0_writes_the_notes(launches, task, variant):
    """Every rank entered the media stage at the last step and came back (the gather is collective:
    a rank left out would hang the others); only rank 0 had a folder to write and logged items."""
    calls = [results[generator_key(task, variant)]["media"] for results in launches[2]]
    assert [[call["step"] for call in rank_calls] for rank_calls in calls] == [[STEPS], [STEPS]], f"{variant}: {calls}"
    (main,), (other,) = calls
    assert main["out_dir"] is not None and other["out_dir"] is None, f"{variant}: only rank 0 writes media"
    _, cfg, folder = media_run(launches, task, variant)
    notes = getattr(cfg, model_of(task)).media_notes
    wavs = sorted(folder.glob("*.wav"))
    assert len(wavs) == notes > 0 and all(w.with_suffix(".png").stat().st_size > 0 for w in wavs), \
        f"{variant}: expected {notes} wav + png pairs in {folder}, found {sorted(p.name for p in folder.iterdir())}"
    assert len(main["items"]) == 2 * len(wavs) and other["items"] == [], f"{variant}: wandb items {main['items']}, {other['items']}"


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("task, variant", MEDIA_RUNS)
def test_media_notes_of_a_sharded_run_equal_a_plain_process_generating_from_the_consolidated_weights(
        launches, task, variant, tmp_path):
    """The media stage's sampler (seed = cfg.seed, cfg_scale = media_cfg_scale, top_p = media_top_p)
    fed with this step's consolidated weights in one plain process writes the same wav bytes."""
    run, cfg, folder = media_run(launches, task, variant)
    spec, settings = family(task), getattr(cfg, model_of(task))
    tokenizer = load_tokenizer(launches["tokenizer_dir"])
    model = spec.build(settings, TokenGeometry.of(tokenizer.module.quantizer))
    model.load_state_dict(run["weights"][model_of(task)])
    label_sets = [{name: int(VALID_BATCH[name][i]) for name in CONDITION_CLASSES if name in VALID_BATCH}
                  for i in range(settings.media_notes)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks ran: the same matmul blocking, the same rounding
    try:
        gen = FamilyGenerator(spec, model, tokenizer.module, AudioFrontend(cfg.audio), torch.device("cpu"))
        options = gen.options(cfg_scale=settings.media_cfg_scale, top_p=settings.media_top_p)
        wavs: List[Path] = []
        for generated in gen.generate(label_sets, options, gen.rng(cfg.seed), batch_size=len(label_sets)):
            wavs += write_notes(generated, tmp_path, len(wavs), gen.frontend)
    finally:
        torch.set_num_threads(threads)
    logged = sorted(folder.glob("*.wav"))
    assert [w.name for w in logged] == [w.name for w in wavs], f"{variant}: notes {logged} vs {wavs}"
    for got, want in zip(logged, wavs):
        assert got.read_bytes() == want.read_bytes(), f"{variant}: {got.name} differs from the plain process's note"
