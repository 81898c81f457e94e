"""NAFNet (Chen et al., ECCV 2022), registered in BasicSR's ``ARCH_REGISTRY`` as ``NAFNet``.

NAFNet: L. Chen, X. Chu, X. Zhang and J. Sun, "Simple Baselines for Image Restoration", ECCV 2022
(arXiv:2204.04676): the architecture (Fig. 2c, a plain U-Net) and the NAFNet block (Fig. 3d).
Official code: https://github.com/megvii-research/NAFNet (``basicsr/models/archs/NAFNet_arch.py`` and
``arch_util.py``). ADS (Park et al., CVPR 2023) uses NAFNet as one of its two backbones; its unified
model is the 17.1M-parameter GoPro configuration below.

An independent re-implementation with the official module names, module order and parameter shapes:
the official checkpoints (``{'params': ...}``) load with ``load_state_dict(strict=True)``. Official
configurations (``width``, ``enc_blk_nums``, ``middle_blk_num``, ``dec_blk_nums``) and parameter counts:

=============  =========================================  ============
checkpoint     config                                     parameters
=============  =========================================  ============
GoPro width32  32, [1, 1, 1, 28], 1, [1, 1, 1, 1]          17,111,907
SIDD width32   32, [2, 2, 4, 8], 12, [2, 2, 2, 2]          29,159,715
=============  =========================================  ============

Differences from the official code, which change no parameter or output: the input is zero-padded at
the bottom and right to a multiple of ``2 ** len(enc_blk_nums)`` (the official ``check_image_size``) by
:func:`uniremoval.utils.padding.pad_to_multiple` and the output cropped back; ``LayerNorm2d`` uses
ordinary autograd operations, where the official code wraps the same formula in a hand-written
``autograd.Function`` with its analytic gradient.
"""
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.utils.padding import pad_to_multiple


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel dimension of an (N, C, H, W) tensor, per pixel.

    ``y = weight * (x - mean_c(x)) / sqrt(var_c(x) + eps) + bias`` with the biased variance; the same
    as ``nn.LayerNorm(C)`` applied to channels-last data. Parameters ``weight`` (ones) and ``bias``
    (zeros) of shape (C,), eps 1e-6, as the official ``arch_util.LayerNorm2d``.
    """

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """NAFNet's SimpleGate (``SimpleGate(X, Y) = X * Y``): split the channels in two halves and multiply them."""

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block (Fig. 3d).

    First half: ``LayerNorm2d`` -> 1x1 conv to ``dw_expand * c`` -> 3x3 depth-wise conv -> SimpleGate ->
    simplified channel attention (``sca``: global average pool + 1x1 conv, no sigmoid, multiplied in) ->
    1x1 conv back to ``c`` -> dropout, added to the input scaled by ``beta``. Second half (feed-forward):
    ``LayerNorm2d`` -> 1x1 conv to ``ffn_expand * c`` -> SimpleGate -> 1x1 conv -> dropout, added scaled
    by ``gamma``. ``beta`` and ``gamma`` (1, c, 1, 1) start at zero, so a new block is the identity.

    Args:
        c (int): Channels.
        dw_expand (int): Expansion of the depth-wise branch (official ``DW_Expand``). Default: 2.
        ffn_expand (int): Expansion of the feed-forward branch (official ``FFN_Expand``). Default: 2.
        drop_out_rate (float): Dropout after each branch; 0 gives ``nn.Identity``. Default: 0.
    """

    def __init__(self, c, dw_expand=2, ffn_expand=2, drop_out_rate=0.):
        super().__init__()
        dw_channel = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw_channel, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv2 = nn.Conv2d(dw_channel, dw_channel, kernel_size=3, padding=1, stride=1, groups=dw_channel, bias=True)
        self.conv3 = nn.Conv2d(dw_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        # simplified channel attention: SCA(X) = X * conv1x1(pool(X))
        self.sca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dw_channel // 2, dw_channel // 2, kernel_size=1, padding=0, stride=1, groups=1, bias=True))
        self.sg = SimpleGate()

        ffn_channel = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn_channel, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv5 = nn.Conv2d(ffn_channel // 2, c, kernel_size=1, padding=0, stride=1, groups=1, bias=True)

        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)

        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0. else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0. else nn.Identity()

        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))

    def forward(self, inp):
        x = self.norm1(inp)
        x = self.sg(self.conv2(self.conv1(x)))
        x = x * self.sca(x)
        x = self.dropout1(self.conv3(x))
        y = inp + x * self.beta

        x = self.sg(self.conv4(self.norm2(y)))
        x = self.dropout2(self.conv5(x))
        return y + x * self.gamma


@ARCH_REGISTRY.register()
class NAFNet(nn.Module):
    """NAFNet: a U-Net of NAFBlocks with a global residual (Fig. 2c; official ``NAFNet``).

    ``intro`` (3x3 conv to ``width``) -> per level an encoder (``encoders[i]``, a sequence of
    ``enc_blk_nums[i]`` NAFBlocks) and a 2x2 stride-2 conv doubling the channels (``downs[i]``) ->
    ``middle_blks`` -> per level a 1x1 conv doubling the channels + PixelShuffle(2) (``ups[i]``), the
    matching encoder output added, and a decoder (``decoders[i]``) -> ``ending`` (3x3 conv to
    ``img_channel``) plus the input image.

    Any input size: the input is padded at the bottom and right to a multiple of
    ``2 ** len(enc_blk_nums)`` (``padder_size``) and the output cropped back to the input size.

    Args:
        img_channel (int): Image channels (in and out). Default: 3.
        width (int): Channels after ``intro``; doubled at each level. Default: 16.
        middle_blk_num (int): NAFBlocks at the lowest resolution. Default: 1.
        enc_blk_nums (list[int]): NAFBlocks of each encoder level. Default: [] (no level).
        dec_blk_nums (list[int]): NAFBlocks of each decoder level, lowest resolution first; as many
            as ``enc_blk_nums`` (the official code silently drops the surplus of the longer list).
        drop_out_rate (float): Dropout in every NAFBlock (not an official NAFNet argument; the
            official NAFNet always uses 0). Default: 0.
    """

    def __init__(self, img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=(), dec_blk_nums=(), drop_out_rate=0.):
        super().__init__()
        enc_blk_nums, dec_blk_nums = list(enc_blk_nums), list(dec_blk_nums)
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f'NAFNet: enc_blk_nums {enc_blk_nums} and dec_blk_nums {dec_blk_nums} must have the same '
                             'length (one decoder level per encoder level)')

        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1, stride=1, groups=1, bias=True)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1, stride=1, groups=1, bias=True)

        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.Sequential()  # placeholder, filled below: keeps the official state-dict key order
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()

        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan = chan * 2

        self.middle_blks = nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(middle_blk_num)])

        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan = chan // 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate) for _ in range(num)]))

        self.padder_size = 2**len(self.encoders)

    def forward_padded(self, inp):
        """The network on an input whose sides are multiples of ``padder_size`` (no padding, no crop)."""
        x = self.intro(inp)
        encs = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            encs.append(x)
            x = down(x)

        x = self.middle_blks(x)

        for decoder, up, enc_skip in zip(self.decoders, self.ups, encs[::-1]):
            x = decoder(up(x) + enc_skip)

        return self.ending(x) + inp

    def forward(self, inp):
        height, width = inp.shape[-2:]
        out = self.forward_padded(pad_to_multiple(inp, self.padder_size, mode='constant'))
        return out[:, :, :height, :width]
