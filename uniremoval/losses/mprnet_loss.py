"""MPRNet's training losses (Zamir et al., CVPR 2021, §3.3 "Loss Function").

MPRNet trains every stage S in {1, 2, 3} with

    L = sum_S [ L_char(X_S, Y) + 0.05 * L_edge(X_S, Y) ]

where L_char is the Charbonnier loss sqrt(||X - Y||^2 + eps^2) with eps = 1e-3 and L_edge is the
Charbonnier loss between the Laplacians of X and Y. The Charbonnier term is BasicSR's own
``CharbonnierLoss`` (it puts eps *inside* the square root, so MPRNet's eps = 1e-3 is ``eps: 1.0e-6``
in the option file). The edge term is :class:`EdgeLoss` below; the sum over stages is done by
:class:`~uniremoval.models.mprnet_model.MPRNetModel`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from basicsr.losses.basic_loss import charbonnier_loss
from basicsr.utils.registry import LOSS_REGISTRY

# 5-tap binomial-like kernel of MPRNet's EdgeLoss; its outer product is the 5x5 Gaussian.
GAUSS_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


def gaussian_blur_5x5(img):
    """Depth-wise 5x5 Gaussian filter with replicate padding (MPRNet's ``conv_gauss``)."""
    taps = torch.tensor(GAUSS_TAPS, dtype=img.dtype, device=img.device)
    kernel = torch.outer(taps, taps).expand(img.size(1), 1, 5, 5)
    return F.conv2d(F.pad(img, (2, 2, 2, 2), mode='replicate'), kernel, groups=img.size(1))


def laplacian(img):
    """One Laplacian-pyramid level: ``img - G(up2(down2(G(img))))`` with zero-insertion upsampling.

    This is the band-pass image MPRNet's EdgeLoss compares: Gaussian blur, keep every second pixel,
    re-insert them (times 4, to keep the mean) into a zero image, blur again, subtract.
    """
    filtered = gaussian_blur_5x5(img)
    upsampled = torch.zeros_like(filtered)
    upsampled[:, :, ::2, ::2] = filtered[:, :, ::2, ::2] * 4
    return img - gaussian_blur_5x5(upsampled)


@LOSS_REGISTRY.register()
class EdgeLoss(nn.Module):
    """MPRNet's edge loss: Charbonnier distance between the Laplacians of prediction and target.

    Args:
        loss_weight (float): weight of the loss; MPRNet uses 0.05. Default: 1.0.
        eps (float): Charbonnier epsilon as in MPRNet, i.e. ``sqrt(d^2 + eps^2)``. Default: 1e-3.
        reduction (str): ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.
    """

    def __init__(self, loss_weight=1.0, eps=1e-3, reduction='mean'):
        super().__init__()
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"EdgeLoss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        self.loss_weight = loss_weight
        self.eps = eps
        self.reduction = reduction

    def forward(self, pred, target, weight=None):
        """pred, target: (N, C, H, W) tensors; weight: optional element-wise weights."""
        return self.loss_weight * charbonnier_loss(
            laplacian(pred), laplacian(target), weight, eps=self.eps**2, reduction=self.reduction)
