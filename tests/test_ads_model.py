"""ADSModel (ADS step 4): only the degradation-specific weights train, checkpoints hold everything and load
into a fresh ADSNet, and uniremoval-restore / uniremoval.evaluate accept ADS checkpoints."""
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.ads.selection import random_scores, save_masks, select_top_q
from uniremoval.data import degradations as D
from uniremoval.options import parse_options
from uniremoval.restoration import load_network, read_image, restore_image

KINDS = ('rain', 'blur', 'noise')
BACKBONE = {'type': 'NAFNet', 'img_channel': 3, 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1],
            'dec_blk_nums': [1]}
CLASSIFIER = {'type': 'DegradationClassifier', 'num_in_ch': 3, 'num_degradations': 3, 'num_feat': 8, 'num_blocks': 1}


# --------------------------------------------------------------------------- tiny Rain-Blur-Noise data
def write_rbn(root, n, seed, size=32):
    """``root/<kind>/{gt,lq}/NNNN.png`` for rain, blur and noise (degradations.degrade on smooth images)."""
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        for sub in ('gt', 'lq'):
            os.makedirs(osp.join(root, kind, sub), exist_ok=True)
        for i in range(n):
            low = rng.uniform(0, 1, size=(4, 4, 3)).astype(np.float32)
            gt = np.clip(cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
            lq = D.degrade(gt, kind, rng)
            cv2.imwrite(osp.join(root, kind, 'gt', f'{i:04d}.png'), np.round(gt * 255).astype(np.uint8))
            cv2.imwrite(osp.join(root, kind, 'lq', f'{i:04d}.png'), np.round(np.clip(lq, 0, 1) * 255).astype(np.uint8))
    return root


def rbn_dataset(root, name, phase='train', gt_size=24, batch=6):
    opt = {'name': name, 'type': 'MultiDegradationDataset', 'io_backend': {'type': 'disk'},
           'sources': [{'name': k, 'dataroot_gt': osp.join(root, k, 'gt'), 'dataroot_lq': osp.join(root, k, 'lq')}
                       for k in KINDS]}
    if phase == 'train':
        opt.update(balanced=True, gt_size=gt_size, use_hflip=False, use_rot=False, num_worker_per_gpu=0,
                   batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None)
    else:
        opt['balanced'] = False
    return opt


@pytest.fixture(scope='module')
def rbn(tmp_path_factory):
    root = tmp_path_factory.mktemp('rbn')
    return {'train': write_rbn(str(root / 'train'), 3, seed=1), 'val': write_rbn(str(root / 'val'), 2, seed=2)}


# --------------------------------------------------------------------------- UM, targets, classifier, masks
@pytest.fixture(scope='module')
def ads_parts(tmp_path_factory):
    """Checkpoints of a random tiny UM, a 'rain' target (UM + noise), a classifier, and a 30% mask file."""
    root = tmp_path_factory.mktemp('ads_parts')
    torch.manual_seed(0)
    um = build_network(dict(BACKBONE))
    target = build_network(dict(BACKBONE))
    target.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in um.state_dict().items()})
    classifier = build_network(dict(CLASSIFIER))
    files = {}
    for name, net in (('um', um), ('target_rain', target), ('classifier', classifier)):
        files[name] = str(root / f'{name}.pth')
        torch.save({'params': net.state_dict()}, files[name])
    masks = {k: select_top_q(random_scores(um, seed), 30) for seed, k in enumerate(KINDS)}
    files['masks'] = str(root / 'masks.pth')
    save_masks(files['masks'], masks, None, {'q': 30, 'method': 'random'})
    files['mask_dict'] = masks
    return files


