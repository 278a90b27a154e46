"""Which device the smoke test runs on and what it can do natively.

The numbers a smoke test reports only mean something next to the hardware that produced them, so
this module names the device exactly as torch does (that name is what bundle references match),
and decides per format whether the GPU has a native kernel:

* FP8 matmuls (``torch._scaled_mm``) from compute capability 8.9 (Ada, Hopper, Blackwell);
* NVFP4 matmuls through comfy-kitchen only from compute capability 10.0 (Blackwell) and only when
  comfy-kitchen is importable — it is optional and never required; elsewhere NVFP4 is emulated.

Without a GPU everything still runs on the CPU, labelled so that nobody mistakes it for a GPU
result.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass

from ..errors import UsageError
from . import deps

FP8_MIN_CC = (8, 9)
NVFP4_MIN_CC = (10, 0)
CPU_LABEL = "CPU, not a GPU result"


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run used."""

    device: str
    """torch device string (``cuda:0``, ``cpu``)."""
    name: str
    """``torch.cuda.get_device_name`` (what ``Expected.gpu`` is matched against), or the CPU's name."""
    is_gpu: bool
    """True for a CUDA device."""
    capability: tuple[int, int] | None
    """CUDA compute capability, None on the CPU."""
    memory_bytes: int | None
    """Total device memory."""
    torch_version: str
    """torch.__version__ (with its CUDA build)."""
    fp8_native: bool
    """FP8 weights run through FP8 matmuls (else they are dequantized to BF16)."""
    nvfp4_native: bool
    """NVFP4 weights run through comfy-kitchen's FP4 matmul (else emulated: dequantized to BF16)."""

    @property
    def label(self) -> str:
        """One line for reports: the GPU and its capability, or the CPU warning."""
        if not self.is_gpu:
            return f"{self.name} ({CPU_LABEL})"
        major, minor = self.capability or (0, 0)
        return f"{self.name} (cc {major}.{minor}, torch {self.torch_version})"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["label"] = self.label
        return out


def resolve_device(requested: str | None) -> str:
    """``cuda:0`` when a GPU is there and nothing was asked, else what was asked (checked)."""
    torch = deps.torch("the smoke test")
    if requested is None or requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {requested!r} is not a torch device", "use cuda, cuda:N or cpu") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested} asked for, but torch sees no CUDA GPU",
                             "leave --device out to run on the CPU, or install a CUDA build of torch")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present")
        return f"cuda:{index}"
    if dev.type != "cpu":
        raise UsageError(f"--device {requested}: only CUDA GPUs and the CPU are supported")
    return "cpu"


def _nvfp4_kernel_available() -> bool:
    """comfy-kitchen importable and able to run its FP4 matmul here (it checks cc 10.0 itself)."""
    ck = deps.optional("comfy_kitchen")
    return ck is not None and hasattr(ck, "scaled_mm_nvfp4")


def describe(device: str) -> DeviceInfo:
    """What ``device`` is and which formats run natively on it."""
    torch = deps.torch("the smoke test")
    if not device.startswith("cuda"):
        cpu = platform.processor() or platform.machine() or "CPU"
        return DeviceInfo(device, cpu, False, None, None, torch.__version__, False, False)
    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    cc = (props.major, props.minor)
    fp8 = cc >= FP8_MIN_CC and hasattr(torch, "_scaled_mm")
    nvfp4 = cc >= NVFP4_MIN_CC and _nvfp4_kernel_available()
    version = f"{torch.__version__}" + (f", CUDA {torch.version.cuda}" if torch.version.cuda else "")
    return DeviceInfo(device, torch.cuda.get_device_name(dev), True, cc, props.total_memory, version, fp8, nvfp4)
