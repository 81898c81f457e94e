"""Knowledge-transfer model (Uni-Removal §III-B): teacher routing, frozen teachers, MGCL terms, decay."""
from os import path as osp

import pytest
import torch

from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.models.uniremoval_model import decayed_weight
from uniremoval.options import parse_options
from conftest import DEMO_CONFIGS

KT_TINY = osp.join(DEMO_CONFIGS, 'kt_tiny.yml')


def _save_teacher(opt, path, seed):
    torch.manual_seed(seed)
    net = build_network(dict(opt['network_g']))
    torch.save({'params': net.state_dict()}, path)
    return net


def _kt_options(tmp_path, iters_per_epoch):
    """The tiny KT options with three randomly initialised teachers saved under ``tmp_path``."""
    opt, _ = parse_options(['-opt', KT_TINY], root_path=str(tmp_path), is_train=True, check_paths=False)
    for i, teacher in enumerate(opt['teachers']):
        teacher['pretrain_path'] = str(tmp_path / f'teacher_{i}.pth')
        _save_teacher(opt, teacher['pretrain_path'], seed=100 + i)
    opt['train']['iters_per_epoch'] = iters_per_epoch
    return opt


@pytest.fixture
def kt_model(tmp_path):
    opt = _kt_options(tmp_path, iters_per_epoch=5)
    torch.manual_seed(0)
    return build_model(opt)


def _batch(labels, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(len(labels), 3, size, size, generator=g),
            'gt': torch.rand(len(labels), 3, size, size, generator=g),
            'label': torch.tensor(labels)}


def test_teachers_frozen_and_routed_by_label(kt_model):
    assert len(kt_model.net_teachers) == 3 and kt_model.teacher_names == ['haze', 'rain', 'blur']
    for t in kt_model.net_teachers:
        assert not t.training and all(not p.requires_grad for p in t.parameters())
    batch = _batch([2, 0, 1, 0, 2, 1])
    restored, feats = kt_model.teacher_targets(batch['lq'], batch['label'])
    for i, label in enumerate(batch['label'].tolist()):
        with torch.no_grad():
            outs, f = kt_model.net_teachers[label](batch['lq'][i:i + 1], return_feats=True)
        assert torch.allclose(restored[i:i + 1], outs[0], atol=1e-6)
        assert torch.allclose(feats[0][i:i + 1], f[0], atol=1e-6)
    assert not restored.requires_grad
    with pytest.raises(ValueError, match='out of range'):
        kt_model.teacher_targets(batch['lq'], torch.tensor([0, 1, 2, 3, 0, 0]))


def test_teachers_unchanged_after_kt_steps(kt_model):
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in kt_model.net_teachers]
    student_before = [p.detach().clone() for p in kt_model.net_g.parameters()]
    for it in range(1, 4):
        kt_model.feed_data(_batch([0, 1, 2, 0, 1, 2], seed=it))
        kt_model.optimize_parameters(it)
    for t, sd in zip(kt_model.net_teachers, before):
        assert all(torch.equal(v, sd[k]) for k, v in t.state_dict().items())
        assert all(p.grad is None for p in t.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(student_before, kt_model.net_g.parameters()))
    for key in ('l_pix', 'l_cl_img', 'l_cl_feat', 'w_cl_feat', 'l_total'):
        assert key in kt_model.log_dict and torch.isfinite(torch.tensor(kt_model.log_dict[key]))


def test_feature_negatives_are_other_types_only(kt_model, monkeypatch):
    seen = {}
    original = kt_model.cri_feature_cl.forward

    def spy(anchor, positive, negatives, neg_mask=None):
        seen['mask'], seen['neg_shape'] = neg_mask.clone(), negatives.shape
        return original(anchor, positive, negatives, neg_mask=neg_mask)

    monkeypatch.setattr(kt_model.cri_feature_cl, 'forward', spy)
    kt_model.feed_data(_batch([0, 0, 1, 2]))
    kt_model.optimize_parameters(1)
    expected = torch.tensor([[False, False, True, True], [False, False, True, True],
                             [True, True, False, True], [True, True, True, False]])
    assert torch.equal(seen['mask'], expected)
    assert seen['neg_shape'][:2] == (4, 4)


