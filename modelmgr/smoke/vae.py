"""Decode the final latent with the bundle's VAE: the picture a smoke test saves.

Both VAEs are LDM-format files (``encoder.down.N.block.M…``), converted with diffusers'
``convert_ldm_vae_checkpoint`` into ``AutoencoderKL`` (the FLUX.1 AE, also Z-Image's) or
``AutoencoderKLFlux2`` (32 latent channels plus the batch-norm statistics FLUX.2 latents are
normalized with). The config comes from the shapes; the FLUX.1 AE's latent scale and shift are
the published constants (they are not stored in the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadFileError
from . import deps
from .arch import Architecture
from .reader import load_all, open_model

FLUX1_SCALING, FLUX1_SHIFT = 0.3611, 0.1159


@dataclass
class Vae:
    module: object
    family: str
    """``flux1-vae`` or ``flux2-vae``."""
    latent_channels: int
    dtype: object


def _count(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _config(shapes: dict, name: str) -> dict:
    try:
        blocks = _count(shapes, "encoder.down")
        return dict(
            in_channels=shapes["encoder.conv_in.weight"][1], out_channels=shapes["decoder.conv_out.weight"][0],
            down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
            block_out_channels=tuple(shapes[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(blocks)),
            layers_per_block=_count(shapes, "encoder.down.0.block"),
            latent_channels=shapes["decoder.conv_in.weight"][1],
            use_quant_conv="quant_conv.weight" in shapes, use_post_quant_conv="post_quant_conv.weight" in shapes,
            mid_block_add_attention="encoder.mid.attn_1.q.weight" in shapes)
    except KeyError as err:
        raise BadFileError(f"{name}: not an LDM-format VAE (no {err.args[0]!r})") from None


def load_vae(path, device: str) -> Vae:
    """Load a FLUX.1 AE or FLUX.2 VAE file onto ``device``."""
    torch = deps.torch()
    diffusers = deps.diffusers("decoding with the VAE")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    model = open_model(path)
    if model.inspection.role != "vae" or model.inspection.family not in ("flux1-vae", "flux2-vae"):
        raise BadFileError(f"{model.name}: not a FLUX.1 or FLUX.2 VAE (the inspector sees "
                           f"{model.inspection.family or model.inspection.role})")
    tensors, _ = load_all(model, device)
    state = {k.removeprefix("vae.").removeprefix("first_stage_model."): v for k, v in tensors.items()}
    config = _config({k: tuple(v.shape) for k, v in state.items()}, model.name)
    flux2 = model.inspection.family == "flux2-vae"
    cls = diffusers.AutoencoderKLFlux2 if flux2 else diffusers.AutoencoderKL
    if not flux2:
        config.update(scaling_factor=FLUX1_SCALING, shift_factor=FLUX1_SHIFT)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    converted = convert_ldm_vae_checkpoint(dict(state), config)
    converted.update({k: v for k, v in state.items() if k.startswith("bn.")})
    with torch.device("meta"):
        module = cls(**config)
    expected = module.state_dict()
    if flux2 and "bn.num_batches_tracked" not in converted:
        converted["bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long, device=device)
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise BadFileError(f"{model.name}: VAE tensor {missing[0]!r} missing ({len(missing)} in all)")
    cast = {k: (v.to(dtype) if v.dtype.is_floating_point and not k.startswith("bn.") else v)
            for k, v in converted.items() if k in expected}
    for k, v in list(cast.items()):
        if tuple(v.shape) != tuple(expected[k].shape):
            if v.numel() != expected[k].numel():
                raise BadFileError(f"{model.name}: VAE tensor {k} is {list(v.shape)}, expected {list(expected[k].shape)}")
            cast[k] = v.reshape(expected[k].shape)
    module.load_state_dict(cast, strict=True, assign=True)
    module.eval().requires_grad_(False)
    return Vae(module, model.inspection.family, config["latent_channels"], dtype)


def decode(vae: Vae, latent, arch: Architecture):
    """Model-space latent ``[1, C, h, w]`` → ``[H, W, 3]`` uint8 image on the CPU."""
    torch = deps.torch()
    if vae.latent_channels != arch.latent_channels:
        raise BadFileError(f"the VAE has {vae.latent_channels} latent channels, the model {arch.latent_channels}",
                           "use the VAE of the model's bundle")
    device = vae.module.decoder.conv_in.weight.device
    z = latent.to(device, torch.float32)
    if vae.family == "flux2-vae":
        bn = vae.module.bn
        z = z * torch.sqrt(bn.running_var.view(1, -1, 1, 1).float() + bn.eps) + bn.running_mean.view(1, -1, 1, 1).float()
        b, c, h, w = z.shape
        z = z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
    else:
        z = z / FLUX1_SCALING + FLUX1_SHIFT
    with torch.inference_mode():
        image = vae.module.decode(z.to(vae.dtype), return_dict=False)[0]
    image = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu()


PREVIEW_SIDE = 512


def preview(latent):
    """A stand-in picture when there is no VAE: three latent channels, normalized, upscaled (≤ 512 px)."""
    torch = deps.torch()
    x = latent[0, :3].float()
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / (3 * x.std(dim=(1, 2), keepdim=True) + 1e-6)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[0] < 3:
        x = x.repeat(3, 1, 1)[:3]
    factor = max(1, min(8, PREVIEW_SIDE // max(x.shape[1], x.shape[2])))
    return x.repeat_interleave(factor, 1).repeat_interleave(factor, 2).permute(1, 2, 0).contiguous()
