"""Tests of ADS filter selection, baselines and mask files (uniremoval/ads/selection.py), CPU only."""
import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from uniremoval.ads.selection import (encoder_only_masks, encoder_only_scores, format_mask_summary, load_masks,
                                      mask_summary, maskable_convs, num_selected_filters, parameter_overhead,
                                      random_scores, save_masks, select_top_q, select_within_budget,
                                      selected_weight_count, top_q_weight_budget, weight_difference_scores)
from uniremoval.archs.nafnet_arch import NAFNet
from uniremoval.archs.uniremoval_arch import MPRNet

TINY_NAFNET = dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])
NAFNET_ENCODER = ['intro', 'encoders', 'downs']


@pytest.mark.parametrize('q, c_out, expected', [
    (3, 50, 2),     # 1.5 rounds half up
    (3, 16, 0),     # 0.48
    (3, 17, 1),     # 0.51
    (1, 50, 1),     # 0.5 rounds half up
    (1, 49, 0),     # 0.49
    (5, 10, 1),     # 0.5
    (3, 150, 5),    # 4.5 (inexact in binary floating point, exact here)
    (2.5, 20, 1),   # 0.5
    (0.1, 5000, 5),
    (3, 64, 2),     # 1.92
    (100, 7, 7),
    (0, 7, 0),
])
def test_num_selected_filters_rounding(q, c_out, expected):
    assert num_selected_filters(c_out, q) == expected


def test_num_selected_filters_rejects_bad_q():
    with pytest.raises(ValueError, match='percentage'):
        num_selected_filters(10, 101)


def test_select_top_q_ties_and_order():
    scores = {'a': torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2, 0.5, 0.0, 0.3, 0.3, 0.3]),  # 10 filters
              'b': torch.zeros(34), 'c': torch.tensor([[1., 2.], [0., 0.], [5., 0.]])}  # per-kernel: sums 3, 0, 5
    masks = select_top_q(scores, 20)
    assert masks['a'].tolist() == [1, 3]  # 2 of 10: the two 0.9s
    assert select_top_q(scores, 30)['a'].tolist() == [1, 2, 3]  # tie 0.5 at 2 and 5: lower index wins
    assert masks['b'].tolist() == [0, 1, 2, 3, 4, 5, 6]  # 6.8 -> 7, all tied: lowest indices
    assert masks['c'].tolist() == [2]  # 0.6 -> 1: highest filter sum
    assert all(m.dtype == torch.long for m in masks.values())
    with pytest.raises(ValueError, match="layer 'x'"):
        select_top_q({'x': torch.tensor([float('nan')])}, 3)


@pytest.mark.parametrize('net_fn', [lambda: NAFNet(**TINY_NAFNET),
                                    lambda: MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=2)])
@pytest.mark.parametrize('q', [1, 3, 5, 50])
def test_mask_sizes_follow_documented_rounding(net_fn, q):
    net = net_fn()
    masks = select_top_q(random_scores(net, seed=0), q)
    convs = maskable_convs(net)
    assert list(masks) == list(convs)
    for name, conv in convs.items():
        assert len(masks[name]) == int(q / 100 * conv.out_channels + 0.5)
        assert torch.equal(masks[name], torch.sort(masks[name]).values)
    assert selected_weight_count(masks, net) == top_q_weight_budget(net, q)


def test_maskable_convs_of_backbones():
    nafnet = maskable_convs(NAFNet(**TINY_NAFNET))
    assert nafnet['encoders.0.0.conv2'].groups == 16  # depthwise is maskable
    assert 'ups.0.0' in nafnet and 'intro' in nafnet and 'ending' in nafnet
    # per NAFBlock: conv1..conv5 and the SCA 1x1 conv; plus intro, ending, 2 downs, 2 ups
    assert len(nafnet) == 6 * 5 + 6
    assert all(type(m) is nn.Conv2d for m in nafnet.values())


def test_random_scores_seeded():
    net = NAFNet(**TINY_NAFNET)
    a, b, c = random_scores(net, 1), random_scores(net, 1), random_scores(net, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a['intro'], c['intro'])
    assert a['intro'].shape == (8, )


def test_weight_difference_scores_known_answer():
    um = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    target = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    target.load_state_dict(um.state_dict())
    with torch.no_grad():
        target[0].weight[1, 0, 2, 2] += 0.5
        target[0].weight[1, 1, 0, 0] -= 0.25
        target[2].weight[0] += 1.0  # 3 weights of filter 0
        target[2].bias += 7.0  # biases are not scored
    scores = weight_difference_scores(um, target)
    torch.testing.assert_close(scores['0'], torch.tensor([0., 0.75, 0.]))
    torch.testing.assert_close(scores['2'], torch.tensor([3., 0.]))


