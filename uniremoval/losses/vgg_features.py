"""Frozen VGG feature extractor for the image-grained contrastive losses; it never downloads.

:func:`build_vgg_feature_extractor` builds BasicSR's ``VGGFeatureExtractor`` (the ``G`` of Eq. 2 of
Uni-Removal, arXiv:2307.05075) and fills it with torchvision-layout ImageNet weights read from a
local file (:func:`default_vgg_weights_path`: the torch hub cache), or leaves it untrained
(``pretrained=False``, for offline tests and demos). BasicSR's own constructor would download the
weights; here the network is never touched.

This module registers nothing (its name does not end with ``_loss.py``).
"""
import os

import torch
from torch import nn

from basicsr.utils import get_root_logger

__all__ = ['build_vgg_feature_extractor', 'default_vgg_weights_path']

_VGG_CFG_KEYS = {'vgg11': 'A', 'vgg13': 'B', 'vgg16': 'D', 'vgg19': 'E'}


class _FeaturesOnlyVGG(nn.Module):
    """Randomly initialised torchvision VGG ``features`` (no classifier, nothing downloaded)."""

    def __init__(self, vgg_type):
        super().__init__()
        from torchvision.models import vgg as tv_vgg

        base = vgg_type.replace('_bn', '')
        if hasattr(tv_vgg, 'make_layers') and hasattr(tv_vgg, 'cfgs'):
            self.features = tv_vgg.make_layers(tv_vgg.cfgs[_VGG_CFG_KEYS[base]], batch_norm='_bn' in vgg_type)
            for m in self.features.modules():  # torchvision's VGG initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        else:  # torchvision without these helpers: build the whole (untrained) model
            self.features = getattr(tv_vgg, vgg_type)(weights=None).features


class _NoDownloadVGGModule:
    """Stands in for ``torchvision.models.vgg`` inside BasicSR's vgg_arch while we build."""

    def __getattr__(self, vgg_type):
        return lambda *args, **kwargs: _FeaturesOnlyVGG(vgg_type)


def _extractor_without_download(layer_name_list, vgg_type, use_input_norm, range_norm):
    """Build BasicSR's VGGFeatureExtractor with random weights, never touching the network.

    BasicSR 1.4.2's constructor has no ``pretrained`` switch: it loads
    ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` (relative to the working directory)
    if it exists, else calls ``torchvision.models.<vgg_type>(pretrained=True)``, which
    downloads. For the duration of the constructor we point both at no-download stand-ins.
    """
    from basicsr.archs import vgg_arch

    saved = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = _NoDownloadVGGModule(), ''
    try:
        return vgg_arch.VGGFeatureExtractor(
            layer_name_list=list(layer_name_list),
            vgg_type=vgg_type,
            use_input_norm=use_input_norm,
            range_norm=range_norm,
            requires_grad=False)
    finally:
        vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = saved


def _weights_file_name(vgg_type):
    """File name of torchvision's ImageNet weights, e.g. ``vgg19-dcbb9e9d.pth`` (no download)."""
    from torchvision.models import get_model_weights

    return os.path.basename(get_model_weights(vgg_type).IMAGENET1K_V1.url)


def _weights_enum_name(vgg_type):
    from torchvision.models import get_model_weights

    return get_model_weights(vgg_type).__name__


def default_vgg_weights_path(vgg_type='vgg19'):
    """Where torchvision caches the ImageNet weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', _weights_file_name(vgg_type))


def _load_torchvision_features(extractor, path, vgg_type):
    """Load torchvision-layout VGG weights (``features.<index>.<param>``) into the extractor.

    The extractor names its layers (``vgg_net.conv1_1``, ...) in the order of torchvision's
    ``features`` Sequential, so index ``i`` maps to ``extractor.names[i]``.
    """
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'{path} does not hold a state dict (got {type(state).__name__})')
    target = extractor.vgg_net.state_dict()
    mapped = {}
    for key, value in state.items():
        parts = key.split('.')
        if len(parts) != 3 or parts[0] != 'features' or not parts[1].isdigit():
            continue  # classifier.* etc.
        index = int(parts[1])
        if index < len(extractor.names):
            new_key = f'{extractor.names[index]}.{parts[2]}'
            if new_key in target:
                mapped[new_key] = value
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise ValueError(f'{path} is not a torchvision {vgg_type} state dict (keys "features.<index>.weight"): '
                         f'no weights for {missing}')
    extractor.vgg_net.load_state_dict(mapped, strict=True)


def build_vgg_feature_extractor(layer_name_list,
                                vgg_type='vgg19',
                                use_input_norm=True,
                                range_norm=False,
                                pretrained=True,
                                vgg_weights_path=None):
    """Frozen BasicSR ``VGGFeatureExtractor`` whose weights never come from the network.

    Args:
        layer_name_list (list[str]): layers to return, e.g. ``['relu1_1', 'relu5_1']``.
        vgg_type (str): 'vgg19' (default), 'vgg16', 'vgg13', 'vgg11' or a '_bn' variant.
        use_input_norm (bool): normalise [0, 1] inputs with the ImageNet mean and std.
        range_norm (bool): map [-1, 1] inputs to [0, 1] first.
        pretrained (bool): load ImageNet weights from ``vgg_weights_path`` or, if that is None,
            from :func:`default_vgg_weights_path`; FileNotFoundError if the file is missing.
            False: random weights (seed the RNG yourself) and a warning.
        vgg_weights_path (str | None): torchvision-layout weights file.

    Returns:
        VGGFeatureExtractor: in eval mode, every parameter with ``requires_grad=False``.
    """
    logger = get_root_logger()
    if pretrained:
        path = vgg_weights_path if vgg_weights_path is not None else default_vgg_weights_path(vgg_type)
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            file_name = _weights_file_name(vgg_type)
            enum_name = _weights_enum_name(vgg_type)
            given = f'vgg_weights_path={vgg_weights_path!r} does not exist. ' if vgg_weights_path is not None else ''
            raise FileNotFoundError(
                f'ImageNet {vgg_type} weights not found (nothing is downloaded). {given}'
                f'Put torchvision\'s {enum_name}.IMAGENET1K_V1 file "{file_name}" '
                f'(https://download.pytorch.org/models/{file_name}) either at the path given by the loss option '
                f'vgg_weights_path or in the torch hub cache at {default_vgg_weights_path(vgg_type)}. '
                f'Set "pretrained: false" to use an untrained VGG instead (offline tests and demos only).')
    extractor = _extractor_without_download(layer_name_list, vgg_type, use_input_norm, range_norm)
    if pretrained:
        _load_torchvision_features(extractor, path, vgg_type)
        logger.info(f'Contrastive loss: loaded ImageNet {vgg_type} weights from {path}.')
    else:
        logger.warning(f'Contrastive loss: pretrained=False, the image-grained contrastive loss uses an UNTRAINED '
                       f'(randomly initialised) {vgg_type}. Use this only for offline runs (tests, the demo); '
                       f'set pretrained: true with ImageNet weights for real training.')
    extractor.eval()
    for param in extractor.parameters():
        param.requires_grad_(False)
    return extractor
