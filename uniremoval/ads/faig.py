"""FAIG-SD: filter attribution integrated gradients for specific degradations (ADS step 2).

ADS (Park et al., CVPR 2023, slides "Method: Step 2") scores every kernel ``i`` of a unified model
``theta_um`` against a target model ``theta_d`` fine-tuned from it on degradation ``d``, with FAIG
(Xie et al., NeurIPS 2021, Eq. 6; code TencentARC/FAIG)::

    F_i = | (1/N) [theta_d - theta_um]_i * sum_{t=0}^{N-1} dL(lambda(alpha_t), x) / d lambda_i |
    lambda(alpha) = alpha * theta_um + (1 - alpha) * theta_d,   alpha_t = t / N

As in the official code: ``L`` is ``MSELoss(reduction='sum')`` between the interpolated network's
output and the ground truth (``loss='l1'`` and ``reduction='mean'`` are options; without ground
truth, the target model's output is the reference); ``N = 100``; the absolute value is taken per
weight element and summed over each kernel; scores are computed per image and averaged over the
images; the whole state is interpolated, in eval mode. FAIG's Eq. 7 (subtracting a second
degradation's scores) is not part of FAIG-SD and is not applied.

A filter's score is the sum of its kernels' scores (``per_kernel=True`` returns the kernel scores).
The network is never copied: every step calls :func:`torch.func.functional_call` on ``um_net``.
Details: ``docs/design.md``, "ADS".
"""
from collections.abc import Mapping, Sequence

import torch
from torch.func import functional_call
from torch.nn import functional as F
from tqdm import tqdm

from uniremoval.ads.adaptive_conv import maskable_convs
from uniremoval.utils.pixel_range import final_output

_LOSSES = {'mse': F.mse_loss, 'l1': F.l1_loss}

# Show a progress bar by default from this many forward/backward passes (images x steps) on.
PROGRESS_MIN_PASSES = 500


def _unpack(item):
    """``(lq, gt or None)`` from a tensor, an ``(lq, gt)`` pair or a BasicSR data dict."""
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, Mapping):
        if 'lq' not in item:
            raise KeyError(f"faig_scores: a batch dict needs the key 'lq' (and optionally 'gt'), got {sorted(item)}")
        return item['lq'], item.get('gt')
    if isinstance(item, Sequence) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(f'faig_scores: a batch must be an lq tensor, an (lq, gt) pair or a dict with lq/gt, '
                    f'got {type(item).__name__}')


def _check_same_architecture(um_net, target_net):
    um_state = um_net.state_dict()
    target_state = target_net.state_dict()
    missing = [k for k in um_state if k not in target_state]
    extra = [k for k in target_state if k not in um_state]
    shapes = [k for k in um_state if k in target_state and um_state[k].shape != target_state[k].shape]
    if missing or extra or shapes:
        raise ValueError(f'faig_scores: the UM and target networks differ: keys missing from the target {missing[:5]}, '
                         f'unexpected {extra[:5]}, shape mismatches {shapes[:5]}')