def test_encoder_only_same_weight_budget():
    net = NAFNet(**TINY_NAFNET)
    scores = encoder_only_scores(net, NAFNET_ENCODER, seed=3)
    encoder = [n for n in scores if n.split('.')[0] in NAFNET_ENCODER]
    assert all(scores[n].sum() == 0 for n in scores if n not in encoder)
    assert all(scores[n].sum() > 0 for n in encoder)
    sizes = {n: c.weight[0].numel() for n, c in maskable_convs(net).items()}
    for q in (1, 3, 5):
        masks = encoder_only_masks(net, NAFNET_ENCODER, q, seed=3)
        budget = top_q_weight_budget(net, q)
        assert budget > 0
        assert all(len(masks[n]) == 0 for n in masks if n not in encoder)
        total = selected_weight_count(masks, net)
        assert 0 <= budget - total < min(sizes[n] for n in encoder)  # within one (smallest) encoder filter
        assert budget - total <= 0.01 * budget
        again = encoder_only_masks(net, NAFNET_ENCODER, q, seed=3)
        assert {n: m.tolist() for n, m in masks.items()} == {n: m.tolist() for n, m in again.items()}
    with pytest.raises(ValueError, match=r"prefixes \['encoder'\]"):
        encoder_only_scores(net, ['encoder'], seed=0)


def test_select_within_budget_known_answer():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 1))  # filter sizes 9 and 4
    scores = {'0': torch.tensor([0.9, 0.1, 0.8, 0.2]), '1': torch.tensor([0.85, 0.0])}
    masks = select_within_budget(scores, net, budget=22)
    # order: 0/0 (9, left 13), 1/0 (4, left 9), 0/2 (9, left 0)
    assert masks['0'].tolist() == [0, 2] and masks['1'].tolist() == [0]
    masks = select_within_budget(scores, net, budget=12)
    # 0/0 (9, left 3); 1/0 (4) skipped; 0/2 skipped; 0/3 skipped; 0/1 skipped; 1/1 skipped
    assert masks['0'].tolist() == [0] and masks['1'].tolist() == []


def test_parameter_overhead_nafnet_gopro_like_slides():
    net = NAFNet(width=32, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1])
    assert sum(p.numel() for p in net.parameters()) == 17_111_907
    scores = random_scores(net, 0)
    for q, expected in ((1, 1.03), (3, 1.09), (5, 1.15)):
        masks = select_top_q(scores, q)
        overhead = parameter_overhead(net, {'rain': masks, 'blur': masks, 'noise': masks})
        assert round(overhead, 2) == expected
        budget = top_q_weight_budget(net, q)
        assert overhead == pytest.approx(1 + 3 * budget / 17_111_907)


def test_mask_summary_rows():
    net = nn.Sequential(nn.Conv2d(3, 10, 3), nn.Conv2d(10, 10, 3, groups=10))
    masks = {'rain': {'0': torch.tensor([1, 2]), '1': torch.tensor([0])}, 'blur': {'0': torch.tensor([4])}}
    rows = mask_summary(masks, net)
    assert rows == [dict(layer='0', c_out=10, filter_size=27, selected={'rain': 2, 'blur': 1}, params=81),
                    dict(layer='1', c_out=10, filter_size=9, selected={'rain': 1, 'blur': 0}, params=9)]
    text = format_mask_summary(rows)
    assert text.splitlines()[0].split() == ['layer', 'C_out', 'rain', 'blur', 'params']
    assert text.splitlines()[-1].split() == ['total', '20', '3', '1', '90']
    assert parameter_overhead(net, masks) == pytest.approx((280 + 100 + 90) / 380)  # conv weights+biases: 270+10, 90+10


def test_mask_file_round_trip(tmp_path):
    net = NAFNet(**TINY_NAFNET)
    scores = {d: random_scores(net, i) for i, d in enumerate(['rain', 'blur', 'noise'])}
    masks = {d: select_top_q(s, 3) for d, s in scores.items()}
    path = str(tmp_path / 'sub' / 'masks.pth')
    save_masks(path, masks, scores, {'q': 3, 'method': 'faig', 'steps': 100})
    data = load_masks(path)
    assert data['format'] == 'uniremoval-ads-masks/1' and data['unit'] == 'output_filter'
    assert data['q'] == 3.0 and data['method'] == 'faig' and data['meta'] == {'steps': 100}
    assert data['degradations'] == ['rain', 'blur', 'noise']
    for d in masks:
        assert list(data['masks'][d]) == list(masks[d])
        assert all(torch.equal(data['masks'][d][k], masks[d][k]) for k in masks[d])
        assert all(torch.equal(data['scores'][d][k], scores[d][k]) for k in scores[d])
    assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['masks.pth']  # no temporary file left


def test_mask_file_errors(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'format': 'uniremoval-ads-masks/1', 'masks': {}}, str(bad))
    with pytest.raises(ValueError, match=r"bad\.pth.*lacks the keys \['unit', 'q', 'method', 'degradations', "
                                         r"'scores'\]"):
        load_masks(str(bad))
    torch.save([1, 2], str(bad))
    with pytest.raises(ValueError, match='holds a list'):
        load_masks(str(bad))
    bad.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='cannot read ADS mask file'):
        load_masks(str(bad))
    good = {'format': 'uniremoval-ads-masks/1', 'unit': 'output_filter', 'q': 3.0, 'method': 'faig',
            'degradations': ['rain'], 'masks': {'rain': {'a': torch.tensor([0.5])}}, 'scores': {}}
    torch.save(good, str(bad))
    with pytest.raises(ValueError, match="'rain' layer 'a' must be a 1-D LongTensor"):
        load_masks(str(bad))
    good['masks'] = {'snow': {}}
    torch.save(good, str(bad))
    with pytest.raises(ValueError, match='masks are given for'):
        load_masks(str(bad))
    with pytest.raises(KeyError, match='lacks'):
        save_masks(str(tmp_path / 'x.pth'), {'rain': {}}, None, {'q': 3})
