"""int8 quantisation: how weights are stored (safely) and how a quantised model runs on the CPU.

Storage: every float weight matrix / conv kernel / embedding of >= ``MIN_INT8_NUMEL`` values is
kept as int8 plus one fp32 scale per output row (symmetric, ``w ≈ q * scale``) in the same
safetensors file (``deploy.int8_scale.<key>``); loading dequantises them (`split_compressed`).

Runtime (`attach_runtime`), CPU only:

- 3D convolutions of the image backbone: static post-training quantisation with PyTorch's FX
  flow (``prepare_fx`` → calibration on training scans → ``convert_fx``, ``x86`` engine: per-channel
  int8 weights, uint8 activations from histogram observers). Each activation observer's calibrated
  scale and zero point are stored as tensors (``deploy.ptq.*``), so loading re-runs ``prepare_fx``
  on the rebuilt float backbone, gives the observers those qparams and converts — no pickle, the
  same int8 graph every time.
  Measured on this CPU: ONNX Runtime's static quantiser has no fast int8 Conv3d kernel (7x slower
  than its fp32 graph), the FX ``x86`` flow is the one that runs fast (benchmarks/compress.py).
- ``nn.Linear`` layers of the text encoder and the report LM: dynamic int8 (``quantize_dynamic``).
  The fusion head and pooling projections stay fp32: they are tiny, and Grad-CAM explanations
  need gradients through them, which quantised kernels do not have.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from medmm.errors import MedmmInputError

MIN_INT8_NUMEL = 1024
SCALE_PREFIX = "deploy.int8_scale."
PTQ_PREFIX = "deploy.ptq."
ENGINE = "x86"


# --------------------------------------------------------------------------------------- storage
def encode_int8(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as int8 + per-row fp32 scales (other tensors unchanged); see module docstring."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if value.is_floating_point() and value.ndim >= 2 and value.numel() >= MIN_INT8_NUMEL:
            rows = value.float().flatten(1)
            scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
            out[key] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(value.shape)
            out[SCALE_PREFIX + key] = scale.contiguous()
        else:
            out[key] = value
    return out


def split_compressed(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(model tensors with int8 weights dequantised to fp32, PTQ observer state)``.

    A checkpoint without ``deploy.*`` entries comes back unchanged with an empty PTQ state.
    """
    if not any(key.startswith("deploy.") for key in tensors):
        return tensors, {}
    model_tensors = {k: v for k, v in tensors.items() if not k.startswith("deploy.")}
    for key, scale in tensors.items():
        if key.startswith(SCALE_PREFIX):
            name = key[len(SCALE_PREFIX):]
            q = model_tensors[name]
            model_tensors[name] = (q.float().flatten(1) * scale[:, None]).reshape(q.shape)
    ptq = {k[len(PTQ_PREFIX):]: v for k, v in tensors.items() if k.startswith(PTQ_PREFIX)}
    return model_tensors, ptq


# ---------------------------------------------------------------------------------------- runtime
class BackboneFeatures(nn.Module):
    """The encoder's CNN feature function as a module (what FX traces and quantises)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.backbone = encoder.backbone
        self._fn = encoder._features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)


def _prepared(encoder: nn.Module, example: torch.Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return prepare_fx(BackboneFeatures(encoder).eval(), get_default_qconfig_mapping(ENGINE), (example,))


def _observers(prepared: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in prepared.named_modules() if name.startswith("activation_post_process")}


def _observer_state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    """Each activation observer's calibrated ``(scale, zero_point)``: all that conversion needs
    (the histograms behind them would add ~8 KB per observer)."""
    state: dict[str, torch.Tensor] = {}
    for name, observer in _observers(prepared).items():
        scale, zero_point = observer.calculate_qparams()
        state[f"{name}.scale"] = scale.detach().float().reshape(-1).clone()
        state[f"{name}.zero_point"] = zero_point.detach().to(torch.int64).reshape(-1).clone()
    return state


def _fixed_qparams(scale: torch.Tensor, zero_point: torch.Tensor):
    def calculate_qparams() -> tuple[torch.Tensor, torch.Tensor]:
        return scale.reshape(()) if scale.numel() == 1 else scale, zero_point.reshape(()) if zero_point.numel() == 1 else zero_point

    return calculate_qparams


def calibrate_backbone(encoder: nn.Module, images: Iterable[torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Run ``images`` (``[1, C, X, Y, Z]`` each) through an observed copy of the backbone.

    Returns:
        ``(observer state to store, number of calibration scans)``.
    """
    prepared = None
    n = 0
    with torch.inference_mode():
        for image in images:
            if prepared is None:
                prepared = _prepared(encoder, image)
            prepared(image)
            n += 1
    if prepared is None:
        raise MedmmInputError(None, "int8 calibration needs at least one training scan; none were found")
    return _observer_state(prepared), n


def quantised_backbone(encoder: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The int8 backbone feature module rebuilt from the float ``encoder`` and stored observer state."""
    from torch.ao.quantization.quantize_fx import convert_fx

    roi = 32
    prepared = _prepared(encoder, torch.zeros(1, encoder.cfg.in_channels, roi, roi, roi))
    observers = _observers(prepared)
    expected = {f"{name}.{part}" for name in observers for part in ("scale", "zero_point")}
    if set(state) != expected:
        raise MedmmInputError(None, f"stored int8 calibration has {len(state)} entries, the backbone needs "
                              f"{len(expected)}; the checkpoint does not match its model config")
    for name, observer in observers.items():  # conversion asks each observer for its qparams: the stored ones
        observer.calculate_qparams = _fixed_qparams(state[f"{name}.scale"], state[f"{name}.zero_point"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


def dynamic_int8_linear(model: nn.Module) -> int:
    """Dynamic int8 for every ``nn.Linear`` of the text encoder and report LM (in place); returns how many."""
    from torch.ao.quantization import quantize_dynamic

    torch.backends.quantized.engine = ENGINE
    count = 0
    for name in ("text_encoder", "report_generator"):
        part = getattr(model, name, None)
        if part is None:
            continue
        count += sum(isinstance(m, nn.Linear) for m in part.modules())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(part, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return count


def attach_runtime(model: nn.Module, ptq_state: Mapping[str, torch.Tensor], linear_int8: bool) -> nn.Module:
    """Make a loaded model run int8: the quantised backbone replaces the encoder's feature function
    (kept out of the module tree, so it never enters a state dict) and Linear layers go dynamic int8."""
    if ptq_state:
        encoder = model.image_encoder
        object.__setattr__(encoder, "_features", quantised_backbone(encoder, ptq_state))
    if linear_int8:
        dynamic_int8_linear(model)
    return model
