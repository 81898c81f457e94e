"""MSBDN (Dong et al., CVPR 2020), registered in BasicSR's ``ARCH_REGISTRY`` as ``MSBDNDFF`` and ``MSBDNRDFF``.

MSBDN: H. Dong, J. Pan, L. Xiang, Z. Hu, X. Zhang, F. Wang and M.-H. Yang, "Multi-Scale Boosted Dehazing
Network with Dense Feature Fusion", CVPR 2020 (arXiv:2004.13388), §3 and Fig. 2. Official code:
https://github.com/BookerDeWitt/MSBDN-DFF (``networks/MSBDN-DFF-v1-1.py``, ``networks/MSBDN-RDFF.py``,
``networks/base_networks.py``). ADS (Park et al., CVPR 2023) uses it as one of its two backbones; its
unified model has 28.7M parameters, the ``MSBDNRDFF`` count below.

A U-Net with four stride-2 levels (16 -> 32 -> 64 -> 128 -> 256 channels), dense feature fusion (DFF)
modules, 18 bottleneck residual blocks and a boosted decoder of strengthen-operate-subtract modules
``G(up + j) + (up + j) - up`` (§3; layout in docs/design.md, "MSBDN"). Two classes, as the layouts differ:

================  ===============================  ============
class             official file                    parameters
================  ===============================  ============
``MSBDNDFF``      ``MSBDN-DFF-v1-1.py`` (paper)      31,353,061
``MSBDNRDFF``     ``MSBDN-RDFF.py`` (released)       28,712,861
================  ===============================  ============

An independent re-implementation with the official module names and parameter shapes: the official
weights load with ``load_state_dict(strict=True)`` (the releases pickle whole modules, so take their
``state_dict()`` once with the official code). Differences from it: only ``mode='iter2'`` DFF and the
``ConvBlock`` / ``DeconvBlock`` configuration the official networks use; any input size (padded at the
bottom/right to a multiple of 16, or 32 when a side is at most 16, and cropped back; the official code
fails on other sizes); ``num_in_ch``, ``num_out_ch``, ``num_feat`` (official 3, 3, 16) are arguments.
"""
import torch
from torch import nn
from torch.nn import functional as F

from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.utils.padding import pad_to_multiple

# four stride-2 levels: every side must be divisible by 2 ** 4
SIZE_MULTIPLE = 16
# the 1/16 level must be at least 2 pixels for the 3x3 reflection padding of its residual blocks
MIN_SIZE = 32
NUM_LEVELS = 4
BLOCKS_PER_LEVEL = 3


class ConvLayer(nn.Module):
    """Reflection padding by ``kernel_size // 2`` then a convolution with bias (official ``ConvLayer``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    """A transposed convolution without padding (official ``UpsampleConvLayer``); 3x3, stride 2 maps a side
    ``n`` to ``2 n + 1``, which the network then resizes to the skip feature."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x):
        return self.conv2d(x)


class ResidualBlock(nn.Module):
    """``x + 0.1 * conv2(PReLU(conv1(x)))`` with reflection-padded 3x3 convolutions and one PReLU parameter
    (official ``ResidualBlock``; the PReLU is named ``relu``)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.relu = nn.PReLU()

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x))) * 0.1


class ConvBlock(nn.Module):
    """4x4 stride-2 convolution (padding 1, bias) and PReLU: halves the resolution (official ``ConvBlock``
    as the DFF modules build it)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=True)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.conv(x))


