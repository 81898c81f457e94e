"""Uni-Removal's network: MPRNet (Zamir et al., CVPR 2021) with the feature taps of the feature-grained losses.

Registered in BasicSR's ``ARCH_REGISTRY`` as ``MPRNet``. MPRNet: S. W. Zamir, A. Arora, S. Khan, M. Hayat,
F. S. Khan, M.-H. Yang and L. Shao, "Multi-Stage Progressive Image Restoration", CVPR 2021
(arXiv:2102.02808), §3 and Fig. 2. Official code: https://github.com/swz30/MPRNet
(``Deraining|Deblurring|Denoising/MPRNet.py``).

This is an independent re-implementation that keeps the official module names, module order
and parameter shapes, so the official checkpoints (``{'state_dict': ...}``, possibly with
``module.`` prefixes from ``nn.DataParallel``) load with ``load_state_dict(strict=True)``.
Like the official code, a single ``nn.PReLU`` instance is shared by every channel attention
block: it is one parameter that appears under many state-dict keys.

Official configurations (``n_feat``, ``scale_unetfeats``, ``scale_orsnetfeats``) and parameter counts:

=========  =============  ============
task       config         parameters
=========  =============  ============
deraining  40 / 20 / 16     3,637,249
deblurring 96 / 48 / 32    20,127,073
denoising  80 / 48 / 32    15,741,025
=========  =============  ============

Uni-Removal (arXiv:2307.05075, §III-B) distils MPRNet teachers into one MPRNet student with a
feature-grained contrastive loss (Eq. 3), so ``MPRNet.forward(x, return_feats=True)`` also returns features.
"""
import torch
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.utils.padding import pad_to_multiple

# Stage 1 splits the image into 2x2 patches and each U-Net downsamples twice by 2: every side
# must be divisible by 2 * 2 * 2.
SIZE_MULTIPLE = 8

# Names of the features that ``MPRNet.forward(..., return_feats=True)`` can return.
FEATURE_LAYERS = ('orsnet', 'stage2_decoder', 'stage2_encoder')

# How the convolutions fill the border: 'zeros' is the official MPRNet's; see ``MPRNet``'s ``padding_mode``.
PADDING_MODES = ('zeros', 'reflect', 'replicate')


def conv(in_channels, out_channels, kernel_size, bias=False, stride=1):
    """Convolution with 'same' padding for odd kernel sizes."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, stride=stride)


# ------------------------------------------------------------------------------------------
# Attention blocks (MPRNet §3, Fig. 2)
# ------------------------------------------------------------------------------------------
class CALayer(nn.Module):
    """Channel attention (squeeze-and-excitation): global average pooling, a 1x1 bottleneck
    (reduction by ``reduction``) and a sigmoid gate that rescales the input channels."""

    def __init__(self, channels, reduction=16, bias=False):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.conv_du(self.avg_pool(x))


class CAB(nn.Module):
    """Channel Attention Block: ``x + CA(conv(act(conv(x))))`` (MPRNet §3.1, Fig. 2).

    ``act`` is passed in (not created here) so that, as in the official code, all blocks of a
    network share one ``nn.PReLU``.
    """

    def __init__(self, n_feat, kernel_size, reduction, bias, act):
        super().__init__()
        # Official names and registration order (``CA`` before ``body``: same state-dict order).
        self.CA = CALayer(n_feat, reduction, bias=bias)
        self.body = nn.Sequential(
            conv(n_feat, n_feat, kernel_size, bias=bias),
            act,
            conv(n_feat, n_feat, kernel_size, bias=bias),
        )

    def forward(self, x):
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised Attention Module (MPRNet §3.3, Fig. 4).

    Predicts a residual image from the stage features (``conv2``), adds it to the degraded
    input to get the stage's restored image (supervised by the loss), and uses that image to
    compute per-pixel attention masks (``conv3`` + sigmoid) that gate the features passed to
    the next stage (``conv1``), plus a skip connection.

    Returns:
        tuple[Tensor, Tensor]: attention-guided features for the next stage, restored image.
    """

    def __init__(self, n_feat, kernel_size, bias, img_channels=3):
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias=bias)
        self.conv2 = conv(n_feat, img_channels, kernel_size, bias=bias)
        self.conv3 = conv(img_channels, n_feat, kernel_size, bias=bias)

    def forward(self, feat, degraded_img):
        restored_img = self.conv2(feat) + degraded_img
        attention = torch.sigmoid(self.conv3(restored_img))
        return self.conv1(feat) * attention + feat, restored_img


