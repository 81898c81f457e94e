"""Mixed-precision training (``train: amp: bf16 | fp16 | ~``), shared by every model of the package.

BasicSR 1.4.2 trains in fp32 only. :class:`MixedPrecision` is the one place that knows the reduced
type: models run their forward passes and losses inside :meth:`MixedPrecision.autocast`, call
:meth:`backward` and :meth:`step` instead of ``loss.backward()`` / ``optimizer.step()``, and
:meth:`update` once per iteration after their last step.

* ``bf16``: autocast only. bf16 has fp32's exponent range, so no loss scaling is needed; it runs on
  CPUs with AVX-512-BF16/AMX and on NVIDIA GPUs from Ampere on.
* ``fp16``: autocast and a ``torch.amp.GradScaler``: the loss is scaled before ``backward`` so
  small gradients do not flush to zero; a step whose gradients hold inf or NaN is skipped and the scale
  halved. The scaler's state is part of the training state (:meth:`state_dict`), so a resumed run
  continues with the same scale. Meant for CUDA; CPU autocast supports fp16 too, which the tests use.
* ``~`` (the default): fp32, and every method is the plain fp32 operation.

Frozen networks (teachers, the VGG of the perceptual and contrastive losses) can be stored in the
reduced type (:meth:`reduce_frozen`): they get no gradients, so nothing is lost by not keeping fp32
master weights, and autocast then has no weights to cast at every call.
"""
from contextlib import nullcontext

import torch

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
AMP_CHOICES = (None, ) + tuple(AMP_DTYPES)


def amp_mode(train_opt):
    """The ``train:amp`` value (``None``, ``'bf16'`` or ``'fp16'``); raises ``ValueError`` for anything else.

    The option checker reports a bad value as a one-line error before this is reached.
    """
    mode = (train_opt or {}).get('amp')
    if mode not in AMP_CHOICES:
        raise ValueError(f'train:amp: expected one of bf16, fp16 or ~ (fp32), got {mode!r}')
    return mode


class MixedPrecision:
    """Autocast, loss scaling and their state for one model (see the module docstring).

    Args:
        mode: ``None`` (fp32), ``'bf16'`` or ``'fp16'``.
        device: the device the model trains on (its type selects the autocast backend).
    """

    def __init__(self, mode, device):
        if mode not in AMP_CHOICES:
            raise ValueError(f'amp mode must be one of {AMP_CHOICES}, got {mode!r}')
        self.mode = mode
        self.device_type = torch.device(device).type
        self.dtype = AMP_DTYPES.get(mode, torch.float32)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=mode == 'fp16')

    @property
    def enabled(self):
        return self.mode is not None

    def autocast(self):
        """Context for forward passes and losses: autocast to the reduced type, or nothing in fp32."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss):
        """``loss.backward()``, with the loss scaled first under fp16."""
        self.scaler.scale(loss).backward()

    def step(self, optimizer):
        """``optimizer.step()``; under fp16 the gradients are unscaled first and a non-finite step skipped."""
        self.scaler.step(optimizer)

    def update(self):
        """Adjust the fp16 loss scale; call once per iteration, after the last :meth:`step`."""
        self.scaler.update()

    def reduce_frozen(self, net):
        """Store the frozen ``net`` in the reduced type (in place) when mixed precision is on; returns it."""
        if self.enabled:
            net.to(self.dtype)
        return net

    def state_dict(self):
        """What a training state must hold to resume exactly: the fp16 scaler's state (empty otherwise)."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state):
        if self.scaler.is_enabled() and state:
            self.scaler.load_state_dict(state)
