"""The GPU smoke test, the precision bench and the quantizer.

``modelmgr smoke`` proves that one variant of a diffusion model loads in its stored format and
runs at the speed it should; ``modelmgr bench`` runs several variants with the same seed and
settings and compares speed and quality with the BF16 run; ``modelmgr quantize`` writes
FP8-scaled, NVFP4 and GGUF Q8_0 files in exactly the layouts ComfyUI loads.

The pieces, each small:

* :mod:`.deps` — the one place torch / diffusers are imported, with a clear error naming the
  ``gpu`` extra when they are missing (this package imports them inside functions only, so the
  core never needs them);
* :mod:`.gpu_info` — which device, which native kernels it has (FP8 from cc 8.9, NVFP4 from 10.0);
* :mod:`.reader` — tensor bytes straight from the file to the device, using the inspector's offsets;
* :mod:`.quant` — the stored formats as weights that can be sliced, moved, dequantized, and the
  linear layers that run them (FP8 matmuls fed by a one-pass Triton activation quantizer,
  comfy-kitchen NVFP4, on-the-fly dequantization);
* :mod:`.rowmap` and :mod:`.arch` — diffusers' model classes and single-file key converters,
  config inferred from tensor shapes, applied to quantized weights without dequantizing them;
* :mod:`.fused_norm` and :mod:`.fused_rope` — diffusers' RMSNorm and rotary embeddings as one
  Triton kernel each on a GPU (same arithmetic; eager they were 30–45 % of a step), built and
  reported through :mod:`.triton_kernels`;
* :mod:`.loader` — file → module on the device; :mod:`.sampler` — the flow-matching loop and its
  timing; :mod:`.vae` and :mod:`.png` — the picture; :mod:`.runner`, :mod:`.results` and
  :mod:`.bench` (+ :mod:`.quality`, :mod:`.report_html`) — the two commands; :mod:`.quantize` and
  :mod:`.writers` — the quantizer; :mod:`.targets` — bundle / asset / file resolution and the
  registry record; :mod:`.text` — text conditioning from the text encoders; :mod:`.api` — the
  entry points front ends call.

Text conditioning is a seeded embedding of the right shape by default (fast, needs nothing); asked
for, :mod:`.text` runs the bundle's text encoder(s) instead (transformers classes, config from the
shapes, on a tokenizer found locally or on seeded token ids), once per command and freed before the
diffusion model loads. Reports say which.
"""
