"""Which diffusers model class a file becomes, with its config inferred from tensor shapes.

Nothing is fetched from a hub: every config value below is read off the checkpoint (widths, head
dimensions, block counts, context widths), so the same code builds the real 12 B FLUX.1 and the
tiny test checkpoints. The key mapping is diffusers' own single-file converter, applied through
row labels (rowmap.py). Families:

* ``flux1`` (FLUX.1 dev/schnell, Kontext: identical layout) → ``FluxTransformer2DModel``;
* ``flux2`` (dev, klein) → ``Flux2Transformer2DModel``;
* ``z-image`` → ``ZImageTransformer2DModel``. The inspector calls a NextDiT file ``z-image`` only
  at Z-Image's real width (3840); a narrower file with Z-Image's pad tokens is the same
  architecture at another width and loads as such (the tests rely on that).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

from ..errors import BadFileError
from . import deps

FLUX1_CONVERTER_WIDTH = 3072
"""diffusers' FLUX.1 converter splits ``single_blocks.N.linear1`` assuming FLUX.1's real width."""


@dataclass(frozen=True)
class Architecture:
    """A diffusion model architecture, ready to build."""

    family: str
    """``flux1``, ``flux2`` or ``z-image``."""
    class_name: str
    """The diffusers model class."""
    converter: str
    """The diffusers single-file converter (in ``diffusers.loaders.single_file_utils``)."""
    config: dict
    """Constructor arguments, inferred from shapes."""
    latent_channels: int
    """Channels of the VAE latent the model denoises (16 for the FLUX.1 AE, 32 for FLUX.2's)."""
    text_width: int
    """Width of one text-embedding token the model expects."""
    pooled_width: int = 0
    """Width of the pooled text embedding (FLUX.1's CLIP vector), 0 when unused."""
    guidance: bool = False
    """The model takes a distilled-guidance input."""
    layouts: dict = field(default_factory=dict)
    """Row-label layouts for the converter (see rowmap.apply_converter)."""
    note: str = ""
    """Anything a user should know about how the file was read."""

    def build(self):
        """The model with this config on the meta device (no memory); the loader fills it."""
        torch = deps.torch()
        cls = getattr(deps.diffusers("the smoke test"), self.class_name)
        with torch.device("meta"):
            return cls(**self.config)

    def convert_fn(self):
        from diffusers.loaders import single_file_utils

        return getattr(single_file_utils, self.converter)


Shapes = Mapping[str, tuple[int, ...]]
MODEL_CLASSES = ("FluxTransformer2DModel", "Flux2Transformer2DModel", "ZImageTransformer2DModel")
"""diffusers' classes of the families built here (``Architecture.class_name``)."""


def import_model_code() -> None:
    """Import diffusers' converters and model classes ahead of a timed load. A first import costs
    seconds on a fresh machine (``single_file_utils`` pulls in transformers) — measured on the
    H100 as 5-7 s added to whichever variant loaded first — and is not the file's load time."""
    import importlib

    diffusers = deps.diffusers("the smoke test")
    importlib.import_module("diffusers.loaders.single_file_utils")
    for name in MODEL_CLASSES:
        getattr(diffusers, name)


def count_indexed(shapes: Shapes, prefix: str) -> int:
    """How many numbered blocks ``prefix.N.*`` the shapes hold (highest N + 1)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def need_tensor(shapes: Shapes, key: str, name: str, what: str = "checkpoint of this family") -> tuple[int, ...]:
    """The shape of ``key``, or BadFileError saying the file is not a complete ``what``."""
    if key not in shapes:
        raise BadFileError(f"{name}: tensor {key!r} is missing; not a complete {what}")
    return shapes[key]


def rope_axes(head_dim: int, reference: tuple[int, ...], name: str) -> list[int]:
    """Split ``head_dim`` into even RoPE axes in the proportions of the real model's ``reference``."""
    if head_dim == sum(reference):
        return list(reference)
    total = sum(reference)
    axes = [max(2, 2 * round(head_dim * r / total / 2)) for r in reference[:-1]]
    last = head_dim - sum(axes)
    if last < 2 or last % 2:
        raise BadFileError(f"{name}: attention head width {head_dim} is too small for rotary embeddings")
    return axes + [last]


def _heads(hidden: int, head_dim: int, name: str) -> int:
    if head_dim <= 0 or hidden % head_dim:
        raise BadFileError(f"{name}: width {hidden} is not a multiple of the head width {head_dim}")
    return hidden // head_dim


def _flux1(shapes: Shapes, name: str) -> Architecture:
    hidden, in_ch = need_tensor(shapes, "img_in.weight", name)
    head = need_tensor(shapes, "double_blocks.0.img_attn.norm.query_norm.scale", name)[0]
    singles = count_indexed(shapes, "single_blocks")
    layouts: dict[str, list[int]] = {}
    if hidden != FLUX1_CONVERTER_WIDTH:
        rows = need_tensor(shapes, "single_blocks.0.linear1.weight", name)[0]
        layouts = {f"single_blocks.{i}.linear1.{p}": _padded_split(hidden, rows - 3 * hidden)
                   for i in range(singles) for p in ("weight", "bias")}
    config = dict(patch_size=1, in_channels=in_ch, out_channels=need_tensor(shapes, "final_layer.linear.weight", name)[0],
                  num_layers=count_indexed(shapes, "double_blocks"), num_single_layers=singles, attention_head_dim=head,
                  num_attention_heads=_heads(hidden, head, name),
                  joint_attention_dim=need_tensor(shapes, "txt_in.weight", name)[1],
                  pooled_projection_dim=need_tensor(shapes, "vector_in.in_layer.weight", name)[1],
                  guidance_embeds="guidance_in.in_layer.weight" in shapes,
                  axes_dims_rope=tuple(rope_axes(head, (16, 56, 56), name)))
    return Architecture("flux1", "FluxTransformer2DModel", "convert_flux_transformer_checkpoint_to_diffusers",
                        config, latent_channels=in_ch // 4, text_width=config["joint_attention_dim"],
                        pooled_width=config["pooled_projection_dim"], guidance=config["guidance_embeds"],
                        layouts=layouts)


def _padded_split(hidden: int, mlp: int) -> list[int]:
    """Labels of a width-``hidden`` ``linear1`` laid out as the converter's 3072-wide split expects."""
    width = FLUX1_CONVERTER_WIDTH
    out: list[int] = []
    for part, size in enumerate((hidden, hidden, hidden, mlp)):
        target = 4 * width if part == 3 else width
        if size > target:
            raise BadFileError(f"FLUX.1 layer wider than FLUX.1 itself ({size} > {target})")
        out += list(range(part * hidden, part * hidden + size)) + [-1] * (target - size)
    return out


def _flux2(shapes: Shapes, name: str) -> Architecture:
    hidden, in_ch = need_tensor(shapes, "img_in.weight", name)
    head = need_tensor(shapes, "double_blocks.0.img_attn.norm.query_norm.scale", name)[0]
    mlp_rows = need_tensor(shapes, "double_blocks.0.img_mlp.0.weight", name)[0]
    config = dict(patch_size=1, in_channels=in_ch, out_channels=need_tensor(shapes, "final_layer.linear.weight", name)[0],
                  num_layers=count_indexed(shapes, "double_blocks"), num_single_layers=count_indexed(shapes, "single_blocks"),
                  attention_head_dim=head, num_attention_heads=_heads(hidden, head, name),
                  joint_attention_dim=need_tensor(shapes, "txt_in.weight", name)[1],
                  timestep_guidance_channels=need_tensor(shapes, "time_in.in_layer.weight", name)[1],
                  mlp_ratio=mlp_rows / 2 / hidden, guidance_embeds="guidance_in.in_layer.weight" in shapes,
                  axes_dims_rope=tuple(rope_axes(head, (32, 32, 32, 32), name)))
    return Architecture("flux2", "Flux2Transformer2DModel", "convert_flux2_transformer_checkpoint_to_diffusers",
                        config, latent_channels=in_ch // 4, text_width=config["joint_attention_dim"],
                        guidance=config["guidance_embeds"])


def _zimage(shapes: Shapes, name: str) -> Architecture:
    dim, patch_in = need_tensor(shapes, "x_embedder.weight", name)
    head = need_tensor(shapes, "layers.0.attention.q_norm.weight", name)[0]
    ffn = need_tensor(shapes, "layers.0.feed_forward.w1.weight", name)[0]
    if ffn != int(dim / 3 * 8):
        raise BadFileError(f"{name}: feed-forward width {ffn} is not Z-Image's 8/3 × {dim}")
    if patch_in % 4:
        raise BadFileError(f"{name}: x_embedder input width {patch_in} is not 4 × latent channels")
    config = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=patch_in // 4, dim=dim,
                  n_layers=count_indexed(shapes, "layers"), n_refiner_layers=count_indexed(shapes, "noise_refiner"),
                  n_heads=_heads(dim, head, name), n_kv_heads=dim // head,
                  cap_feat_dim=need_tensor(shapes, "cap_embedder.1.weight", name)[1],
                  axes_dims=rope_axes(head, (32, 48, 48), name))
    note = "" if dim == 3840 else f"Z-Image architecture at width {dim} (the real model is 3840 wide)"
    return Architecture("z-image", "ZImageTransformer2DModel", "convert_z_image_transformer_checkpoint_to_diffusers",
                        config, latent_channels=patch_in // 4, text_width=config["cap_feat_dim"], note=note)


SUPPORTED = "FLUX.1 (dev, schnell, Kontext), FLUX.2 and Z-Image"


def smoke_family(family: str | None, names: Container[str]) -> str | None:
    """The family the smoke test builds for a file: the inspector's, except that a NextDiT
    (``lumina2``) with Z-Image's pad tokens is Z-Image (the inspector calls Z-Image-shaped models
    narrower than its 3840 ``lumina2``). ``names``: the file's tensor names."""
    if family == "lumina2" and "x_pad_token" in names and "cap_pad_token" in names:
        return "z-image"
    return family


def detect(family: str | None, shapes: Shapes, name: str) -> Architecture:
    """The architecture of a diffusion-model file from the inspector's family and the shapes."""
    family = smoke_family(family, shapes)
    if family == "flux1":
        return _flux1(shapes, name)
    if family == "flux2":
        return _flux2(shapes, name)
    if family == "z-image":
        return _zimage(shapes, name)
    what = f"a {family} model" if family else "not a diffusion model modelmgr recognizes"
    raise BadFileError(f"{name}: {what}; the smoke test runs {SUPPORTED}")
