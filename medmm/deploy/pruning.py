"""Pruning of the image encoder: structured (channels removed, the model really shrinks) and unstructured.

Structured pruning narrows the backbone through its config widths (``image_encoder.widths``), so
a pruned model is an ordinary, smaller ``MedMM`` that every loader rebuilds from its config. The
channels kept are those with the largest L1 norm of the BN-folded filter (|gamma| / sqrt(var) times
the conv filter's L1 norm: a channel that BatchNorm scales to ~0 contributes nothing, whatever its
raw weights). Channels tied by residual additions (ResNet) or concatenation (DenseNet) are chosen
together. torch-pruning could find those couplings generically, but its result is a model whose
shape no config describes (and that it saves by pickling); rebuilding through the config keeps the
run dir plain safetensors + JSON. Supported: ``slim``, ``resnet10``, ``resnet18``, ``densenet121``.

Unstructured pruning zeroes the smallest-magnitude weights of every conv/linear layer of the image
encoder and fusion head (``torch.nn.utils.prune``); the model keeps its shape (sparser, not faster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from medmm.errors import MedmmConfigError

RESNET_FAMILY = ("slim", "resnet10", "resnet18")
STRUCTURED_BACKBONES = (*RESNET_FAMILY, "densenet121")


def _effective_l1(conv: nn.Module, bn: nn.Module | None) -> torch.Tensor:
    """Per-output-channel L1 norm of a conv filter after folding in the following BatchNorm's scale."""
    norm = conv.weight.detach().abs().flatten(1).sum(1)
    if bn is not None:
        norm = norm * bn.weight.detach().abs() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return norm


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in their original order (so channel order is kept)."""
    return torch.sort(torch.topk(score, k).indices).values


def _copy_conv(dst: nn.Module, src: nn.Module, out_keep: torch.Tensor, in_keep: torch.Tensor) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight[out_keep][:, in_keep])
        if src.bias is not None:
            dst.bias.copy_(src.bias[out_keep])


def _copy_bn(dst: nn.Module, src: nn.Module, keep: torch.Tensor) -> None:
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst, name).copy_(getattr(src, name)[keep])
        dst.num_batches_tracked.copy_(src.num_batches_tracked)


@dataclass
class _Segment:
    """Channels that must be kept together: every (conv, bn) writing into them shares one selection."""

    writers: list[tuple[str, str]] = field(default_factory=list)
    keep: torch.Tensor | None = None


def _resnet_plan(net: nn.Module) -> tuple[list[_Segment], list[tuple[str, str, int, int]]]:
    """Segments of a MONAI ResNet and its convs as ``(conv, bn, out_segment, in_segment)`` (-1 = input)."""
    segments = [_Segment([("conv1", "bn1")])]
    convs = [("conv1", "bn1", 0, -1)]
    current = 0
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(net, layer)):
            name = f"{layer}.{i}"
            if block.downsample is not None and not isinstance(block.downsample, nn.Sequential):
                raise MedmmConfigError("image_encoder", "structured pruning needs shortcut_type 'B' ResNets")
            inner = len(segments)
            segments.append(_Segment([(f"{name}.conv1", f"{name}.bn1")]))
            convs.append((f"{name}.conv1", f"{name}.bn1", inner, current))
            if block.downsample is not None:
                out = len(segments)
                segments.append(_Segment([(f"{name}.downsample.0", f"{name}.downsample.1")]))
                convs.append((f"{name}.downsample.0", f"{name}.downsample.1", out, current))
                current = out
            segments[current].writers.append((f"{name}.conv2", f"{name}.bn2"))
            convs.append((f"{name}.conv2", f"{name}.bn2", current, inner))
    return segments, convs


def _prune_resnet(src: nn.Module, dst: nn.Module) -> torch.Tensor:
    """Copy the kept channels of MONAI ResNet ``src`` into the narrower ``dst``; returns the output keep."""
    segments, convs = _resnet_plan(src)
    for seg in segments:
        score = sum(_effective_l1(src.get_submodule(c), src.get_submodule(b)) for c, b in seg.writers)
        seg.keep = _top(score, dst.get_submodule(seg.writers[0][1]).num_features)
    for conv, bn, out_seg, in_seg in convs:
        in_keep = torch.arange(src.get_submodule(conv).in_channels) if in_seg < 0 else segments[in_seg].keep
        _copy_conv(dst.get_submodule(conv), src.get_submodule(conv), segments[out_seg].keep, in_keep)
        _copy_bn(dst.get_submodule(bn), src.get_submodule(bn), segments[out_seg].keep)
    return segments[convs[-1][2]].keep


def _prune_densenet(src: nn.Module, dst: nn.Module) -> torch.Tensor:
    """Copy kept channels of MONAI DenseNet ``src`` into ``dst``; the concatenated stream is tracked
    as the list of kept source channels. Returns the output keep."""
    s, d = src.features, dst.features
    keep = _top(_effective_l1(s.conv0, s.norm0), d.conv0.out_channels)
    _copy_conv(d.conv0, s.conv0, keep, torch.arange(s.conv0.in_channels))
    _copy_bn(d.norm0, s.norm0, keep)
    for name, block in s.named_children():
        if name.startswith("denseblock"):
            for lname, layer in block.named_children():
                sl, dl = layer.layers, d.get_submodule(f"{name}.{lname}").layers
                _copy_bn(dl.norm1, sl.norm1, keep)
                inner = _top(_effective_l1(sl.conv1, sl.norm2), dl.conv1.out_channels)
                _copy_conv(dl.conv1, sl.conv1, inner, keep)
                _copy_bn(dl.norm2, sl.norm2, inner)
                new = _top(sl.conv2.weight.detach().abs().flatten(1).sum(1), dl.conv2.out_channels)
                _copy_conv(dl.conv2, sl.conv2, new, inner)
                keep = torch.cat([keep, new + sl.norm1.num_features])  # this layer's output follows its input
        elif name.startswith("transition"):
            st, dt = block, d.get_submodule(name)
            _copy_bn(dt.norm, st.norm, keep)
            out = _top(st.conv.weight.detach().abs().flatten(1).sum(1), dt.conv.out_channels)
            _copy_conv(dt.conv, st.conv, out, keep)
            keep = out
    _copy_bn(d.norm5, s.norm5, keep)
    return keep


def backbone_widths(encoder: nn.Module) -> list[int]:
    """The backbone's current config widths (``block_inplanes`` / ``[init_features, growth_rate]``)."""
    name, net = encoder.cfg.name, encoder.backbone
    if name in RESNET_FAMILY:
        return [getattr(net, f"layer{i}")[0].bn2.num_features for i in range(1, 5)]
    if name == "densenet121":
        return [net.features.conv0.out_channels, net.features.denseblock1.denselayer1.layers.conv2.out_channels]
    raise MedmmConfigError("--prune-kind structured",
                           f"supports image encoders {', '.join(STRUCTURED_BACKBONES)}, not {name!r}")


