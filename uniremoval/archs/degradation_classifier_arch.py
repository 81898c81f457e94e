"""The degradation classifier of ADS (Park et al., CVPR 2023, slides "Method: Step 3").

Registered in BasicSR's ``ARCH_REGISTRY`` as ``DegradationClassifier``. It predicts from the degraded
input image which of the k degradation types it shows; ``softmax(logits)`` is the condition ``c``
(``c_hat_d`` of ``theta_ads = theta_um + sum_d c_hat_d theta_d M_d``) of CNN-ADS, and it is trained
with cross-entropy on the type labels.

The slides do not give its architecture; this is a small strided CNN: a 3x3 convolution to
``num_feat`` channels, then ``num_blocks`` blocks of (3x3 stride-2 convolution, LeakyReLU, 3x3
convolution, LeakyReLU), the channels doubling at each block up to ``4 * num_feat``, global average
pooling and a linear layer to ``num_degradations`` logits. Global pooling makes it work at any input
size (a 1x1 input included); the defaults have 868,483 parameters, 5% of NAFNet's 17.1M UM.
"""
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class DegradationClassifier(nn.Module):
    """Degradation-type classifier: strided CNN + global average pooling + linear; returns logits.

    Args:
        num_in_ch (int): input channels. Default: 3.
        num_degradations (int): k, number of degradation types (logits). Default: 3.
        num_feat (int): channels of the first layer; doubled per block up to ``4 * num_feat``. Default: 32.
        num_blocks (int): stride-2 blocks (each halves the resolution, rounding up). Default: 4.
    """

    def __init__(self, num_in_ch=3, num_degradations=3, num_feat=32, num_blocks=4):
        super().__init__()
        if num_degradations < 1 or num_feat < 1 or num_blocks < 0:
            raise ValueError(f'DegradationClassifier: need num_degradations >= 1, num_feat >= 1, num_blocks >= 0; got '
                             f'{num_degradations}, {num_feat}, {num_blocks}')
        self.num_degradations = num_degradations
        layers = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        channels = num_feat
        for i in range(num_blocks):
            out_channels = num_feat * min(2**(i + 1), 4)
            layers += [
                nn.Conv2d(channels, out_channels, 3, 2, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True)
            ]
            channels = out_channels
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_degradations)

    def forward(self, x):
        """Logits ``[B, num_degradations]`` for images ``[B, num_in_ch, H, W]`` of any size."""
        return self.fc(self.pool(self.body(x)).flatten(1))
