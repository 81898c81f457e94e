"""Behaviour shared by every uniremoval model on top of BasicSR's ``BaseModel``.

:class:`SafeCheckpointMixin` replaces three ``BaseModel`` methods:

* ``load_network`` reads with ``weights_only=True`` and also accepts official ``{'state_dict': ...}``
  checkpoints (MPRNet's release format), with or without ``module.`` prefixes;
* ``save_network`` and ``save_training_state`` write through a temporary file and rename it, so a
  kill during saving leaves the previous checkpoint intact and ``--auto_resume`` never picks up a
  truncated state.
"""
from os import path as osp

from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from uniremoval.utils.checkpoint import atomic_torch_save, load_state_dict_file


class SafeCheckpointMixin:
    """Mix in before a BasicSR model class: ``class M(SafeCheckpointMixin, SRModel)``."""

    def load_network(self, net, load_path, strict=True, param_key='params'):
        state_dict = load_state_dict_file(load_path, param_key)
        bare = self.get_bare_model(net)
        get_root_logger().info(f'Loading {bare.__class__.__name__} model from {load_path}, '
                               f'with param key: [{param_key}].')
        self._print_different_keys_loading(bare, state_dict, strict)
        bare.load_state_dict(state_dict, strict=strict)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        if current_iter == -1:
            current_iter = 'latest'
        nets = net if isinstance(net, list) else [net]
        param_keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(param_keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(param_keys)} param keys')
        save_dict = {}
        for net_, key in zip(nets, param_keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = {k[7:] if k.startswith('module.') else k: v.cpu() for k, v in state_dict.items()}
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
        }
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))