def _encoder_columns(encoder: nn.Module, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input columns of ``pool_proj`` and ``token_proj`` that survive when the backbone keeps ``keep``
    (both read the backbone's channels, `ImageEncoder.embed`)."""
    pool_in = encoder.pool_proj[-1].in_features
    token_in = encoder.token_proj.in_features
    c = encoder.channels
    return torch.cat([keep, torch.arange(c, pool_in)]), torch.cat([keep, torch.arange(c, token_in)])


def structured_prune(model: nn.Module, ratio: float) -> nn.Module:
    """``model`` (changed in place) with an image-encoder backbone that keeps ``1 - ratio`` of its
    channels per layer. In place because the encoder's feature function is a closure over its own
    backbone, which ``copy.deepcopy`` would not re-point.

    Raises:
        MedmmConfigError: ``ratio`` outside (0, 1) or an unsupported backbone.
    """
    from medmm.models.image_encoder import ImageEncoder

    if not 0.0 < ratio < 1.0:
        raise MedmmConfigError("--prune", f"must be a fraction of channels in (0, 1), got {ratio}")
    src = model.image_encoder
    widths = [max(1, round(w * (1.0 - ratio))) for w in backbone_widths(src)]
    config = model.config.model_copy(deep=True)
    config.image_encoder.widths = widths
    dst = ImageEncoder(config.image_encoder)
    keep = (_prune_resnet if src.cfg.name in RESNET_FAMILY else _prune_densenet)(src.backbone, dst.backbone)
    pool_cols, token_cols = _encoder_columns(src, keep)
    src_state = src.state_dict()
    for key, value in dst.state_dict().items():
        if key.startswith("backbone."):
            continue
        source = src_state[key]
        if key == f"pool_proj.{len(src.pool_proj) - 1}.weight":
            source = source[:, pool_cols]
        elif key == "token_proj.weight":
            source = source[:, token_cols]
        with torch.no_grad():
            value.copy_(source)
    model.config = config
    model.image_encoder = dst
    return model.eval()


def unstructured_prune(model: nn.Module, ratio: float) -> tuple[nn.Module, dict[str, float]]:
    """``model`` (changed in place, see `structured_prune`) with the ``ratio`` smallest-|w| weights of each conv/linear layer of the
    image encoder and fusion head set to zero (baked in: no pruning masks remain).

    Returns:
        ``(model, {"layers": n, "sparsity": fraction of zeros in those layers})``.
    """
    from torch.nn.utils import prune

    if not 0.0 < ratio < 1.0:
        raise MedmmConfigError("--prune", f"must be a fraction of weights in (0, 1), got {ratio}")
    layers = [m for part in (model.image_encoder, model.fusion) for m in part.modules()
              if isinstance(m, (nn.Conv3d, nn.Linear))]
    for module in layers:
        prune.l1_unstructured(module, "weight", amount=ratio)
        prune.remove(module, "weight")
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total = sum(m.weight.numel() for m in layers)
    return model.eval(), {"layers": len(layers), "sparsity": round(zeros / max(1, total), 4)}
