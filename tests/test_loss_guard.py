"""A loss that becomes NaN or inf stops training with a message naming the iteration and the term,
before the optimiser step, so no NaN weights reach a checkpoint (every model calls
``check_finite_losses`` in ``optimize_parameters``)."""
import math
import os
from os import path as osp

import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.commands.basicsr_cli import main as cli_main
from uniremoval.models.model_mixins import NonFiniteLossError, check_finite_losses
from uniremoval.options import parse_options
from conftest import DEMO_CONFIGS, TINY_TEACHER_OPT, tiny_teacher_options


def test_check_finite_losses_names_iteration_and_terms():
    check_finite_losses({'l_pix': torch.tensor(0.5), 'l_edge': 0.1}, 3)  # finite: nothing happens
    opt = {'train': {'optim_g': {'lr': 1e10}}, 'path': {'models': '/x/models'}}
    with pytest.raises(NonFiniteLossError) as info:
        check_finite_losses({'l_pix': torch.tensor(0.5), 'l_edge': torch.tensor(float('nan')),
                             'l_cl': torch.tensor([1.0, float('inf')])}, 7, opt)
    msg = str(info.value)
    assert msg.startswith('Training stopped at iteration 7: loss term l_edge = nan, l_cl = inf is not finite')
    assert 'l_pix' not in msg and 'train:optim_g:lr = 10000000000.0' in msg and '/x/models' in msg


def _nan_batch(batch):
    batch = dict(batch)
    batch['lq'] = batch['lq'].clone()
    batch['lq'][0, 0, 0, 0] = float('nan')
    return batch


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _assert_unchanged(before, net):
    assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))


def _batch(n=2, size=16, labels=None, clear=False):
    g = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(n, 3, size, size, generator=g), 'gt': torch.rand(n, 3, size, size, generator=g)}
    if labels is not None:
        batch['label'] = torch.tensor(labels)
    if clear:
        batch['clear'] = torch.rand(n, 3, size, size, generator=g)
        del batch['gt']
    return batch


def _stops_without_step(model, batch, nets, term, current_iter=5):
    model.feed_data(batch)
    model.optimize_parameters(current_iter - 1)  # a finite step works
    before = [_params(n) for n in nets]
    model.feed_data(_nan_batch(batch))
    with pytest.raises(NonFiniteLossError, match=f'iteration {current_iter}: loss term {term} = nan'):
        model.optimize_parameters(current_iter)
    for b, net in zip(before, nets):
        _assert_unchanged(b, net)


def test_teacher_model(tmp_path):
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), check_paths=False)
    model = build_model(opt)
    _stops_without_step(model, _batch(), [model.net_g], 'l_pix')


def test_message_names_the_scheduled_learning_rate_not_the_configured_one(tmp_path):
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), check_paths=False)
    model = build_model(opt)
    for group in model.optimizers[0].param_groups:
        group['lr'] = 1.25e-5  # where a schedule has taken it; the option file says 2e-4
    model.feed_data(_nan_batch(_batch()))
    with pytest.raises(NonFiniteLossError) as info:
        model.optimize_parameters(7)
    assert 'scheduled at this iteration 1.25e-05 (configured: train:optim_g:lr = 0.0002)' in str(info.value)


def test_contrastive_model(tmp_path):
    opt = {'name': 'guard', 'model_type': 'ContrastiveRestorationModel', 'num_gpu': 0, 'is_train': True,
           'dist': False, 'rank': 0, 'world_size': 1, 'scale': 1,
           'network_g': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                         'num_conv': 2, 'upscale': 1},
           'path': {'models': str(tmp_path), 'training_states': str(tmp_path)},
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                     'contrastive_opt': {'type': 'ContrastiveLoss', 'loss_weight': 0.5, 'temperature': 0.1}}}
    model = build_model(opt)
    _stops_without_step(model, _batch(3), [model.net_g], 'l_pix')


