"""3D CNN image encoder: a MONAI backbone run as a fully convolutional feature extractor.

The backbone is any of MONAI's DenseNet121, ResNet (10/18 and the ``slim`` default), SEResNet50
or EfficientNetBN, built without its classification layers. :meth:`ImageEncoder.feature_map` is
fully convolutional, so the sliding-window inferer can stitch the maps of ROI-sized windows of a
larger volume; :meth:`ImageEncoder.embed` turns a (possibly stitched) map into one pooled
embedding for the classifier and a small grid of tokens for the report generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.networks import nets
from torch import nn

from medmm.models.config import ImageEncoderConfig
from medmm.models.context_histogram import ContextHistogram
from medmm.models.intensity_histogram import IntensityHistogram

#: Added to bin fractions before the log (a single voxel of a 64³ volume is 4e-6 of it).
HISTOGRAM_EPS = 1e-6

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
    raise ValueError(f"unknown image encoder {cfg.name!r}")  # unreachable: the schema restricts names


def pack_cells(cells: torch.Tensor, split: int) -> torch.Tensor:
    """``[B, C, g0*s, g1*s, g2*s]`` → ``[B, C*s³, g0, g1, g2]``: the ``s³`` finer cells inside each
    feature-map cell become channels (sliding-window stitching then keeps them with their cell)."""
    if split == 1:
        return cells
    b, c, *fine = cells.shape
    g = [n // split for n in fine]
    out = cells.reshape(b, c, g[0], split, g[1], split, g[2], split).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return out.reshape(b, c * split**3, *g)


def unpack_cells(channels: torch.Tensor, split: int) -> torch.Tensor:
    """Inverse of `pack_cells`."""
    if split == 1:
        return channels
    b, cs, *g = channels.shape
    out = channels.reshape(b, cs // split**3, split, split, split, *g).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return out.reshape(b, cs // split**3, *(n * split for n in g))


def central_mean(cells: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """Mean ``[B, C]`` over the cells of ``[B, C, X, Y, Z]`` whose centres lie in the centred box
    spanning ``fractions`` of each axis (at least the middle cell of an axis)."""
    for axis, fraction in enumerate(fractions, start=2):
        n = cells.shape[axis]
        centre = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        keep = torch.nonzero((centre - 0.5).abs() <= fraction / 2 + 1e-9).flatten()
        if keep.numel() == 0:
            keep = torch.tensor([n // 2])
        cells = cells.index_select(axis, keep.to(cells.device))
    return cells.mean(dim=(2, 3, 4))


def _fixed_input_norm(features: int) -> nn.BatchNorm1d:
    """Normaliser for histogram features (see `_standardise`): a cumulative running average
    (``momentum=None``) instead of an exponential one."""
    return nn.BatchNorm1d(features, momentum=None)


def _standardise(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Standardise histogram features with training-set statistics, in training as at inference.

    Histograms are fixed functions of the image, not of trained weights, so the cumulative average
    over every training batch seen estimates their mean and variance over the training set; a
    training step first adds its batch to that average (not with one scan: single-sample batch
    statistics do not exist), then standardises with it, like the scaler of a logistic regression.
    Plain BatchNorm would standardise each batch of 8 by its own statistics (noisy for sparse bins,
    and unlike inference) and evaluate with an exponential average of the last ~10 batches; on the
    demo that left the head 0.01-0.02 validation macro AUROC below a logistic regression on the same
    features and let the score swing by up to 0.04 between late epochs (docs/training.md).
    """
    if norm.training and x.shape[0] > 1:
        with torch.no_grad():
            norm(x.detach())  # updates the running statistics only
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)


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
        pools = 2 if cfg.global_pool == "avgmax" else 1
        self.histogram, self.histogram_channels = None, 0
        if cfg.histogram_hu is not None and cfg.histogram_centres is None:
            raise ValueError("histogram_hu is set but histogram_centres is not: build the model from a workflow "
                             "(it maps HU through preprocessing.hu_window) or give histogram_centres in input units")
        if cfg.histogram_centres is not None:
            self.histogram = IntensityHistogram(cfg.histogram_centres)
            self.histogram_channels = cfg.in_channels * self.histogram.bins
            # log bin fractions span ~[-14, 0] with tiny per-bin spreads: standardise them before
            # they meet the CNN features (without this the head ignores them; measured)
            self.histogram_norm = _fixed_input_norm(self.histogram_channels * pools)
            self.token_histogram_norm = _fixed_input_norm(self.histogram_channels)
        self.context_histogram, self.context_channels, self.context_bins, self.context_pools = None, 0, 0, 0
        ctx = cfg.context_histogram
        if ctx is not None:
            if ctx.centres is None or ctx.context_centres is None:
                raise ValueError("context_histogram.hu is set but its centres are not: build the model from a "
                                 "workflow (it maps HU through preprocessing.hu_window) or give centres and "
                                 "context_centres in input units")
            self.context_histogram = ContextHistogram(ctx.centres, ctx.context_centres, ctx.context_voxels,
                                                      ctx.subdivisions)
            self.context_bins = cfg.in_channels * self.context_histogram.bins
            self.context_channels = self.context_bins * ctx.cell_split**3
            self.context_pools = 1 if ctx.central_region is None else 2
            self.context_norm = _fixed_input_norm(self.context_bins * self.context_pools)
        self.pool_proj = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear((self.channels + self.histogram_channels) * pools + self.context_bins * self.context_pools,
                      cfg.embed_dim))
        self.token_proj = nn.Linear(self.channels + self.histogram_channels, cfg.embed_dim)
        # learned position of each token in the grid, so the report generator knows "left/upper"
        self.token_pos = nn.Parameter(torch.zeros(cfg.n_tokens, cfg.embed_dim))
        nn.init.normal_(self.token_pos, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def has_histograms(self) -> bool:
        """Whether `feature_map` appends histogram channels (see `histogram_maps`)."""
        return self.histogram is not None or self.context_histogram is not None

    def histogram_maps(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor | None:
        """Each cell's intensity-bin fractions, then its joint (intensity, neighbourhood mean) bin
        fractions: ``[B, histogram_channels + context_channels, *grid]`` (None without histograms).

        Neither histogram has trainable parameters, so for a fixed image this never changes (the
        training engine caches it for un-augmented images: `medmm.training.histogram_cache`).
        """
        maps = [] if self.histogram is None else [self.histogram(x, grid)]
        if self.context_histogram is not None:
            split = self.cfg.context_histogram.cell_split
            maps.append(pack_cells(self.context_histogram(x, [g * split for g in grid]), split))
        return torch.cat(maps, dim=1) if maps else None

    def feature_map(self, x: torch.Tensor,
                    histograms: Callable[[tuple[int, ...]], torch.Tensor | None] | None = None) -> torch.Tensor:
        """Fully convolutional features ``[B, C, x, y, z]`` of an image ``[B, in, X, Y, Z]``.

        After the CNN channels come, when configured, the `histogram_maps` channels, so stitching
        the maps of sliding windows averages them like the CNN channels. ``histograms`` (optional)
        maps the CNN's grid to those channels for ``x``, e.g. from a cache; by default they are
        computed from ``x``.
        """
        if x.ndim != 5:
            raise ValueError(f"image must be [B, C, X, Y, Z], got shape {tuple(x.shape)}")
        fmap = self._features(x)
        grid = tuple(fmap.shape[2:])
        extra = histograms(grid) if histograms is not None else self.histogram_maps(x, grid)
        return fmap if extra is None else torch.cat([fmap, extra.to(fmap.dtype)], dim=1)

    def embed(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool a feature map into ``(pooled [B, D], tokens [B, N, D])``.

        ``pooled`` is global average (optionally + max) pooling + a linear projection (with
        histograms: plus their standardised log bin fractions over the whole volume); ``tokens`` adaptively average
        pools the map onto ``token_grid`` (any map size works, e.g. a stitched one) and projects
        each cell, adding a learned position embedding.
        """
        cnn, hist, ctx = torch.split(fmap, [self.channels, self.histogram_channels, self.context_channels], dim=1)
        pools = [cnn.mean(dim=(2, 3, 4))]
        if self.cfg.global_pool == "avgmax":
            pools.append(cnn.amax(dim=(2, 3, 4)))
        grid = F.adaptive_avg_pool3d(cnn, self.cfg.token_grid).flatten(2).transpose(1, 2)  # [B, N, C]
        if self.histogram is not None:
            h_pools = [hist.mean(dim=(2, 3, 4))]
            if self.cfg.global_pool == "avgmax":
                h_pools.append(hist.amax(dim=(2, 3, 4)))
            pools.append(_standardise(self.histogram_norm, torch.log(torch.cat(h_pools, dim=1) + HISTOGRAM_EPS)))
            h_grid = torch.log(F.adaptive_avg_pool3d(hist, self.cfg.token_grid).flatten(2).transpose(1, 2) + HISTOGRAM_EPS)
            h_grid = _standardise(self.token_histogram_norm, h_grid.flatten(0, 1)).view_as(h_grid)
            grid = torch.cat([grid, h_grid], dim=2)
        if self.context_histogram is not None:  # pooled embedding only: 1452 bins per token would dwarf the tokens
            cells = unpack_cells(ctx, self.cfg.context_histogram.cell_split)
            c_pools = [cells.mean(dim=(2, 3, 4))]
            if self.cfg.context_histogram.central_region is not None:
                c_pools.append(central_mean(cells, self.cfg.context_histogram.central_region))
            pools.append(_standardise(self.context_norm, torch.log(torch.cat(c_pools, dim=1) + HISTOGRAM_EPS)))
        pooled = self.pool_proj(torch.cat(pools, dim=1))
        tokens = self.token_proj(grid) + self.token_pos
        return pooled, tokens

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(self.feature_map(x))
