"""Stored weight formats, kept in their stored form on the device.

Each format has a *weight* (a frozen dataclass of device tensors that can be sliced by output
rows and dequantized) and a linear layer that runs it: :class:`~.fp8.Fp8Linear` (FP8 matmuls or
dequantization), :class:`~.nvfp4.NvFp4Linear` (comfy-kitchen's FP4 matmul on Blackwell, emulated
elsewhere) and :class:`~.base.DequantLinear` (GGUF, and anything emulated: dequantize on the fly
each forward, as ComfyUI does, so VRAM holds the packed weights). Row slicing is what lets
diffusers' key converters split fused QKV projections without ever dequantizing (see rowmap.py).
"""
