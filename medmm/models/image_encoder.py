"""3D CNN image encoder: a MONAI backbone run as a fully convolutional feature extractor.

The backbone is any of MONAI's DenseNet121, ResNet (10/18 and the ``slim`` default), SEResNet50,
EfficientNetBN, SwinUNETR's Swin-ViT, or the SegResNet / SegResNetDS encoders, built without their
classification layers or decoders (so they take public CT weights, `medmm.models.encoder_weights`). :meth:`ImageEncoder.feature_map` is
fully convolutional, so the sliding-window inferer can stitch the maps of ROI-sized windows of a
larger volume; :meth:`ImageEncoder.embed` turns a (possibly stitched) map into one pooled
embedding for the classifier and a small grid of tokens for the report generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks import nets
from torch import nn

from medmm.config.network import ImageEncoderConfig
from medmm.errors import MedmmConfigError

#: Default (block_inplanes, layers) of the ResNet-family options.
_RESNET_DEFAULTS: dict[str, tuple[list[int], list[int]]] = {
    "slim": ([16, 32, 64, 128], [1, 1, 1, 1]),
    "resnet10": ([64, 128, 256, 512], [1, 1, 1, 1]),
    "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2]),
}


def _last_norm_channels(module: nn.Module) -> int:
    """Channels of the last normalisation layer (= the backbone's output channels)."""
    channels = [m.num_features for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return int(channels[-1])


def build_backbone(cfg: ImageEncoderConfig) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """Build the MONAI network named by ``cfg.name`` without its classifier.

    Returns:
        ``(network, features_fn, channels)``: the module (registered by the caller so its weights
        are saved), a function mapping ``[B, in, X, Y, Z]`` to the last feature map, and that
        map's channel count.
    """
    dims, inc = cfg.spatial_dims, cfg.in_channels
    if cfg.name in _RESNET_DEFAULTS:
        widths, layers = _RESNET_DEFAULTS[cfg.name]
        net = nets.ResNet(
            block="basic",
            layers=cfg.depth or layers,
            block_inplanes=cfg.widths or widths,
            spatial_dims=dims,
            n_input_channels=inc,
            conv1_t_size=7,
            conv1_t_stride=cfg.stem_stride,
            feed_forward=False,
        )

        def resnet_features(x: torch.Tensor) -> torch.Tensor:
            x = net.act(net.bn1(net.conv1(x)))
            if not net.no_max_pool:
                x = net.maxpool(x)
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))

        return net, resnet_features, _last_norm_channels(net.layer4)
    if cfg.name == "densenet121":
        kwargs: dict = {}
        if cfg.depth:
            kwargs["block_config"] = tuple(cfg.depth)
        if cfg.widths:
            kwargs["init_features"] = cfg.widths[0]
            if len(cfg.widths) > 1:
                kwargs["growth_rate"] = cfg.widths[1]
        net = nets.DenseNet121(spatial_dims=dims, in_channels=inc, out_channels=1, **kwargs)
        del net.class_layers  # unused classifier; keeps the state dict to what is trained

        def densenet_features(x: torch.Tensor) -> torch.Tensor:
            return F.relu(net.features(x))  # MONAI's features end at norm5; the ReLU lives in class_layers

        return net, densenet_features, _last_norm_channels(net.features)
    if cfg.name == "seresnet50":
        kwargs = {"inplanes": cfg.widths[0]} if cfg.widths else {}
        if cfg.depth:
            kwargs["layers"] = tuple(cfg.depth)
        net = nets.SEResNet50(spatial_dims=dims, in_channels=inc, num_classes=1, **kwargs)
        del net.last_linear
        return net, net.features, _last_norm_channels(net.layer4)
    if cfg.name == "efficientnet-b0":
        net = nets.EfficientNetBN(
            "efficientnet-b0", pretrained=False, spatial_dims=dims, in_channels=inc, num_classes=1
        )
        del net._fc

        def efficientnet_features(x: torch.Tensor) -> torch.Tensor:
            x = net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(x))))
            x = net._blocks(x)
            return net._swish(net._bn1(net._conv_head(net._conv_head_padding(x))))

        return net, efficientnet_features, int(net._bn1.num_features)
    if cfg.name in _EXTRA_BACKBONES:
        return _EXTRA_BACKBONES[cfg.name](cfg)
    raise ValueError(f"unknown image encoder {cfg.name!r}")  # unreachable: the schema restricts names


#: SwinUNETR's Swin-ViT defaults (the self-supervised CT weights: feature_size 48, depths 2,2,2,2).
SWIN_FEATURE_SIZE, SWIN_DEPTHS, SWIN_HEADS, SWIN_WINDOW, SWIN_PATCH = 48, (2, 2, 2, 2), (3, 6, 12, 24), 7, 2
#: SegResNet / SegResEncoder defaults: MONAI's blocks_down and SegResEncoder's init_filters (a bundle's
#: own values are in its configs/*.json network_def; the load report shows any difference).
SEGRESNET_FILTERS, SEGRESNET_BLOCKS = 32, (1, 2, 2, 4)


