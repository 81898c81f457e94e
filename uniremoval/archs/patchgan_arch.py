"""CycleGAN's PatchGAN discriminator, registered in BasicSR's ``ARCH_REGISTRY`` as ``PatchGANDiscriminator``.

PatchGAN: P. Isola, J.-Y. Zhu, T. Zhou and A. A. Efros, "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017 (arXiv:1611.07004), §3.2.2 and §6.1.2; used as CycleGAN's discriminator:
J.-Y. Zhu, T. Park, P. Isola and A. A. Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017 (arXiv:1703.10593), §4 and Appendix 7.2 ("70x70 PatchGAN").
Official code: https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix (``models/networks.py``,
``NLayerDiscriminator`` and ``init_weights``).

It classifies every overlapping 70x70 patch of its input as real or fake: the output is a map of patch
logits (B, 1, H', W'), 30x30 for a 256x256 input with the default three stride-2 layers. It has no final
sigmoid, so it pairs with BasicSR's ``GANLoss`` (``gan_type: lsgan`` as in CycleGAN, or ``vanilla``).

This is an independent re-implementation that keeps the official layout: a single ``nn.Sequential`` named
``model`` with the official layer order, so the official discriminator state dicts (``netD_A.pth``, ...)
load with ``load_state_dict(strict=True)``. Default configuration (``num_feat=64``, ``num_layers=3``,
instance norm): 2,764,737 parameters, keys ``model.{0,2,5,8,11}.{weight,bias}``.

One deliberate difference: with ``norm_type='none'`` the hidden convolutions keep their bias (the official
code drops it there, which leaves those layers without any shift); the norm slots are ``nn.Identity`` so the
layer indices do not move.
"""
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY

# the official 'instance' norm: InstanceNorm2d(affine=False, track_running_stats=False); 'batch': affine with
# running statistics
_NORM_TYPES = ('instance', 'batch', 'none')


def _norm_layer(norm_type, num_feat):
    if norm_type == 'instance':
        return nn.InstanceNorm2d(num_feat, affine=False, track_running_stats=False)
    if norm_type == 'batch':
        return nn.BatchNorm2d(num_feat, affine=True, track_running_stats=True)
    return nn.Identity()


@ARCH_REGISTRY.register()
class PatchGANDiscriminator(nn.Module):
    """The N-layer PatchGAN discriminator of pix2pix / CycleGAN (``NLayerDiscriminator``).

    Every convolution has a 4x4 kernel and padding 1. Layout of ``model``: ``C64`` (stride 2, no norm),
    then ``num_layers - 1`` blocks ``Ck`` (stride 2) with ``k`` doubling up to ``8 * num_feat``, one more
    stride-1 block, and a stride-1 convolution to one channel (Isola et al. §6.1.2: C64-C128-C256-C512 for
    the 70x70 PatchGAN). Each block is conv + norm + LeakyReLU(0.2). Hidden convolutions have a bias only
    without a learned shift after them (instance norm without affine, or no norm), as in the official code.

    One output logit sees a ``9 * 2 ** num_layers - 2`` square of the input: 70x70 for ``num_layers=3``
    (34x34 for 2, 142x142 for 4); the output stride is ``2 ** num_layers``.

    Weights are initialised as in CycleGAN (``init_type='normal'``, gain 0.02): convolution weights
    N(0, 0.02) and biases 0, batch-norm weights N(1, 0.02) and biases 0.

    Args:
        num_in_ch (int): Channel number of the input images. Default: 3.
        num_feat (int): Channels of the first convolution (``ndf``). Default: 64.
        num_layers (int): Number of stride-2 convolutions (``n_layers_D``). Default: 3.
        norm_type (str): ``'instance'`` (CycleGAN's default), ``'batch'`` (pix2pix) or ``'none'``.
            Default: ``'instance'``.
    """

    def __init__(self, num_in_ch=3, num_feat=64, num_layers=3, norm_type='instance'):
        super().__init__()
        if norm_type not in _NORM_TYPES:
            raise ValueError(f'PatchGANDiscriminator: norm_type must be one of {_NORM_TYPES}, got {norm_type!r}')
        if num_layers < 1:
            raise ValueError(f'PatchGANDiscriminator: num_layers must be at least 1, got {num_layers}')
        self.num_layers = num_layers
        use_bias = norm_type != 'batch'

        layers = [nn.Conv2d(num_in_ch, num_feat, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, num_layers):
            prev_mult, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(num_feat * prev_mult, num_feat * mult, 4, 2, 1, bias=use_bias),
                _norm_layer(norm_type, num_feat * mult),
                nn.LeakyReLU(0.2, True)
            ]
        prev_mult, mult = mult, min(2**num_layers, 8)
        layers += [
            nn.Conv2d(num_feat * prev_mult, num_feat * mult, 4, 1, 1, bias=use_bias),
            _norm_layer(norm_type, num_feat * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(num_feat * mult, 1, 4, 1, 1)
        ]
        self.model = nn.Sequential(*layers)
        self.init_weights()

    def init_weights(self, gain=0.02):
        """CycleGAN's ``init_weights(net, 'normal', 0.02)``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)

    @property
    def min_size(self):
        """Smallest input side with a non-empty output (each stride-2 conv floors the side by half, the two
        stride-1 convs shrink it by one each)."""
        return 3 * 2**self.num_layers

    def forward(self, x):
        """Patch logits (B, 1, H', W') of images ``x`` (B, num_in_ch, H, W)."""
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f'PatchGANDiscriminator with {self.num_layers} layers needs inputs of at least '
                             f'{self.min_size}x{self.min_size}, got {tuple(x.shape[-2:])}')
        return self.model(x)