def ads_options(tmp_path, rbn, parts, name='ads_test', condition='true_type', targets=True):
    opt = {
        'name': name, 'model_type': 'ADSModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': rbn_dataset(rbn['train'], 'rbn_train'), 'val': rbn_dataset(rbn['val'], 'rbn_val', 'val')},
        'network_g': {'type': 'ADSNet', 'backbone': dict(BACKBONE), 'num_degradations': 3, 'masks': parts['masks'],
                      'classifier': dict(CLASSIFIER), 'degradations': list(KINDS)},
        'path': {'pretrain_network_um': parts['um'], 'pretrain_network_classifier': parts['classifier'],
                 'pretrain_network_targets': {'rain': parts['target_rain']} if targets else None,
                 'strict_load_g': True, 'resume_state': None},
        'train': {'condition': condition, 'optim_g': {'type': 'Adam', 'lr': 1e-2, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': 3,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 3, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
    }
    path = osp.join(str(tmp_path), f'{name}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def build_ads_model(tmp_path, rbn, parts, **kwargs):
    opt, _ = parse_options(['-opt', ads_options(tmp_path, rbn, parts, **kwargs)], root_path=str(tmp_path),
                           is_train=True)
    os.makedirs(opt['path']['models'], exist_ok=True)
    os.makedirs(opt['path']['training_states'], exist_ok=True)
    return build_model(opt)


def batch_of(labels, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(len(labels), 3, size, size, generator=g)
    gt = torch.rand(len(labels), 3, size, size, generator=g)
    return {'lq': lq, 'gt': gt, 'label': torch.tensor(labels), 'degradation': [KINDS[i] for i in labels]}


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- tests
def test_loads_um_classifier_and_target_initialised_specific_weights(tmp_path, rbn, ads_parts):
    model = build_ads_model(tmp_path, rbn, ads_parts)
    net = model.ads_net
    um = torch.load(ads_parts['um'], weights_only=True)['params']
    assert all(torch.equal(net.um_state_dict()[k], um[k]) for k in um)
    cls = torch.load(ads_parts['classifier'], weights_only=True)['params']
    assert all(torch.equal(net.classifier.state_dict()[k], cls[k]) for k in cls)
    target = torch.load(ads_parts['target_rain'], weights_only=True)['params']
    checked = 0
    for layer, conv in net.adaptive_layers().items():
        idx = conv.selected_index(0)
        assert torch.equal(idx, ads_parts['mask_dict']['rain'][layer])
        if idx.numel():  # theta_rain starts at (theta_target - theta_um) on the selected filters
            torch.testing.assert_close(conv.weight_0, (target[f'{layer}.weight'] - um[f'{layer}.weight'])[idx])
            checked += 1
        assert torch.count_nonzero(conv.weight_1) == 0  # no target given for blur: zeros
    assert checked > 5


def test_training_changes_only_the_specific_weights_of_the_batch_types(tmp_path, rbn, ads_parts):
    model = build_ads_model(tmp_path, rbn, ads_parts, targets=False)
    net = model.ads_net
    um_before, cls_before = dict(net.um_state_dict()), snapshot(net.classifier)
    spec = lambda d: torch.cat([c.specific_weight(d).detach().flatten().clone()  # noqa: E731
                                for c in net.adaptive_layers().values()])
    before = [spec(d) for d in range(3)]
    for it in range(2):  # rain only: with condition true_type only theta_rain receives gradient
        model.feed_data(batch_of([0, 0, 0], seed=it))
        model.optimize_parameters(it + 1)
    assert not torch.equal(spec(0), before[0])
    assert torch.equal(spec(1), before[1]) and torch.equal(spec(2), before[2])
    model.feed_data(batch_of([0, 1, 2], seed=5))
    model.optimize_parameters(3)
    assert not torch.equal(spec(1), before[1]) and not torch.equal(spec(2), before[2])
    after = net.um_state_dict()
    assert all(torch.equal(after[k], v) for k, v in um_before.items()), 'UM weights must be bit-identical'
    assert all(torch.equal(net.classifier.state_dict()[k], v) for k, v in cls_before.items())
    assert not net.classifier.training  # frozen classifier stays in eval mode
    assert model.log_dict['l_pix'] > 0


def test_classifier_condition_and_validation_per_type(tmp_path, rbn, ads_parts):
    model = build_ads_model(tmp_path, rbn, ads_parts, condition='classifier')
    seen = []
    handle = model.ads_net.classifier.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model.feed_data(batch_of([0, 1, 2]))
    model.optimize_parameters(1)
    assert seen == [torch.Size([3, 3])]  # c came from the classifier's softmax
    handle.remove()
    from basicsr.data import build_dataloader, build_dataset
    val_opt = dict(rbn_dataset(rbn['val'], 'rbn_val', 'val'), phase='val', scale=1)
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False)
    model.validation(loader, 1, None, False)
    assert sorted(model.metric_results_per_type) == sorted(KINDS)
    per_type = [model.metric_results_per_type[k]['psnr'] for k in KINDS]
    assert model.metric_results['psnr'] == pytest.approx(float(np.mean(per_type)))


def test_rejects_bad_condition_and_missing_um(tmp_path, rbn, ads_parts):
    with pytest.raises(ValueError, match='train:condition'):
        build_ads_model(tmp_path, rbn, ads_parts, condition='oracle')
    parts = dict(ads_parts, um=None)
    with pytest.raises(ValueError, match='pretrain_network_um'):
        build_ads_model(tmp_path, rbn, parts, name='no_um')


def test_checkpoint_round_trip_restore_and_evaluate(tmp_path, rbn, ads_parts):
    model = build_ads_model(tmp_path, rbn, ads_parts)
    model.feed_data(batch_of([0, 1, 2]))
    model.optimize_parameters(1)
    model.save(0, 1)
    ckpt = osp.join(str(tmp_path), 'experiments', 'ads_test', 'models', 'net_g_1.pth')
    state = torch.load(ckpt, weights_only=True)['params']
    assert any(k.endswith('.index_0') for k in state) and any(k.startswith('classifier.') for k in state)

    # a fresh ADSNet built WITHOUT the mask file takes the checkpoint's masks (strict load)
    network_opt = {'type': 'ADSNet', 'backbone': dict(BACKBONE), 'num_degradations': 3, 'masks': None,
                   'classifier': dict(CLASSIFIER), 'degradations': list(KINDS)}
    fresh = load_network(ckpt, network_opt, param_key='params')
    x = torch.rand(2, 3, 20, 28)
    model.net_g.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model.net_g(x))
        assert torch.equal(fresh(x, torch.tensor([1, 2])), model.net_g(x, torch.tensor([1, 2])))

    # uniremoval-restore with the training option file
    from uniremoval.commands.restore import main as restore_main
    opt_file = ads_options(tmp_path, rbn, ads_parts)
    img_path = osp.join(rbn['val'], 'rain', 'lq', '0000.png')
    out_dir = osp.join(str(tmp_path), 'restored')
    assert restore_main(['-i', img_path, '-o', out_dir, '-w', ckpt, '--opt', opt_file, '--param-key', 'params',
                         '--device', 'cpu', '-q']) == 0
    restored = read_image(osp.join(out_dir, '0000.png'))
    np.testing.assert_array_equal(restored, restore_image(fresh, read_image(img_path)))

    # uniremoval.evaluate with an ADS column
    from uniremoval.commands.evaluate import evaluate_pipeline
    eval_opt = {'name': 'eval_ads', 'num_gpu': 0, 'pixel_range': [0, 1], 'network_g': network_opt,
                'checkpoints': [{'name': 'ADS', 'path': ckpt, 'param_key': 'params'}],
                'datasets': {k: {'name': f'val_{k}', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                                 'dataroot_gt': osp.join(rbn['val'], k, 'gt'),
                                 'dataroot_lq': osp.join(rbn['val'], k, 'lq')} for k in KINDS},
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    eval_file = osp.join(str(tmp_path), 'eval_ads.yml')
    with open(eval_file, 'w') as f:
        yaml.safe_dump(eval_opt, f)
    evaluate_pipeline(['-opt', eval_file], root_path=str(tmp_path))
    with open(osp.join(str(tmp_path), 'results', 'eval_ads', 'table.json')) as f:
        table = json.load(f)
    from uniremoval.ads.compare_workflow import load_rows, score_network
    rows = load_rows({k: dict(eval_opt['datasets'][k]) for k in KINDS})
    expected = score_network(fresh, rows, eval_opt['metrics'])
    for row in table['rows']:
        assert row['values']['ADS']['psnr'] == pytest.approx(expected[row['type']]['psnr'], abs=1e-9)


def test_um_and_finetune_train_a_single_output_nafnet_with_mprnet_model(tmp_path):
    """Steps 1-2a reuse MPRNetModel: its loss on a one-tensor output is the plain pixel loss of that output."""
    from conftest import DEMO_CONFIGS
    for name in ('um', 'finetune_rain'):
        path = osp.join(DEMO_CONFIGS, 'ads', f'{name}.yml')
        opt, _ = parse_options(['-opt', path], root_path=str(tmp_path), is_train=True, check_paths=False)
        opt['path']['pretrain_network_g'] = None
        torch.manual_seed(0)
        model = build_model(opt)
        lq, gt = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
        with torch.no_grad():
            expected = (model.net_g(lq) - gt).abs().mean().item()
        before = snapshot(model.net_g)
        model.feed_data({'lq': lq, 'gt': gt})
        model.optimize_parameters(1)
        assert model.log_dict['l_pix'] == pytest.approx(expected, rel=1e-5)
        assert any(not torch.equal(v, model.net_g.state_dict()[k]) for k, v in before.items())


def test_whole_checkpoint_with_other_masks_loads_through_pretrain_network_g(tmp_path, rbn, ads_parts):
    """path:pretrain_network_g (resume, test): the checkpoint's masks replace those of network_g:masks."""
    (tmp_path / 'a').mkdir()
    source = build_ads_model(tmp_path / 'a', rbn, ads_parts)
    source.save(0, 1)
    ckpt = osp.join(str(tmp_path / 'a'), 'experiments', 'ads_test', 'models', 'net_g_1.pth')
    other = dict(ads_parts, masks=None)  # network built without masks: no filter selected
    path = ads_options(tmp_path, rbn, other, name='ads_resume')
    opt, _ = parse_options(['-opt', path], root_path=str(tmp_path), is_train=False)
    opt['path']['pretrain_network_g'] = ckpt
    opt['path']['param_key_g'] = 'params'
    model = build_model(opt)
    x = torch.rand(1, 3, 16, 16)
    source.net_g.eval()
    with torch.no_grad():
        assert torch.equal(model.net_g(x), source.net_g(x))
    assert model.ads_net.masks()['rain']['intro'].tolist() == ads_parts['mask_dict']['rain']['intro'].tolist()


def test_nan_loss_stops_before_the_step(tmp_path, rbn, ads_parts):
    from uniremoval.models.model_mixins import NonFiniteLossError
    model = build_ads_model(tmp_path, rbn, ads_parts, targets=False)
    before = {k: v.clone() for k, v in model.ads_net.state_dict().items()}
    batch = batch_of([0, 1, 2])
    batch['gt'][0, 0, 0, 0] = float('nan')
    model.feed_data(batch)
    with pytest.raises(NonFiniteLossError, match='iteration 7: loss term l_pix = nan'):
        model.optimize_parameters(7)
    assert all(torch.equal(model.ads_net.state_dict()[k], v) for k, v in before.items())
