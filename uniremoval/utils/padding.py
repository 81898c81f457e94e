"""Padding of images to size multiples, shared by MPRNet's forward and tiled inference."""
from torch.nn import functional as F


def pad_to_multiple(x, multiple, mode='reflect'):
    """Pad ``x`` (..., H, W) at the bottom and right so that H and W are multiples of ``multiple``.

    ``mode='reflect'`` (default): reflection padding, as in MPRNet's official demo.py; a side too short
    to reflect (padding >= its size) is replicate-padded instead, where the official demo would fail.
    ``mode='constant'``: zeros, as NAFNet's official ``check_image_size``. Returns ``x`` itself when
    nothing is needed.
    """
    if mode not in ('reflect', 'constant'):
        raise ValueError(f"pad_to_multiple: mode must be 'reflect' or 'constant', got {mode!r}")
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == 'reflect' and not (pad_h < height and pad_w < width):
        mode = 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
