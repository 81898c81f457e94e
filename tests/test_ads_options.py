"""Every option file under options/ads loads with the project's safe loader, passes its checks and builds the
network it names; paper-scale backbones have the slides' sizes and mask overheads."""
import glob
import json
from os import path as osp

import pytest
import torch

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.archs import build_network
from uniremoval.ads.compare_workflow import COMPARE_DEFAULTS
from uniremoval.ads.select_workflow import SELECT_DEFAULTS
from uniremoval.ads.selection import METHODS, encoder_only_scores, parameter_overhead, random_scores, select_top_q
from uniremoval.options import load_option_file, parse_options
from conftest import DEMO_CONFIGS, REPO

ADS_OPTIONS = sorted(glob.glob(osp.join(REPO, 'options', 'ads', '**', '*.yml'), recursive=True)
                     + glob.glob(osp.join(DEMO_CONFIGS, 'ads', '*.yml')))
KINDS = ['rain', 'blur', 'noise']
# exact parameter counts of the paper-scale UMs (issue [8]; the slides' 17.1M and 28.7M)
PAPER_PARAMS = {'NAFNet': 17_111_907, 'MSBDNRDFF': 28_712_861}
_BUILT = {}


def build_cached(network_opt):
    """Build ``network_opt`` once per distinct configuration (paper-scale networks take a second each)."""
    key = json.dumps(network_opt, sort_keys=True)
    if key not in _BUILT:
        opt = dict(network_opt)
        if opt.get('type') == 'ADSNet' and isinstance(opt.get('masks'), str) and not osp.isfile(opt['masks']):
            opt['masks'] = None  # written by uniremoval-ads-select; a checkpoint brings its own masks anyway
        _BUILT[key] = build_network(opt)
    return _BUILT[key]


def rel(path):
    return osp.relpath(path, REPO)


def test_options_exist_for_every_step_at_both_scales():
    names = {rel(p) for p in ADS_OPTIONS}
    steps = ['um', 'finetune_rain', 'finetune_blur', 'finetune_noise', 'select', 'classifier', 'ads', 'compare']
    for folder in ('uniremoval/demo/configs/ads', 'options/ads/paper/nafnet', 'options/ads/paper/msbdn'):
        assert {f'{folder}/{s}.yml' for s in steps} <= names, folder


@pytest.mark.parametrize('path', ADS_OPTIONS, ids=rel)
def test_option_file_loads_and_builds(path, tmp_path):
    opt = load_option_file(path)
    if 'model_type' in opt:  # a training option file: the project's checker (paths are checked at run time)
        parsed, _ = parse_options(['-opt', path], root_path=str(tmp_path), is_train=True, check_paths=False)
        net = build_cached(parsed['network_g'])
        if opt['model_type'] == 'DegradationClassifierModel':
            assert net(torch.rand(2, 3, 40, 40)).shape == (2, 3)
            assert [s['name'] for s in opt['datasets']['train']['sources']] == KINDS
        elif opt['model_type'] == 'ADSModel':
            g = opt['network_g']
            assert g['degradations'] == KINDS == [s['name'] for s in opt['datasets']['train']['sources']]
            assert g['classifier']['num_degradations'] == g['num_degradations'] == 3
            assert opt['train'].get('condition', 'true_type') in ('true_type', 'classifier')
            assert net.um_parameter_count() == sum(p.numel() for p in build_cached(g['backbone']).parameters())
        else:
            assert opt['model_type'] == 'MPRNetModel'
            sources = [s['name'] for s in opt['datasets']['train']['sources']]
            name = osp.splitext(osp.basename(path))[0]
            assert sources == (KINDS if name == 'um' else [name.split('_', 1)[1]])
        backbone = opt['network_g'].get('backbone', opt['network_g'])
        if 'paper' in path and backbone['type'] in PAPER_PARAMS:
            assert sum(p.numel() for p in build_cached(backbone).parameters()) == PAPER_PARAMS[backbone['type']]
    elif 'select' in opt:  # uniremoval-ads-select
        assert set(opt['select']) <= set(SELECT_DEFAULTS) and opt['select']['method'] in METHODS
        assert sorted(opt['path']['pretrain_network_targets']) == sorted(KINDS)
        assert [s['name'] for s in opt['datasets']['select']['sources']] == KINDS
        net = build_cached(opt['network_g'])
        scores = encoder_only_scores(net, opt['select']['encoder_prefixes'], 0)  # prefixes name real layers
        zero = [name for name, s in scores.items() if not torch.count_nonzero(s)]
        assert 0 < len(zero) < len(scores)  # encoder layers scored, the decoder not
    else:  # uniremoval-ads-compare
        assert set(opt['compare']) <= set(COMPARE_DEFAULTS)
        for key in ('select_opt', 'ads_opt'):
            assert osp.isfile(osp.join(REPO, opt[key])), opt[key]
        assert sorted(opt['compare']['methods']) == sorted(METHODS) and len(opt['compare']['seeds']) >= 3


@pytest.mark.parametrize('folder', ['nafnet', 'msbdn'])
def test_paper_mask_overhead_matches_the_slides(folder):
    """Top 1/3/5% filters per layer for three degradations: x1.03 / x1.09 / x1.15 (slides, MSBDN)."""
    opt = load_option_file(osp.join(REPO, 'options', 'ads', 'paper', folder, 'um.yml'))
    net = build_cached(opt['network_g'])
    for q, slides in ((1, 1.03), (3, 1.09), (5, 1.15)):
        masks = {k: select_top_q(random_scores(net, i), q) for i, k in enumerate(KINDS)}
        assert parameter_overhead(net, masks) == pytest.approx(slides, abs=0.0075)
