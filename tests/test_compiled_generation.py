"""Generation through torch.compile'd block stages (GeneratorFamily.compile -> AdaLNTrunk.compile_stages):
every family gives the plain code's logits and tokens, one compiled graph serves all blocks and
sequence lengths, and switching back restores the plain methods."""
from __future__ import annotations

import pytest
import torch

from mars_dist.generation.notes import labels_to_tensors
from mars_dist.models.generators.blocks import EAGER_STAGES, compiled_stages
from mars_dist.models.generators.family import GeneratorFamily, TokenGeometry, builtin_names, family
from mars_dist.models.tokenizer.quantizer import MultiScaleQuantizer

SCALES = [(1, 1), (2, 2), (3, 3), (4, 4)]


def family_model(spec: GeneratorFamily, quantizer) -> torch.nn.Module:
    torch.manual_seed(0)
    model = spec.build(spec.preset("tiny"), TokenGeometry.of(quantizer)).eval()
    for p in model.parameters():  # adaLN-Zero starts every block as the identity: give the blocks work to do
        torch.nn.init.normal_(p, std=0.05)
    return model


def sample(spec: GeneratorFamily, model, quantizer):
    labels = labels_to_tensors([{"pitch": 60, "instrument_family": 3}, {"pitch": 48}], torch.device("cpu"))
    return spec.sample(model, quantizer, labels, 2, spec.default_options(cfg_scale=2.0, top_p=0.9),
                       torch.Generator().manual_seed(3))


@pytest.mark.slow
def test_compiled_stages_give_the_plain_codes_logits_and_tokens_for_every_family():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    quantizer = MultiScaleQuantizer(64, 8, SCALES).eval()
    graphs_before = counters["stats"]["unique_graphs"]
    compiled = compiled_stages()
    assert compiled is compiled_stages(), "one set of compiled stages per process"
    names = builtin_names()
    assert set(names) >= {"next_scale", "next_token", "maskgit"}, names
    for name in names:
        spec = family(name)
        model = family_model(spec, quantizer)
        with torch.no_grad():
            plain = sample(spec, model, quantizer)
            spec.compile(model)
            assert all(block.stages is compiled for block in model.blocks)
            fused = sample(spec, model, quantizer)
            h_BLC = torch.randn(2, 5, model.cfg.width)
            c = model.condition(torch.randn(2, model.cfg.width))
            fused_logits = model.run_blocks(h_BLC, c, causal=True)
            model.compile_stages(False)
            assert all(block.stages is EAGER_STAGES for block in model.blocks)
            plain_logits = model.run_blocks(h_BLC, c, causal=True)
        torch.testing.assert_close(fused_logits, plain_logits, rtol=1e-4, atol=1e-5, msg=name)
        assert [t.shape for t in fused] == [t.shape for t in plain]
        same = sum(int((a == b).sum()) for a, b in zip(fused, plain))
        assert same == sum(t.numel() for t in plain), f"{name}: {same} tokens equal"
    graphs = counters["stats"]["unique_graphs"] - graphs_before
    print(f"compiled graphs for {len(names)} families x {len(SCALES)} scales x blocks: {graphs}")
    assert graphs <= 9, f"{graphs} graphs: the stages must not recompile per block, family or length"