# ------------------------------------------------------------------------------------------
# Resizing modules: bilinear resampling followed by a 1x1 convolution that changes channels.
# The ``down``/``up`` Sequential layout (index 1 = conv) is the official state-dict layout.
# ------------------------------------------------------------------------------------------
class DownSample(nn.Module):
    """Halve the resolution and widen ``in_channels`` to ``in_channels + s_factor``."""

    def __init__(self, in_channels, s_factor):
        super().__init__()
        self.down = nn.Sequential(
            nn.Upsample(scale_factor=0.5, mode='bilinear', align_corners=False),
            nn.Conv2d(in_channels, in_channels + s_factor, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.down(x)


class UpSample(nn.Module):
    """Double the resolution and narrow ``in_channels + s_factor`` to ``in_channels``."""

    def __init__(self, in_channels, s_factor):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            nn.Conv2d(in_channels + s_factor, in_channels, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x):
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample` followed by the addition of a U-Net skip connection."""

    def forward(self, x, skip):
        return self.up(x) + skip


# ------------------------------------------------------------------------------------------
# Stages 1 and 2: encoder-decoder (U-Net) subnetworks (MPRNet §3.1, Fig. 2)
# ------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    """Three-level U-Net encoder of CABs; level ``i`` has ``n_feat + i * scale_unetfeats``
    channels at ``1 / 2**i`` resolution (``i`` = 0, 1, 2).

    With ``csff=True`` (stage 2) it also implements Cross-Stage Feature Fusion (MPRNet §3.4,
    Fig. 5): the previous stage's encoder and decoder features of each level are refined by
    1x1 convolutions (``csff_enc*`` / ``csff_dec*``) and added to this stage's features.
    """

    def __init__(self, n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff):
        super().__init__()
        channels = [n_feat + level * scale_unetfeats for level in range(3)]

        def cab_pair(ch):
            return nn.Sequential(*[CAB(ch, kernel_size, reduction, bias=bias, act=act) for _ in range(2)])

        self.encoder_level1 = cab_pair(channels[0])
        self.encoder_level2 = cab_pair(channels[1])
        self.encoder_level3 = cab_pair(channels[2])

        self.down12 = DownSample(channels[0], scale_unetfeats)
        self.down23 = DownSample(channels[1], scale_unetfeats)

        self.csff = csff
        if csff:
            self.csff_enc1 = nn.Conv2d(channels[0], channels[0], kernel_size=1, bias=bias)
            self.csff_enc2 = nn.Conv2d(channels[1], channels[1], kernel_size=1, bias=bias)
            self.csff_enc3 = nn.Conv2d(channels[2], channels[2], kernel_size=1, bias=bias)

            self.csff_dec1 = nn.Conv2d(channels[0], channels[0], kernel_size=1, bias=bias)
            self.csff_dec2 = nn.Conv2d(channels[1], channels[1], kernel_size=1, bias=bias)
            self.csff_dec3 = nn.Conv2d(channels[2], channels[2], kernel_size=1, bias=bias)

    def forward(self, x, encoder_outs=None, decoder_outs=None):
        """Return ``[enc1, enc2, enc3]``; ``encoder_outs``/``decoder_outs`` are the previous
        stage's features, fused in when both are given (stage 2)."""
        fuse = encoder_outs is not None and decoder_outs is not None

        enc1 = self.encoder_level1(x)
        if fuse:
            enc1 = enc1 + self.csff_enc1(encoder_outs[0]) + self.csff_dec1(decoder_outs[0])

        enc2 = self.encoder_level2(self.down12(enc1))
        if fuse:
            enc2 = enc2 + self.csff_enc2(encoder_outs[1]) + self.csff_dec2(decoder_outs[1])

        enc3 = self.encoder_level3(self.down23(enc2))
        if fuse:
            enc3 = enc3 + self.csff_enc3(encoder_outs[2]) + self.csff_dec3(decoder_outs[2])

        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    """Three-level U-Net decoder of CABs, mirroring :class:`Encoder`; the skip connections
    pass through a CAB (``skip_attn1``/``skip_attn2``) before being added."""

    def __init__(self, n_feat, kernel_size, reduction, act, bias, scale_unetfeats):
        super().__init__()
        channels = [n_feat + level * scale_unetfeats for level in range(3)]

        def cab_pair(ch):
            return nn.Sequential(*[CAB(ch, kernel_size, reduction, bias=bias, act=act) for _ in range(2)])

        self.decoder_level1 = cab_pair(channels[0])
        self.decoder_level2 = cab_pair(channels[1])
        self.decoder_level3 = cab_pair(channels[2])

        self.skip_attn1 = CAB(channels[0], kernel_size, reduction, bias=bias, act=act)
        self.skip_attn2 = CAB(channels[1], kernel_size, reduction, bias=bias, act=act)

        self.up21 = SkipUpSample(channels[0], scale_unetfeats)
        self.up32 = SkipUpSample(channels[1], scale_unetfeats)

    def forward(self, encoder_outs):
        """Return ``[dec1, dec2, dec3]`` (full to quarter resolution of the input patch)."""
        enc1, enc2, enc3 = encoder_outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


# ------------------------------------------------------------------------------------------
# Stage 3: original-resolution subnetwork (MPRNet §3.2, Fig. 2)
# ------------------------------------------------------------------------------------------
class ORB(nn.Module):
    """Original Resolution Block: ``num_cab`` CABs and a convolution, with a residual skip.

    The final convolution has no bias whatever ``bias`` says, as in the official code.
    """

    def __init__(self, n_feat, kernel_size, reduction, act, bias, num_cab):
        super().__init__()
        blocks = [CAB(n_feat, kernel_size, reduction, bias=bias, act=act) for _ in range(num_cab)]
        blocks.append(conv(n_feat, n_feat, kernel_size))
        self.body = nn.Sequential(*blocks)

    def forward(self, x):
        return self.body(x) + x


class ORSNet(nn.Module):
    """Original-Resolution Subnetwork: three ORBs at full resolution (``n_feat +
    scale_orsnetfeats`` channels, no downsampling), each followed by the fusion of the stage-2
    encoder/decoder features of one U-Net level, upsampled to full resolution (``up_*``) and
    projected by 1x1 convolutions (``conv_enc*``/``conv_dec*``) (MPRNet §3.2 and §3.4)."""

    def __init__(self, n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias, scale_unetfeats, num_cab):
        super().__init__()
        orsnet_channels = n_feat + scale_orsnetfeats

        self.orb1 = ORB(orsnet_channels, kernel_size, reduction, act, bias, num_cab)
        self.orb2 = ORB(orsnet_channels, kernel_size, reduction, act, bias, num_cab)
        self.orb3 = ORB(orsnet_channels, kernel_size, reduction, act, bias, num_cab)

        # level 2 (1/2 resolution) -> full resolution; level 3 (1/4 resolution) -> full, in two steps
        self.up_enc1 = UpSample(n_feat, scale_unetfeats)
        self.up_dec1 = UpSample(n_feat, scale_unetfeats)
        self.up_enc2 = nn.Sequential(UpSample(n_feat + scale_unetfeats, scale_unetfeats),
                                     UpSample(n_feat, scale_unetfeats))
        self.up_dec2 = nn.Sequential(UpSample(n_feat + scale_unetfeats, scale_unetfeats),
                                     UpSample(n_feat, scale_unetfeats))

        self.conv_enc1 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)
        self.conv_enc2 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)
        self.conv_enc3 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)

        self.conv_dec1 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)
        self.conv_dec2 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)
        self.conv_dec3 = nn.Conv2d(n_feat, orsnet_channels, kernel_size=1, bias=bias)

    def forward(self, x, encoder_outs, decoder_outs):
        x = self.orb1(x)
        x = x + self.conv_enc1(encoder_outs[0]) + self.conv_dec1(decoder_outs[0])

        x = self.orb2(x)
        x = x + self.conv_enc2(self.up_enc1(encoder_outs[1])) + self.conv_dec2(self.up_dec1(decoder_outs[1]))

        x = self.orb3(x)
        x = x + self.conv_enc3(self.up_enc2(encoder_outs[2])) + self.conv_dec3(self.up_dec2(decoder_outs[2]))
        return x


# ------------------------------------------------------------------------------------------
# MPRNet
# ------------------------------------------------------------------------------------------
def _cat_levels(first, second, dim):
    """Concatenate two lists of per-level feature maps level by level along ``dim``."""
    return [torch.cat((a, b), dim) for a, b in zip(first, second)]


@ARCH_REGISTRY.register()
class MPRNet(nn.Module):
    """Multi-Stage Progressive image Restoration network (Zamir et al., CVPR 2021, §3, Fig. 2).

    Three stages restore the image progressively on a multi-patch hierarchy:

    * stage 1: the image is split into 2x2 non-overlapping patches, each processed by a U-Net
      (``shallow_feat1``, ``stage1_encoder``, ``stage1_decoder``); ``sam12`` produces the
      stage-1 image and attention-gated features;
    * stage 2: top/bottom halves, processed by a U-Net (``shallow_feat2``, ``concat12``,
      ``stage2_encoder`` with cross-stage feature fusion, ``stage2_decoder``); ``sam23``
      produces the stage-2 image;
    * stage 3: the whole image at its original resolution (``shallow_feat3``, ``concat23``,
      ``stage3_orsnet``), mapped to a residual image by ``tail``.

    Args:
        in_c (int): input image channels. The stage images are residuals added to the input,
            so ``out_c`` must equal ``in_c``; the official code uses 3.
        out_c (int): output image channels.
        n_feat (int): base number of feature channels.
        scale_unetfeats (int): channels added at each U-Net level.
        scale_orsnetfeats (int): channels added in the original-resolution subnetwork.
        num_cab (int): channel attention blocks per original resolution block.
        kernel_size (int): convolution kernel size.
        reduction (int): channel reduction of the channel attention layers.
        bias (bool): whether the convolutions have biases.
        padding_mode (str): how every convolution wider than 1x1 pads its input: ``'zeros'`` (the
            official code's, default), ``'reflect'`` or ``'replicate'``. The state dict is the same
            for all three, so official checkpoints load into any of them. Stages 1 and 2 restore
            each patch on its own, so with zero padding every patch sees a dark frame along the
            borders it shares with its neighbours, and a network that has not learned to undo it
            leaves a step along the middle row and column of its output (a seam). With
            ``'replicate'`` a patch's border continues its own content, so a constant image maps
            to a constant image and the frame's seam is gone (a structure cut in two by a patch
            border, e.g. a rain streak, is still left to the later stages); ``'reflect'`` needs
            every feature map wider than 1 pixel.

    The defaults are the deraining configuration; deblurring uses ``n_feat=96,
    scale_unetfeats=48, scale_orsnetfeats=32`` and denoising ``n_feat=80, scale_unetfeats=48,
    scale_orsnetfeats=32``.

    Attributes:
        feat_layers (tuple[str]): features returned by ``forward(x, return_feats=True)`` when
            its ``feat_layers`` argument is ``None``; default ``('orsnet',)``. See
            :meth:`forward`. Not part of the state dict, so it can be changed freely.
    """

    def __init__(self, in_c=3, out_c=3, n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16, num_cab=8,
                 kernel_size=3, reduction=4, bias=False, padding_mode='zeros'):
        super().__init__()
        if in_c != out_c:
            raise ValueError(f'MPRNet predicts residuals of its input: out_c ({out_c}) must equal in_c ({in_c})')
        if padding_mode not in PADDING_MODES:
            raise ValueError(f'MPRNet: padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}')
        self.feat_layers = ('orsnet',)

        # One PReLU shared by every CAB, as in the official code (one parameter, many keys).
        act = nn.PReLU()

        def shallow_feat():
            return nn.Sequential(conv(in_c, n_feat, kernel_size, bias=bias),
                                 CAB(n_feat, kernel_size, reduction, bias=bias, act=act))

        self.shallow_feat1 = shallow_feat()
        self.shallow_feat2 = shallow_feat()
        self.shallow_feat3 = shallow_feat()

        self.stage1_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff=False)
        self.stage1_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)

        self.stage2_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff=True)
        self.stage2_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)

        self.stage3_orsnet = ORSNet(n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias, scale_unetfeats,
                                    num_cab)

        self.sam12 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)
        self.sam23 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)

        self.concat12 = conv(n_feat * 2, n_feat, kernel_size, bias=bias)
        self.concat23 = conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias=bias)
        self.tail = conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias=bias)

        for module in self.modules():
            if isinstance(module, nn.Conv2d) and any(module.padding):
                module.padding_mode = padding_mode

    def forward(self, x, return_feats=False, feat_layers=None):
        """Restore ``x`` of shape (N, in_c, H, W), any H and W.

        Inputs whose H or W is not a multiple of 8 are reflect-padded at the bottom/right (as in
        the official demo.py) and every output is cropped back to H x W.

        Args:
            x (Tensor): degraded images.
            return_feats (bool): also return intermediate features for Uni-Removal's knowledge
                transfer.
            feat_layers (Sequence[str] | None): which features to return, in this order, from
                ``'orsnet'``, ``'stage2_decoder'``, ``'stage2_encoder'``; ``None`` uses
                :attr:`feat_layers` (default ``('orsnet',)``).

        Returns:
            list[Tensor]: ``[stage3_img, stage2_img, stage1_img]``, final output first, each
            (N, out_c, H, W), as in the official code. With ``return_feats=True``, the tuple
            ``(outputs, feats)`` where ``feats`` is a list of tensors, one per requested layer:

            * ``'orsnet'`` (default): the stage-3 ORSNet output fed to ``tail``,
              (N, n_feat + scale_orsnetfeats, H, W).
            * ``'stage2_decoder'``: stage-2 decoder level-1 output fed to ``sam23``,
              (N, n_feat, H, W).
            * ``'stage2_encoder'``: stage-2 encoder level-1 output (after cross-stage fusion),
              (N, n_feat, H, W).

        Feature choice: Uni-Removal's feature-grained contrastive loss (arXiv:2307.05075,
        §III-B, Eq. 3) pulls the student's features towards those of the teacher for the
        matching degradation. The default is the ORSNet output because it is MPRNet's final,
        full-resolution representation, the one that directly produces the restored image
        through a single convolution (``tail``), so aligning it transfers exactly what the
        teacher restores, with no spatial misalignment (MPRNet §3.2: stage 3 keeps the original
        resolution). The two stage-2 options are full-resolution too, so every returned feature
        is cropped exactly to H x W and no padded position enters the loss.
        """
        layers = self.feat_layers if feat_layers is None else tuple(feat_layers)
        unknown = [name for name in layers if name not in FEATURE_LAYERS]
        if return_feats and unknown:
            raise ValueError(f'unknown feature layers {unknown}; choose from {FEATURE_LAYERS}')

        height, width = x.shape[-2:]
        x3_img = pad_to_multiple(x, SIZE_MULTIPLE)
        half_h, half_w = x3_img.shape[-2] // 2, x3_img.shape[-1] // 2

        # Multi-patch hierarchy: two halves for stage 2, four quarters for stage 1.
        x2top_img, x2bot_img = x3_img[:, :, :half_h], x3_img[:, :, half_h:]
        x1_imgs = [x2top_img[..., :half_w], x2top_img[..., half_w:],
                   x2bot_img[..., :half_w], x2bot_img[..., half_w:]]

        # ---- Stage 1: four quarter patches through the stage-1 U-Net ----
        feat1_ltop, feat1_rtop, feat1_lbot, feat1_rbot = [
            self.stage1_encoder(self.shallow_feat1(patch)) for patch in x1_imgs]
        feat1_top = _cat_levels(feat1_ltop, feat1_rtop, dim=3)  # join left/right along width
        feat1_bot = _cat_levels(feat1_lbot, feat1_rbot, dim=3)
        res1_top = self.stage1_decoder(feat1_top)
        res1_bot = self.stage1_decoder(feat1_bot)

        x2top_samfeats, stage1_img_top = self.sam12(res1_top[0], x2top_img)
        x2bot_samfeats, stage1_img_bot = self.sam12(res1_bot[0], x2bot_img)
        stage1_img = torch.cat([stage1_img_top, stage1_img_bot], 2)

        # ---- Stage 2: two half patches, fused with stage-1 SAM features and CSFF ----
        x2top_cat = self.concat12(torch.cat([self.shallow_feat2(x2top_img), x2top_samfeats], 1))
        x2bot_cat = self.concat12(torch.cat([self.shallow_feat2(x2bot_img), x2bot_samfeats], 1))
        feat2_top = self.stage2_encoder(x2top_cat, feat1_top, res1_top)
        feat2_bot = self.stage2_encoder(x2bot_cat, feat1_bot, res1_bot)
        feat2 = _cat_levels(feat2_top, feat2_bot, dim=2)  # join top/bottom along height
        res2 = self.stage2_decoder(feat2)

        x3_samfeats, stage2_img = self.sam23(res2[0], x3_img)

        # ---- Stage 3: whole image at original resolution ----
        x3_cat = self.concat23(torch.cat([self.shallow_feat3(x3_img), x3_samfeats], 1))
        orsnet_feat = self.stage3_orsnet(x3_cat, feat2, res2)
        stage3_img = self.tail(orsnet_feat) + x3_img

        def crop(t):
            return t[..., :height, :width]

        outputs = [crop(stage3_img), crop(stage2_img), crop(stage1_img)]
        if not return_feats:
            return outputs
        available = {'orsnet': orsnet_feat, 'stage2_decoder': res2[0], 'stage2_encoder': feat2[0]}
        return outputs, [crop(available[name]) for name in layers]