class DeconvBlock(nn.Module):
    """4x4 stride-2 transposed convolution (padding 1, bias) and PReLU: doubles the resolution exactly
    (official ``DeconvBlock`` as the DFF modules build it)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=True)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.deconv(x))


class EncoderMDCBlock(nn.Module):
    """Encoder dense feature fusion by back-projection (official ``Encoder_MDCBlock1``, ``mode='iter2'``).

    Fuses the current (low-resolution) feature ``ft_l`` with the features ``ft_h_list`` of all previous,
    higher-resolution encoder levels, highest resolution first. For each of them in turn, the running fusion
    is upsampled to that level (``up_convs[0..]``), the level's feature is subtracted (the back-projection
    error), the error is brought back down (``down_convs[..0]``) and added to the fusion.

    Args:
        num_filter (int): Channels of ``ft_l``; each level up halves them.
        num_ft (int): Number of levels involved, the current one included (``len(ft_h_list) + 1``).
    """

    def __init__(self, num_filter, num_ft):
        super().__init__()
        self.num_ft = num_ft - 1
        self.up_convs = nn.ModuleList()
        self.down_convs = nn.ModuleList()
        for i in range(self.num_ft):
            self.up_convs.append(DeconvBlock(num_filter // 2**i, num_filter // 2**(i + 1)))
            self.down_convs.append(ConvBlock(num_filter // 2**(i + 1), num_filter // 2**i))

    def forward(self, ft_l, ft_h_list):
        ft_fusion = ft_l
        for i, ft_h in enumerate(ft_h_list):
            steps = self.num_ft - i
            ft = ft_fusion
            for j in range(steps):
                ft = self.up_convs[j](ft)
            ft = ft - ft_h
            for j in reversed(range(steps)):
                ft = self.down_convs[j](ft)
            ft_fusion = ft_fusion + ft
        return ft_fusion


class DecoderMDCBlock(nn.Module):
    """Decoder dense feature fusion by back-projection (official ``Decoder_MDCBlock1``, ``mode='iter2'``).

    The mirror of :class:`EncoderMDCBlock`: fuses the current (high-resolution) decoder feature ``ft_h`` with
    the features ``ft_l_list`` of all previous, lower-resolution decoder levels, lowest resolution first,
    going down with ``down_convs`` and back up with ``up_convs``.

    Args:
        num_filter (int): Channels of ``ft_h``; each level down doubles them.
        num_ft (int): Number of levels involved, the current one included (``len(ft_l_list) + 1``).
    """

    def __init__(self, num_filter, num_ft):
        super().__init__()
        self.num_ft = num_ft - 1
        self.down_convs = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in range(self.num_ft):
            self.down_convs.append(ConvBlock(num_filter * 2**i, num_filter * 2**(i + 1)))
            self.up_convs.append(DeconvBlock(num_filter * 2**(i + 1), num_filter * 2**i))

    def forward(self, ft_h, ft_l_list):
        ft_fusion = ft_h
        for i, ft_l in enumerate(ft_l_list):
            steps = self.num_ft - i
            ft = ft_fusion
            for j in range(steps):
                ft = self.down_convs[j](ft)
            ft = ft - ft_l
            for j in reversed(range(steps)):
                ft = self.up_convs[j](ft)
            ft_fusion = ft_fusion + ft
        return ft_fusion


class DenseLayer(nn.Module):
    """``cat(x, ReLU(conv3x3(x)))`` without bias (official ``make_dense``)."""

    def __init__(self, channels, growth_rate, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, growth_rate, kernel_size=kernel_size, padding=(kernel_size - 1) // 2,
                              bias=False)

    def forward(self, x):
        return torch.cat((x, F.relu(self.conv(x))), 1)


class RDB(nn.Module):
    """Residual dense block (official ``RDB``): ``num_layers`` dense layers, a 1x1 convolution back to
    ``channels`` (no bias), times ``scale``, plus the input."""

    def __init__(self, channels, num_layers, growth_rate, scale=1.0):
        super().__init__()
        self.scale = scale
        self.dense_layers = nn.Sequential(
            *[DenseLayer(channels + i * growth_rate, growth_rate) for i in range(num_layers)])
        self.conv_1x1 = nn.Conv2d(channels + num_layers * growth_rate, channels, kernel_size=1, padding=0, bias=False)

    def forward(self, x):
        return x + self.conv_1x1(self.dense_layers(x)) * self.scale


def _residual_blocks(channels):
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(BLOCKS_PER_LEVEL)])


class _MSBDN(nn.Module):
    """The MSBDN trunk shared by both variants; ``split=True`` gives MSBDN-RDFF.

    Module names (level ``k`` = 1..4, at 1/2**k of the input; channels ``c_k = num_feat * 2**k``):
    ``conv_input`` and ``dense0`` at full resolution; encoder ``conv{2**k}x``, [``conv{k}``], ``fusion{k}``,
    ``dense{k}`` (k < 4); ``dehaze.res{i}``; decoder ``convd{2**k}x``, ``dense_{k}``, [``conv_{k}``],
    ``fusion_{k}``; ``conv_output``. The bracketed RDBs exist in MSBDN-RDFF only.
    """

    def __init__(self, num_in_ch, num_out_ch, num_feat, res_blocks, split):
        super().__init__()
        name = type(self).__name__
        if split and num_feat % 2:
            raise ValueError(f'{name}: num_feat must be even (each level is split in two halves), got {num_feat}')
        if num_feat < 1 or res_blocks < 0:
            raise ValueError(f'{name}: num_feat must be >= 1 and res_blocks >= 0, got {num_feat} and {res_blocks}')
        self.split = split
        channels = [num_feat * 2**k for k in range(NUM_LEVELS + 1)]
        # the DFF modules (and RDBs) of MSBDN-RDFF work on half of each level's channels
        fused = [c // 2 for c in channels] if split else channels

        self.conv_input = ConvLayer(num_in_ch, num_feat, kernel_size=11, stride=1)
        self.dense0 = _residual_blocks(num_feat)
        for k in range(1, NUM_LEVELS + 1):
            setattr(self, f'conv{2**k}x', ConvLayer(channels[k - 1], channels[k], kernel_size=3, stride=2))
            if split:
                setattr(self, f'conv{k}', RDB(fused[k], 4, fused[k]))
            setattr(self, f'fusion{k}', EncoderMDCBlock(fused[k], k + 1))
            if k < NUM_LEVELS:
                setattr(self, f'dense{k}', _residual_blocks(channels[k]))

        self.dehaze = nn.Sequential()
        for i in range(res_blocks):
            self.dehaze.add_module(f'res{i}', ResidualBlock(channels[NUM_LEVELS]))

        for k in range(NUM_LEVELS, 0, -1):
            setattr(self, f'convd{2**k}x', UpsampleConvLayer(channels[k], channels[k - 1], kernel_size=3, stride=2))
            setattr(self, f'dense_{k}', _residual_blocks(channels[k - 1]))
            if split:
                setattr(self, f'conv_{k}', RDB(fused[k - 1], 4, fused[k - 1]))
            setattr(self, f'fusion_{k}', DecoderMDCBlock(fused[k - 1], NUM_LEVELS + 2 - k))

        self.conv_output = ConvLayer(num_feat, num_out_ch, kernel_size=3, stride=1)

    def _memory(self, feat):
        """What a level contributes to the DFF memory: the feature, or its first half in MSBDN-RDFF."""
        return feat.chunk(2, dim=1)[0] if self.split else feat

    def _fuse(self, feat, fusion, rdb, memory):
        """DFF module over ``memory`` (MSBDN-DFF), or DFF on the first half and RDB on the second half
        (MSBDN-RDFF). Returns the new feature and its DFF output, which later levels keep in memory."""
        if not self.split:
            fused = fusion(feat, memory)
            return fused, fused
        first, second = feat.chunk(2, dim=1)
        fused = fusion(first, memory)
        return torch.cat((fused, rdb(second)), dim=1), fused

    def forward_padded(self, x):
        """The network on an input whose sides are multiples of ``SIZE_MULTIPLE`` and at least ``MIN_SIZE``."""
        res1x = self.conv_input(x)
        memory = [self._memory(res1x)]
        feat = self.dense0(res1x) + res1x
        skips = [feat]  # encoder outputs at 1, 1/2, 1/4, 1/8
        for k in range(1, NUM_LEVELS + 1):
            feat = getattr(self, f'conv{2**k}x')(feat)
            feat, fused = self._fuse(feat, getattr(self, f'fusion{k}'), getattr(self, f'conv{k}', None), memory)
            if k < NUM_LEVELS:
                memory.append(fused)
                feat = getattr(self, f'dense{k}')(feat) + feat
                skips.append(feat)

        # strengthen-operate-subtract at the bottleneck: G(2 y) + 2 y - y
        in_ft = feat * 2
        feat = self.dehaze(in_ft) + in_ft - feat

        memory_up = [self._memory(feat)]
        for k in range(NUM_LEVELS, 0, -1):
            skip = skips[k - 1]
            up = getattr(self, f'convd{2**k}x')(feat)
            up = F.interpolate(up, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            # boosted decoder (SOS): G(up + skip) + (up + skip) - up
            feat = up + skip
            feat = getattr(self, f'dense_{k}')(feat) + feat - up
            feat, fused = self._fuse(feat, getattr(self, f'fusion_{k}'), getattr(self, f'conv_{k}', None), memory_up)
            if k > 1:
                memory_up.append(fused)

        return self.conv_output(feat)

    def forward(self, x):
        height, width = x.shape[-2:]
        multiple = SIZE_MULTIPLE if min(height, width) > MIN_SIZE - SIZE_MULTIPLE else MIN_SIZE
        out = self.forward_padded(pad_to_multiple(x, multiple))
        return out[:, :, :height, :width]


@ARCH_REGISTRY.register()
class MSBDNDFF(_MSBDN):
    """MSBDN with dense feature fusion, the CVPR 2020 paper's network (official ``MSBDN-DFF-v1-1.py``).

    31,353,061 parameters with the defaults. No global residual: the output is ``conv_output`` of the last
    decoder level.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Channels at full resolution, doubled at each of the four levels. Default: 16.
        res_blocks (int): Residual blocks of the bottleneck (``dehaze``). Default: 18.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=16, res_blocks=18):
        super().__init__(num_in_ch, num_out_ch, num_feat, res_blocks, split=False)


@ARCH_REGISTRY.register()
class MSBDNRDFF(_MSBDN):
    """MSBDN with DFF on half the channels and residual dense blocks on the other half (official
    ``MSBDN-RDFF.py``, the released model). 28,712,861 parameters with the defaults.

    Args:
        num_in_ch (int): Input channels. Default: 3.
        num_out_ch (int): Output channels. Default: 3.
        num_feat (int): Channels at full resolution, doubled at each of the four levels; even. Default: 16.
        res_blocks (int): Residual blocks of the bottleneck (``dehaze``). Default: 18.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=16, res_blocks=18):
        super().__init__(num_in_ch, num_out_ch, num_feat, res_blocks, split=True)
