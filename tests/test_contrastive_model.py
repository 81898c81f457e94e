"""ContrastiveRestorationModel: contrastive regularisation for any registered arch from YAML alone."""
import pytest
import torch

from basicsr.models import build_model


def _opt(tmp_path, contrastive=True, network=None):
    opt = {
        'name': 'contrastive_unit', 'model_type': 'ContrastiveRestorationModel', 'num_gpu': 0, 'is_train': True,
        'dist': False, 'rank': 0, 'world_size': 1, 'scale': 1,
        'network_g': network or {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                                 'num_conv': 2, 'upscale': 1},
        'path': {'models': str(tmp_path), 'training_states': str(tmp_path)},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    }
    if contrastive:
        opt['train']['contrastive_opt'] = {'type': 'ContrastiveLoss', 'loss_weight': 0.5, 'temperature': 0.1}
    return opt


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(3, 3, 16, 16, generator=g), 'gt': torch.rand(3, 3, 16, 16, generator=g)}


def test_contrastive_term_is_eq2_with_gt_positive_and_batch_inputs_as_negatives(tmp_path):
    torch.manual_seed(0)
    model = build_model(_opt(tmp_path))
    batch = _batch()
    model.feed_data(batch)
    with torch.no_grad():
        out = model.net_g(batch['lq'])
    model.optimize_parameters(1)
    # Eq. 2 by hand: cosine similarities of flattened vectors, temperature 0.1, all lq as negatives
    unit = lambda x: torch.nn.functional.normalize(x.flatten(1), dim=1)  # noqa: E731
    a, p, n = unit(out), unit(batch['gt']), unit(batch['lq'])
    logits = torch.cat([(a * p).sum(1, keepdim=True), a @ n.t()], dim=1) / 0.1
    expected = 0.5 * (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    assert model.log_dict['l_contrast'] == pytest.approx(expected.item(), rel=1e-5)
    assert model.log_dict['l_pix'] == pytest.approx((out - batch['gt']).abs().mean().item(), rel=1e-5)


def test_without_contrastive_opt_it_is_srmodel(tmp_path):
    model = build_model(_opt(tmp_path, contrastive=False))
    model.feed_data(_batch())
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_pix'}


def test_multi_output_networks_use_their_first_output(tmp_path):
    net = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 1}
    model = build_model(_opt(tmp_path, network=net))
    model.feed_data(_batch())
    model.optimize_parameters(1)
    model.test()
    assert isinstance(model.output, torch.Tensor) and model.output.shape == (3, 3, 16, 16)


def test_size_changing_networks_get_a_clear_error(tmp_path):
    net = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    model = build_model(_opt(tmp_path, network=net))
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
    with pytest.raises(ValueError, match='scale 1'):
        model.optimize_parameters(1)