def faig_scores(um_net, target_net, batches, steps=100, loss='mse', per_kernel=False, reduction='sum',
                progress=None):
    """FAIG-SD scores of every maskable convolution (FAIG Eq. 6 along the UM-target path).

    Args:
        um_net (nn.Module): the unified model ``theta_um`` (the baseline of FAIG); not modified.
        target_net (nn.Module): ``theta_d``, same architecture, fine-tuned on degradation d.
        batches (Iterable): images of degradation d: lq tensors ``[B, C, H, W]``, ``(lq, gt)`` pairs or
            BasicSR data dicts (``{'lq', 'gt'}``). Without gt the target model's output is the reference.
        steps (int): N, points of the Riemann sum (FAIG: 100).
        loss (str): ``'mse'`` (FAIG) or ``'l1'``.
        per_kernel (bool): return ``[C_out, C_in/groups]`` kernel scores instead of ``[C_out]`` filter scores.
        reduction (str): ``'sum'`` (FAIG) or ``'mean'`` over the output's elements.
        progress (bool | None): tqdm bar; None shows it when images x steps >= ``PROGRESS_MIN_PASSES``
            (when ``len(batches)`` is known).

    Returns:
        dict[str, Tensor]: float32 CPU scores per maskable convolution name, averaged over the images.
    """
    if loss not in _LOSSES:
        raise ValueError(f"faig_scores: loss must be one of {sorted(_LOSSES)}, got {loss!r}")
    if reduction not in ('sum', 'mean'):
        raise ValueError(f"faig_scores: reduction must be 'sum' or 'mean', got {reduction!r}")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f'faig_scores: steps must be >= 1, got {steps}')
    _check_same_architecture(um_net, target_net)
    loss_fn = _LOSSES[loss]

    convs = maskable_convs(um_net)
    weight_keys = [f'{name}.weight' for name in convs]
    um_params = {k: v.detach() for k, v in um_net.named_parameters()}
    device = next(iter(um_params.values())).device
    target_params = {k: v.detach().to(device) for k, v in target_net.named_parameters()}
    um_buffers = {k: v.detach() for k, v in um_net.named_buffers()}
    target_buffers = {k: v.detach().to(device) for k, v in target_net.named_buffers()}
    missing = [k for k in weight_keys if k not in um_params]
    if missing:
        raise ValueError(f'faig_scores: convolution weights {missing[:3]} are not parameters of the UM')
    diff = {k: target_params[k] - um_params[k] for k in weight_keys}

    def interpolated(alpha):
        params = {k: alpha * v + (1 - alpha) * target_params[k] for k, v in um_params.items()}
        for k in weight_keys:
            params[k].requires_grad_(True)
        buffers = {k: (alpha * v + (1 - alpha) * target_buffers[k]) if v.is_floating_point() else target_buffers[k]
                   for k, v in um_buffers.items()}
        return params, buffers

    if progress is None:
        try:
            progress = len(batches) * steps >= PROGRESS_MIN_PASSES
        except TypeError:
            progress = False
    bar = tqdm(desc='FAIG-SD', unit='pass', disable=not progress)

    totals = {k: torch.zeros(v.shape[:2], dtype=torch.float64, device=device) for k, v in diff.items()}
    num_images = 0
    um_training, target_training = um_net.training, target_net.training
    um_net.eval()
    target_net.eval()
    try:
        for item in batches:
            lq, gt = _unpack(item)
            lq = lq.to(device)
            gt = None if gt is None else gt.to(device)
            for b in range(lq.shape[0]):
                x = lq[b:b + 1]
                if gt is not None:
                    reference = gt[b:b + 1]
                else:
                    with torch.no_grad():
                        reference = final_output(target_net(x)).detach()
                grad_sums = {k: torch.zeros_like(v) for k, v in diff.items()}
                for t in range(steps):
                    params, buffers = interpolated(t / steps)
                    with torch.enable_grad():
                        output = final_output(functional_call(um_net, {**params, **buffers}, (x, )))
                        value = loss_fn(output, reference, reduction=reduction)
                        grads = torch.autograd.grad(value, [params[k] for k in weight_keys], allow_unused=True)
                    for k, g in zip(weight_keys, grads):
                        if g is not None:
                            grad_sums[k] += g
                    bar.update(1)
                for k in weight_keys:
                    # |diff * mean gradient| per element, summed over each kernel's spatial elements
                    totals[k] += (grad_sums[k] * diff[k] / steps).abs().flatten(2).sum(2).double()
                num_images += 1
    finally:
        bar.close()
        um_net.train(um_training)
        target_net.train(target_training)
    if num_images == 0:
        raise ValueError('faig_scores: batches yielded no image')

    scores = {}
    for name, k in zip(convs, weight_keys):
        kernel_scores = (totals[k] / num_images).float().cpu()
        scores[name] = kernel_scores if per_kernel else kernel_scores.sum(1)
    return scores
