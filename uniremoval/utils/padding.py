"""Padding of images to size multiples, shared by MPRNet's forward and tiled inference."""
from torch.nn import functional as F


def pad_to_multiple(x, multiple):
    """Pad ``x`` (..., H, W) at the bottom and right so that H and W are multiples of ``multiple``.

    Reflection padding, as in MPRNet's official demo.py; a side too short to reflect (padding >= its
    size) is replicate-padded instead, where the official demo would fail. Returns ``x`` itself when
    nothing is needed.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