def test_feature_weight_decays_per_epoch(kt_model):
    assert decayed_weight(0.1, 0.99, 0) == pytest.approx(0.1)
    assert decayed_weight(0.1, 0.99, 3) == pytest.approx(0.1 * 0.99**3)
    # iters_per_epoch = 5: iterations 1-5 are epoch 0, 6-10 epoch 1, 26 is epoch 5
    assert [kt_model.epoch_of(i) for i in (1, 5, 6, 10, 11, 26)] == [0, 0, 1, 1, 2, 5]
    base = kt_model.cri_feature_cl.loss_weight  # lambda_f of uniremoval/demo/configs/kt_tiny.yml
    for it, epoch in ((1, 0), (26, 5)):
        kt_model.feed_data(_batch([0, 1, 2, 0]))
        kt_model.optimize_parameters(it)
        assert kt_model.log_dict['w_cl_feat'] == pytest.approx(base * 0.99**epoch, rel=1e-6)


def _run_fixed_batch(model, iters=40):
    batch = _batch([0, 1, 2, 0, 1, 2], seed=3)
    logs = []
    for it in range(1, iters + 1):
        model.feed_data(batch)
        model.optimize_parameters(it)
        logs.append(dict(model.log_dict))
    return logs


def _mean(logs, key):
    return sum(log[key] for log in logs) / len(logs)


def test_distillation_loss_falls_at_conventional_temperature(kt_model):
    for cri in (kt_model.cri_image_cl, kt_model.cri_feature_cl):
        cri.temperature = 0.1
    logs = _run_fixed_batch(kt_model)
    assert _mean(logs[-5:], 'l_pix') < 0.93 * _mean(logs[:5], 'l_pix')
    assert _mean(logs[-5:], 'l_cl_feat') < 0.5 * _mean(logs[:5], 'l_cl_feat')


def test_kt_objective_falls_at_paper_temperature(kt_model):
    """At t = 1e-6 the contrastive terms are ~1e4 and dominate the objective (see the KT note): the
    total must still fall steadily, the L1-to-teacher term need not."""
    for cri in (kt_model.cri_image_cl, kt_model.cri_feature_cl):
        cri.temperature = 1e-6
    logs = _run_fixed_batch(kt_model)
    assert _mean(logs[-5:], 'l_total') < 0.2 * _mean(logs[:5], 'l_total')
    assert all(torch.isfinite(torch.tensor(log['l_total'])) for log in logs)


def test_teacher_order_must_match_the_dataset_sources(kt_model):
    batch = _batch([0, 1, 2])
    batch['degradation'] = ['haze', 'rain', 'blur']
    kt_model.feed_data(batch)
    kt_model.optimize_parameters(1)  # consistent: fine
    batch['degradation'] = ['haze', 'blur', 'rain']
    kt_model.feed_data(batch)
    with pytest.raises(ValueError, match=r"type 'blur' has label 1, but teachers\[1\] is 'rain'"):
        kt_model.optimize_parameters(2)


def test_pixel_loss_on_all_stages_sums_the_stage_losses(kt_model):
    batch = _batch([0, 1, 2])
    kt_model.feed_data(batch)
    with torch.no_grad():
        stages, _ = kt_model.restore_stages_with_feats(kt_model.net_g, batch['lq'])
        target, _ = kt_model.teacher_targets(batch['lq'], batch['label'])
        assert len(stages) == 3
        kt_model.supervised_stages = 'all'
        got = kt_model.compute_losses(1)[1]['l_pix']
        kt_model.supervised_stages = 'final'
        final = kt_model.compute_losses(1)[1]['l_pix']
    assert got.item() == pytest.approx(sum(kt_model.cri_pix(s, target) for s in stages).item(), rel=1e-6)
    assert final.item() == pytest.approx(kt_model.cri_pix(stages[0], target).item(), rel=1e-6)
    assert got.item() > final.item()


def test_epoch_exponential_learning_rate(tmp_path):
    opt = _kt_options(tmp_path, iters_per_epoch=2)
    opt['train']['scheduler'] = {'type': 'EpochExponentialLR', 'gamma': 0.99}
    model = build_model(opt)
    lr0 = opt['train']['optim_g']['lr']
    for it in range(1, 7):  # BasicSR sets the rate at the start of each iteration: 1..6 are epochs 0, 0, 1, 1, 2, 2
        model.update_learning_rate(it, warmup_iter=-1)
    assert model.get_current_learning_rate()[0] == pytest.approx(lr0 * 0.99**2, rel=1e-12)
    model.update_learning_rate(7, warmup_iter=-1)  # after 3 whole epochs: lr0 * 0.99^3
    assert model.get_current_learning_rate()[0] == pytest.approx(lr0 * 0.99**3, rel=1e-12)