def test_kt_model(tmp_path):
    opt, _ = parse_options(['-opt', osp.join(DEMO_CONFIGS, 'kt_tiny.yml')], root_path=str(tmp_path),
                           check_paths=False)
    for i, teacher in enumerate(opt['teachers']):
        teacher['pretrain_path'] = str(tmp_path / f'teacher_{i}.pth')
        torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, teacher['pretrain_path'])
    opt['train']['iters_per_epoch'] = 5
    model = build_model(opt)
    _stops_without_step(model, _batch(3, labels=[0, 1, 2]), [model.net_g], 'l_pix')


def _da_model(tmp_path):
    """The demo's DA model on a random student checkpoint."""
    opt, _ = parse_options(['-opt', osp.join(DEMO_CONFIGS, 'da_tiny.yml')], root_path=str(tmp_path),
                           check_paths=False)
    ckpt = tmp_path / 'student.pth'
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, ckpt)
    opt['path']['pretrain_network_g'] = str(ckpt)
    opt['train']['iters_per_epoch'] = 4
    return build_model(opt)


def test_da_model(tmp_path):
    model = _da_model(tmp_path)
    batch = _batch(3, labels=[0, 1, 2], clear=True)
    _stops_without_step(model, batch, [model.net_g, model.net_d], 'l_g_gan', current_iter=100)
    # before net_d_init_iters only the discriminator trains: its terms are guarded too
    model.net_d_init_iters = 1000
    model.feed_data(_nan_batch(batch))
    with pytest.raises(NonFiniteLossError, match='iteration 100: loss term l_d_fake = nan'):
        model.optimize_parameters(100)


def test_training_with_a_huge_lr_stops_and_keeps_only_finite_checkpoints(tmp_path, paired_folders, monkeypatch,
                                                                         capsys):
    # the reproduction: basicsr train ... --force_yml train:optim_g:lr=1e10
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'nan_lr')
    monkeypatch.chdir(tmp_path)
    rc = cli_main(['train', '-opt', opt_path, '--force_yml', 'train:optim_g:lr=1e10', 'logger:save_checkpoint_freq=1',
                   'val:val_freq=1'])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert 'basicsr train: error: Training stopped at iteration ' in err and 'loss term l_pix = ' in err
    stopped_at = int(err.split('Training stopped at iteration ')[1].split(':')[0])
    assert stopped_at >= 2
    models = tmp_path / 'experiments' / 'nan_lr' / 'models'
    saved = sorted(os.listdir(models))
    assert saved == [f'net_g_{i}.pth' for i in range(1, stopped_at)]  # no 'latest', nothing after the NaN
    for name in saved:
        params = torch.load(models / name, weights_only=True)['params']
        assert all(torch.isfinite(v).all() for v in params.values()), name
    log = ''.join(open(osp.join(tmp_path, 'experiments', 'nan_lr', f)).read()
                  for f in os.listdir(tmp_path / 'experiments' / 'nan_lr') if f.endswith('.log'))
    best = [line for line in log.splitlines() if 'Best:' in line]
    assert all(not math.isnan(float(line.split('Best:')[1].split()[0])) for line in best)


def test_da_messages_name_each_optimiser_s_scheduled_rate(tmp_path):
    """The DA model's own guards (generator and discriminator steps) name the rates in use, as the others do."""
    model = _da_model(tmp_path)
    for group in model.optimizer_g.param_groups:
        group['lr'] = 1.25e-5
    for group in model.optimizer_d.param_groups:
        group['lr'] = 3.5e-6
    batch = _nan_batch(_batch(3, labels=[0, 1, 2], clear=True))
    model.feed_data(batch)
    with pytest.raises(NonFiniteLossError, match='scheduled at this iteration 1.25e-05 '):
        model.optimize_parameters(100)
    model.net_d_init_iters = 1000  # only the discriminator trains
    model.feed_data(batch)
    with pytest.raises(NonFiniteLossError, match='scheduled at this iteration 3.5e-06 '):
        model.optimize_parameters(100)