def _swin_vit(cfg: ImageEncoderConfig) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """SwinUNETR's ``swinViT`` (MONAI ``SwinTransformer``); the map is its deepest normalised stage."""
    from monai.networks.nets.swin_unetr import SwinTransformer

    size = cfg.widths[0] if cfg.widths else SWIN_FEATURE_SIZE
    net = SwinTransformer(in_chans=cfg.in_channels, embed_dim=size, window_size=(SWIN_WINDOW,) * 3,
                          patch_size=(SWIN_PATCH,) * 3, depths=tuple(cfg.depth or SWIN_DEPTHS), num_heads=SWIN_HEADS,
                          drop_path_rate=0.0, spatial_dims=3, downsample="merging")
    multiple = SWIN_PATCH * 2**4  # patch embedding, then four patch-merging stages

    def swin_features(x: torch.Tensor) -> torch.Tensor:
        if any(s % multiple for s in x.shape[2:]):
            raise MedmmConfigError("network.image_encoder.name", f"swin_vit needs image sides divisible by "
                                   f"{multiple}, got {tuple(x.shape[2:])}; make the crop / inferer roi_size multiples of {multiple}")
        return net(x, normalize=True)[-1]  # as SwinUNETR: layer-normalised hidden state of the last stage

    return net, swin_features, size * 16


def _segresnet(cfg: ImageEncoderConfig) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """MONAI ``SegResNet`` without its decoder (keys ``convInit.*``, ``down_layers.*`` of a bundle)."""
    filters = cfg.widths[0] if cfg.widths else SEGRESNET_FILTERS
    blocks = tuple(cfg.depth or SEGRESNET_BLOCKS)
    net = nets.SegResNet(spatial_dims=3, init_filters=filters, in_channels=cfg.in_channels, out_channels=1,
                         blocks_down=blocks, blocks_up=(1,) * (len(blocks) - 1))
    del net.up_layers, net.up_samples, net.conv_final  # decoder: unused by a classifier

    def segresnet_features(x: torch.Tensor) -> torch.Tensor:
        return net.encode(x)[0]

    return net, segresnet_features, filters * 2 ** (len(blocks) - 1)


def _segresnet_ds(cfg: ImageEncoderConfig) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], int]:
    """MONAI ``SegResEncoder`` of SegResNetDS (keys ``conv_init.*``, ``layers.*``: CT-FM's feature extractor)."""
    from monai.networks.nets.segresnet_ds import SegResEncoder

    filters = cfg.widths[0] if cfg.widths else SEGRESNET_FILTERS
    blocks = tuple(cfg.depth or SEGRESNET_BLOCKS)
    net = SegResEncoder(spatial_dims=3, init_filters=filters, in_channels=cfg.in_channels, blocks_down=blocks,
                        norm=cfg.norm or "batch")

    def segresnet_ds_features(x: torch.Tensor) -> torch.Tensor:
        return net(x)[-1]

    return net, segresnet_ds_features, filters * 2 ** (len(blocks) - 1)


_EXTRA_BACKBONES = {"swin_vit": _swin_vit, "segresnet": _segresnet, "segresnet_ds": _segresnet_ds}


class ImageEncoder(nn.Module):
    """MONAI 3D CNN + pooling heads producing a pooled embedding and spatial tokens.

    Args:
        cfg: encoder settings (backbone name, widths/depth, ``embed_dim``, ``token_grid``).

    Example:
        >>> enc = ImageEncoder(ImageEncoderConfig())
        >>> fmap = enc.feature_map(torch.zeros(2, 1, 32, 32, 32))
        >>> pooled, tokens = enc.embed(fmap)  # [2, 128], [2, 8, 128]
    """

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone, self._features, self.channels = build_backbone(cfg)
        self.pool_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(self.channels, cfg.embed_dim))
        self.token_proj = nn.Linear(self.channels, cfg.embed_dim)
        # learned position of each token in the grid, so the report generator knows "left/upper"
        self.token_pos = nn.Parameter(torch.zeros(cfg.n_tokens, cfg.embed_dim))
        nn.init.normal_(self.token_pos, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Fully convolutional features ``[B, C, x, y, z]`` of an image ``[B, in, X, Y, Z]``."""
        if x.ndim != 5:
            raise ValueError(f"image must be [B, C, X, Y, Z], got shape {tuple(x.shape)}")
        return self._features(x)

    def embed(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool a feature map into ``(pooled [B, D], tokens [B, N, D])``.

        ``pooled`` is global average pooling + a linear projection; ``tokens`` adaptively average
        pools the map onto ``token_grid`` (any map size works, e.g. a stitched one) and projects
        each cell, adding a learned position embedding.
        """
        pooled = self.pool_proj(fmap.mean(dim=(2, 3, 4)))
        grid = F.adaptive_avg_pool3d(fmap, self.cfg.token_grid).flatten(2).transpose(1, 2)  # [B, N, C]
        return pooled, self.token_proj(grid) + self.token_pos

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(self.feature_map(x))
