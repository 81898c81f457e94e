"""A checkpoint of another architecture (or width): the error lists missing, unexpected and
mismatched-shape keys with their counts and names the file."""
import pytest
import torch

from basicsr.archs import build_network
from uniremoval.utils.state_dict_check import StateDictMismatchError, check_state_dict, compare_state_dicts

TINY = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2}


def test_compare_state_dicts_known_answer():
    expected = {'a': torch.zeros(2), 'b': torch.zeros(3, 4), 'c': torch.zeros(1)}
    loaded = {'b': torch.zeros(4, 3), 'c': torch.zeros(1), 'd': torch.zeros(5)}
    assert compare_state_dicts(expected, loaded) == {'missing': ['a'], 'unexpected': ['d'],
                                                     'shape': [('b', (3, 4), (4, 3))]}
    assert compare_state_dicts(expected, dict(expected)) == {'missing': [], 'unexpected': [], 'shape': []}


def test_same_architecture_passes():
    net = build_network(dict(TINY))
    check_state_dict(net, build_network(dict(TINY)).state_dict(), 'same.pth')


def test_other_width_lists_shape_mismatches_with_counts():
    net = build_network(dict(TINY))
    wider = build_network(dict(TINY, n_feat=12)).state_dict()
    with pytest.raises(StateDictMismatchError) as info:
        check_state_dict(net, wider, '/ckpt/wide.pth')
    msg = str(info.value)
    n = sum(1 for k, v in net.state_dict().items() if v.shape != wider[k].shape)
    assert n > 5 and msg.startswith('Checkpoint /ckpt/wide.pth does not fit MPRNet: ')
    assert f'{n} key(s) of another shape (network vs file): ' in msg and ', ...' in msg
    assert 'missing' not in msg and 'unexpected' not in msg
    first = sorted(k for k, v in net.state_dict().items() if v.shape != wider[k].shape)[0]
    assert f"'{first}' {list(net.state_dict()[first].shape)} vs {list(wider[first].shape)}" in msg


def test_other_architecture_lists_missing_and_unexpected_keys():
    net = build_network(dict(TINY))
    other = build_network({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                           'num_conv': 2, 'upscale': 1}).state_dict()
    with pytest.raises(StateDictMismatchError) as info:
        check_state_dict(net, other, 'srvgg.pth')
    msg = str(info.value)
    assert f'{len(net.state_dict())} missing key(s) (in MPRNet, not in the file): ' in msg
    assert f"{len(other)} unexpected key(s) (in the file, not in MPRNet): 'body.0.bias'" in msg
    # strict=False tolerates missing / unexpected keys, never a shape mismatch
    check_state_dict(net, other, 'srvgg.pth', strict=False)
    with pytest.raises(StateDictMismatchError, match='of another shape'):
        check_state_dict(net, build_network(dict(TINY, n_feat=12)).state_dict(), 'w.pth', strict=False)


def test_restoration_library_and_training_name_the_mismatched_keys(tmp_path):
    """Both load paths (uniremoval-restore / evaluate, and a model's pretrain_network_g) give this listing."""
    from uniremoval.restoration import SetupError, load_network
    from uniremoval.utils.checkpoint import atomic_torch_save
    path = str(tmp_path / 'wide.pth')
    atomic_torch_save({'params': build_network(dict(TINY, n_feat=12)).state_dict()}, path)
    with pytest.raises(SetupError, match=r'does not fit MPRNet: .*key\(s\) of another shape'):
        load_network(path, dict(TINY), param_key='params')
