"""The fused RMSNorm swap: which norms it takes, and that the swapped model computes the same.

On the CPU the swapped module runs diffusers' own forward (the kernel is CUDA-only), so the
output must be bit-identical; test_gpu.py compares the kernel itself on a GPU.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _model():
    from diffusers.models.normalization import RMSNorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(RMSNorm(64, eps=1e-5), torch.nn.Linear(64, 32), RMSNorm(32, eps=1e-6),
                                torch.nn.RMSNorm(32), RMSNorm(32, eps=1e-6, elementwise_affine=False))
    for norm in (model[0], model[2]):
        norm.weight.data.normal_()
    return model.to(torch.bfloat16)


def test_swaps_only_the_norms_the_kernel_covers():
    from modelmgr.smoke.fused_norm import FusedRMSNorm, fuse_rms_norms

    model = _model()
    x = torch.randn(5, 7, 64, dtype=torch.bfloat16)
    want = model(x)
    assert fuse_rms_norms(model) == 2  # not torch.nn.RMSNorm, not the one without a weight
    assert isinstance(model[0], FusedRMSNorm) and isinstance(model[2], FusedRMSNorm)
    assert not isinstance(model[3], FusedRMSNorm) and not isinstance(model[4], FusedRMSNorm)
    assert torch.equal(model(x), want)
    assert set(model.state_dict()) == {"0.original.weight", "1.weight", "1.bias", "2.original.weight", "3.weight"}


def test_float32_input_keeps_diffusers_semantics():
    from modelmgr.smoke.fused_norm import fuse_rms_norms

    model = _model()
    x = torch.randn(3, 64)
    want = model[0](x)
    fuse_rms_norms(model)
    got = model[0](x)
    assert got.dtype == want.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.parametrize("family", ["flux1", "flux2", "z-image"])
def test_rope_swap_keeps_diffusers_processors_and_results(models, family):
    from modelmgr.smoke import loader, sampler
    from modelmgr.smoke.fused_rope import fuse_rope
    from modelmgr.smoke.gpu_info import describe
    from modelmgr.smoke.reader import open_model

    loaded = loader.load(open_model(models[family]), describe("cpu"))
    cond = sampler.seeded_conditioning(loaded.arch, 0, "cpu", loaded.dtype)
    shape = sampler.latent_shape(loaded.arch, 64, 64)
    runner = sampler.runner_for(loaded.arch, cond, shape, "cpu", loaded.dtype)
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = runner.velocity(loaded.module, x, 0.7)
        before = {type(m.processor) for m in loaded.module.modules() if hasattr(m, "processor")}
        changed = fuse_rope(loaded.module)
        after = {type(m.processor) for m in loaded.module.modules() if hasattr(m, "processor")}
        got = runner.velocity(loaded.module, x, 0.7)
    assert changed > 0 and all(any(issubclass(a, b) for b in before) for a in after) and after != before
    assert torch.equal(got, want)  # on a CPU the fused processors run diffusers' RoPE arithmetic
