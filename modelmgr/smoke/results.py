"""What a smoke run reports, and the verdict against the bundle's published references.

The verdict is deliberately strict about comparability: a reference counts only for the same GPU
(``Expected.gpu`` equals ``torch.cuda.get_device_name``, ignoring case and spacing) at the same
resolution. Anything else is NO-REFERENCE with the reason spelled out — a number measured on an
H100 says nothing about an RTX 5090's published one. Non-finite output is a FAIL whatever the
speed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..catalogue.model import Expected

PASS, FAIL, NO_REFERENCE = "PASS", "FAIL", "NO-REFERENCE"


@dataclass
class SmokeResult:
    """One variant's run, JSON-ready (stored in ``Asset.smoke`` of the diffusion-model file)."""

    file: str
    precision: str
    family: str
    device: dict
    width: int
    height: int
    steps: int
    seed: int
    it_s: float = 0.0
    step_ms: list = field(default_factory=list)
    warmup_s: float = 0.0
    load_s: float = 0.0
    load_gb_s: float = 0.0
    load_bytes: int = 0
    weight_bytes: int = 0
    peak_vram_bytes: int | None = None
    finite: bool = True
    layers: str = ""
    conditioning: str = ""
    """What the model was conditioned on: the seeded embedding, or the text encoder(s) and tokens."""
    text_encoder_load_s: float = 0.0
    """Seconds loading the text encoder(s), before (and not part of) the diffusion model's load."""
    text_encoder_encode_s: float = 0.0
    image: str | None = None
    picture: str = ""
    verdict: str = NO_REFERENCE
    reason: str = ""
    reference: dict | None = None
    bundle: str | None = None
    asset: str | None = None
    arch_note: str = ""
    act_mode: str = "static"
    kernels: dict = field(default_factory=dict)
    """Which kernels ran: the FP8 activation quantizer's path, compiled dequantizers or their fallback."""
    at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _same_gpu(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def reference_for(references: tuple[Expected, ...], gpu: str) -> list[Expected]:
    return [r for r in references if _same_gpu(r.gpu, gpu)]


def default_settings(references: tuple[Expected, ...], gpu: str | None) -> tuple[int, int, int] | None:
    """(width, height, steps) of this GPU's reference, else of the first reference, else None."""
    mine = reference_for(references, gpu) if gpu else []
    ref = (mine or list(references) or [None])[0]
    return (ref.width, ref.height, ref.steps) if ref else None


def judge(result: SmokeResult, references: tuple[Expected, ...], is_gpu: bool) -> tuple[str, str, Expected | None]:
    """(verdict, reason, the reference used)."""
    if not result.finite:
        return FAIL, "the output has NaN or infinite values", None
    if not is_gpu:
        return NO_REFERENCE, "CPU run: not a GPU result, nothing to compare with", None
    gpu = result.device.get("name", "")
    mine = reference_for(references, gpu)
    if not references:
        return NO_REFERENCE, "no performance reference for this model", None
    if not mine:
        known = ", ".join(sorted({r.gpu for r in references}))
        return NO_REFERENCE, f"no reference for {gpu} (references exist for: {known})", None
    same = [r for r in mine if (r.width, r.height) == (result.width, result.height)]
    if not same:
        sizes = ", ".join(f"{r.width}x{r.height}" for r in mine)
        return NO_REFERENCE, f"the {gpu} reference is at {sizes}, this run at {result.width}x{result.height}", None
    ref = same[0]
    floor = ref.it_s * (1 - ref.tolerance)
    if result.it_s >= floor:
        return PASS, f"{result.it_s:.2f} it/s ≥ {floor:.2f} (reference {ref.it_s:.2f} − {ref.tolerance:.0%})", ref
    return FAIL, f"{result.it_s:.2f} it/s < {floor:.2f} (reference {ref.it_s:.2f} − {ref.tolerance:.0%})", ref
