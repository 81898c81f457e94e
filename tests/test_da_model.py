"""Domain-adaptation model (Uni-Removal §III-C): G/D steps, identity loss, extended contrastive terms."""
from os import path as osp

import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.options import load_option_file, parse_options
from conftest import DEMO_CONFIGS, REPO

DA_TINY = osp.join(DEMO_CONFIGS, 'da_tiny.yml')


def _untrained_options(tmp_path):
    """da_tiny.yml parsed for training, with a random student (no checkpoint) and 4 iterations per epoch."""
    opt, _ = parse_options(['-opt', DA_TINY], root_path=str(tmp_path), is_train=True, check_paths=False)
    opt['train']['iters_per_epoch'] = 4
    opt['path']['pretrain_network_g'] = None
    return opt


@pytest.fixture
def da_model(tmp_path):
    opt = _untrained_options(tmp_path)
    torch.manual_seed(7)
    ckpt = tmp_path / 'kt_student.pth'
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, ckpt)
    opt['path']['pretrain_network_g'] = str(ckpt)
    torch.manual_seed(0)
    return build_model(opt)


def _batch(labels, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    return {'lq': torch.rand(n, 3, size, size, generator=g), 'clear': torch.rand(n, 3, size, size, generator=g),
            'label': torch.tensor(labels)}


def _params(net):
    return [p.detach().clone() for p in net.parameters()]


def _changed(before, net):
    return [not torch.equal(b, p) for b, p in zip(before, net.parameters())]


def test_student_starts_from_the_kt_checkpoint(da_model, tmp_path):
    saved = torch.load(tmp_path / 'kt_student.pth', weights_only=True)['params']
    assert all(torch.equal(v, da_model.net_g.state_dict()[k]) for k, v in saved.items())


def test_generator_step_changes_only_the_student(da_model):
    da_model.feed_data(_batch([0, 1, 2, 0]))
    g0, d0 = _params(da_model.net_g), _params(da_model.net_d)
    logs = da_model.generator_step(1)
    assert any(_changed(g0, da_model.net_g)) and not any(_changed(d0, da_model.net_d))
    for key in ('l_g_gan', 'l_idt', 'l_excl_img', 'l_excl_feat', 'w_excl_feat', 'l_g_total'):
        assert torch.isfinite(torch.as_tensor(logs[key])), key


def test_discriminator_step_changes_only_the_discriminator(da_model):
    da_model.feed_data(_batch([0, 1, 2, 0]))
    g0, d0 = _params(da_model.net_g), _params(da_model.net_d)
    logs = da_model.discriminator_step()
    assert all(not c for c in _changed(g0, da_model.net_g)) and any(_changed(d0, da_model.net_d))
    assert torch.isfinite(logs['l_d_real']) and torch.isfinite(logs['l_d_fake'])


def test_optimize_parameters_alternates_and_logs_every_term(da_model):
    da_model.feed_data(_batch([0, 1, 2, 1]))
    da_model.optimize_parameters(1)
    assert {'l_g_gan', 'l_idt', 'l_excl_img', 'l_excl_feat', 'l_g_total', 'l_d_real', 'l_d_fake'} <= set(
        da_model.log_dict)
    da_model.net_d_init_iters = 5  # before net_d_init_iters only the discriminator learns
    g0 = _params(da_model.net_g)
    da_model.optimize_parameters(2)
    assert not any(_changed(g0, da_model.net_g)) and 'l_g_gan' not in da_model.log_dict


def test_identity_loss_is_zero_for_an_identity_network(da_model):
    with torch.no_grad():  # MPRNet with all weights zero returns its input exactly (residual output)
        for p in da_model.net_g.parameters():
            p.zero_()
    batch = _batch([0, 1, 2])
    da_model.feed_data(batch)
    _, terms = da_model.generator_losses(1)
    assert terms['l_idt'].item() == 0.0
    assert torch.equal(da_model.output, batch['lq'])


def _spy_contrastive_calls(da_model, monkeypatch):
    seen = {}
    for name in ('cri_image_cl', 'cri_feature_cl'):
        cri = getattr(da_model, name)
        original = cri.forward

        def spy(anchor, positives, negatives, pos_mask=None, neg_mask=None, _name=name, _orig=original):
            seen[_name] = dict(pos=positives, neg=negatives, mask=neg_mask)
            return _orig(anchor, positives, negatives, pos_mask=pos_mask, neg_mask=neg_mask)

        monkeypatch.setattr(cri, 'forward', spy)
    return seen


OTHER_TYPE_MASK = torch.tensor([[False, False, True], [False, False, True], [True, True, False]])  # labels 0, 0, 1


@pytest.mark.parametrize('negatives', ['all', 'other_types'])
def test_extended_contrastive_terms_use_clear_positives_and_the_chosen_negatives(da_model, monkeypatch, negatives):
    """Eq. 11 (image): negatives are the batch's degraded inputs, all of them by default (the paper's "a batch of
    real-world degraded images"), the anchor's own input included; 'other_types' masks same-type inputs.
    Eq. 10 (feature): negatives are always degraded features of other types."""
    da_model.image_cl_negatives = negatives
    seen = _spy_contrastive_calls(da_model, monkeypatch)
    batch = _batch([0, 0, 1])
    da_model.feed_data(batch)
    da_model.generator_losses(1)
    img = seen['cri_image_cl']
    assert img['pos'].shape[:2] == (3, 3) and not img['pos'].requires_grad  # restored clear images, detached
    for i in range(3):  # every anchor sees the whole batch of degraded inputs, its own among them
        assert torch.equal(img['neg'][i], batch['lq'])
    if negatives == 'all':
        assert img['mask'] is None
    else:
        assert torch.equal(img['mask'], OTHER_TYPE_MASK) and not img['mask'].diagonal().any()
    feat = seen['cri_feature_cl']
    assert feat['pos'].shape[:2] == (3, 3) and not feat['pos'].requires_grad
    assert feat['neg'].requires_grad and torch.equal(feat['mask'], OTHER_TYPE_MASK)


def test_image_negatives_option_changes_the_loss_value(da_model):
    batch = _batch([0, 0, 1])
    da_model.feed_data(batch)
    with torch.no_grad():
        losses = {}
        for negatives in ('all', 'other_types'):
            da_model.image_cl_negatives = negatives
            losses[negatives] = da_model.generator_losses(1)[1]['l_excl_img'].item()
    # more negatives in the denominator: the loss can only grow
    assert losses['all'] > losses['other_types']


def test_default_options_follow_the_paper(tmp_path):
    """Without the keys, and in the paper config: EICL negatives from the whole batch (Eq. 11), the identity
    loss on the restored image only (the demo config supervises all stages, uniremoval/demo/configs/da_tiny.yml)."""
    paper = load_option_file(osp.join(REPO, 'options', 'da.yml'))['train']
    assert (paper['image_cl_negatives'], paper['supervised_stages']) == ('all', 'final')
    opt = _untrained_options(tmp_path)
    assert opt['train'].pop('supervised_stages') == 'all'
    del opt['train']['image_cl_negatives']
    model = build_model(opt)
    assert (model.image_cl_negatives, model.supervised_stages) == ('all', 'final')


def test_identity_on_all_stages_sums_the_stage_losses(da_model):
    batch = _batch([0, 1, 2])
    da_model.feed_data(batch)
    with torch.no_grad():
        stages, _ = da_model.restore_stages_with_feats(da_model.net_g, batch['clear'])
        assert len(stages) == 3
        expected = sum(da_model.cri_identity(s, batch['clear']) for s in stages)
        da_model.supervised_stages = 'all'
        got = da_model.generator_losses(1)[1]['l_idt']
        da_model.supervised_stages = 'final'
        final = da_model.generator_losses(1)[1]['l_idt']
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert final.item() == pytest.approx(da_model.cri_identity(stages[0], batch['clear']).item(), rel=1e-6)


def test_bad_choice_option_names_the_key(tmp_path):
    opt = _untrained_options(tmp_path)
    opt['train']['image_cl_negatives'] = 'same_type'
    with pytest.raises(ValueError, match='image_cl_negatives'):
        build_model(opt)


def test_missing_adversarial_loss_names_the_key(tmp_path):
    opt = _untrained_options(tmp_path)
    del opt['train']['gan_opt']
    with pytest.raises(ValueError, match='train:gan_opt'):
        build_model(opt)


def test_feature_weight_decays_per_epoch(da_model):
    da_model.feed_data(_batch([0, 1, 2]))
    assert da_model.generator_step(1)['w_excl_feat'].item() == pytest.approx(0.1)
    assert da_model.generator_step(9)['w_excl_feat'].item() == pytest.approx(0.1 * 0.99**2)  # epoch 2 of 4 iters


def test_tiny_da_run_writes_checkpoints_resumes_and_scores_per_type(tmp_path):
    """basicsr train on UnpairedDegradationDataset: checkpoints of G and D, auto-resume, per-type metrics
    (PSNR/SSIM only where ground truth exists, PIQE/BRISQUE everywhere)."""
    import os

    import yaml

    from uniremoval.options import load_option_file
    from conftest import run_cli, write_pairs
    opt = load_option_file(DA_TINY)
    sources_train, sources_val = [], []
    for i, kind in enumerate(('haze', 'rain')):
        gt_dir, lq_dir = write_pairs(str(tmp_path / "real" / kind), 3, seed=10 + i, size=64)
        sources_train.append({'name': kind, 'dataroot_lq': lq_dir})
        sources_val.append({'name': kind, 'dataroot_lq': lq_dir, **({'dataroot_gt': gt_dir} if kind == 'rain' else {})})
    clear_dir, _ = write_pairs(str(tmp_path / "clear"), 4, seed=20, size=64)
    torch.manual_seed(3)
    kt = tmp_path / 'kt.pth'
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, kt)
    opt['datasets']['train'].update(sources=sources_train, dataroot_clear=clear_dir, batch_size_per_gpu=4)
    opt['datasets']['val'].update(sources=sources_val)
    opt['path']['pretrain_network_g'] = str(kt)
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger']['save_checkpoint_freq'] = 2
    opt_path = tmp_path / 'da.yml'
    opt_path.write_text(yaml.safe_dump(opt, sort_keys=False))

    first = run_cli(['train', '-opt', str(opt_path)], cwd=tmp_path)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    models = tmp_path / 'experiments' / 'demo_da_tiny' / 'models'
    assert {'net_g_2.pth', 'net_d_2.pth', 'net_g_latest.pth', 'net_d_latest.pth'} <= set(os.listdir(models))
    assert '[haze] piqe:' in out and '[rain] psnr:' in out and '[haze] psnr' not in out
    assert 'brisque:' in out

    second = run_cli(['train', '-opt', str(opt_path), '--auto_resume', '--force_yml', 'train:total_iter=4',
                      'val:val_freq=4', 'logger:save_checkpoint_freq=4'], cwd=tmp_path)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert 'iter: 2.' in out and 'Set pretrain_network_d to' in out
    state = torch.load(tmp_path / 'experiments' / 'demo_da_tiny' / 'training_states' / '4.state', weights_only=True)
    assert state['iter'] == 4 and len(state['optimizers']) == 2
    assert {int(s['step']) for s in state['optimizers'][1]['state'].values()} == {4}  # D: 2 restored + 2 new steps
