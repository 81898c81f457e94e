"""The compat shim (BasicSR 1.4.2 on current torchvision) and registration of every component."""
import subprocess
import sys

import torch

import uniremoval
from basicsr.losses import build_loss
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY


def test_plain_basicsr_import_needs_the_shim_and_plugin_import_is_clean():
    code_plain = 'import basicsr'
    code_plugin = ('import uniremoval, basicsr, sys; '
                   'from torchvision.transforms.functional import rgb_to_grayscale as f; '
                   'from basicsr.data.degradations import rgb_to_grayscale as g; '
                   'print(sys.modules["torchvision.transforms.functional_tensor"].__name__)')
    plain = subprocess.run([sys.executable, '-c', code_plain], capture_output=True, text=True)
    plugin = subprocess.run([sys.executable, '-c', code_plugin], capture_output=True, text=True)
    import torchvision
    if int(torchvision.__version__.split('.')[1]) >= 17:  # functional_tensor was removed in 0.17
        assert plain.returncode != 0 and 'functional_tensor' in plain.stderr
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.strip() == 'torchvision.transforms.functional_tensor'


def test_compat_install_is_idempotent():
    assert uniremoval.compat.install() == []  # already installed by `import uniremoval`
    alias = sys.modules[uniremoval.compat.LEGACY_MODULE]
    img = torch.rand(3, 4, 5)
    import torchvision.transforms.functional as F
    assert torch.equal(alias.rgb_to_grayscale(img), F.rgb_to_grayscale(img))


def test_registry_round_trip():
    assert ARCH_REGISTRY.get('MPRNet').__module__ == 'uniremoval.archs.uniremoval_arch'
    assert MODEL_REGISTRY.get('MPRNetModel').__module__ == 'uniremoval.models.mprnet_model'
    assert LOSS_REGISTRY.get('EdgeLoss').__module__ == 'uniremoval.losses.mprnet_loss'
    loss = build_loss({'type': 'EdgeLoss', 'loss_weight': 0.05})
    assert loss.loss_weight == 0.05 and loss.eps == 1e-3
