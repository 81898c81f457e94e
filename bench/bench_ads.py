"""CNN-ADS inference cost against its unified model and against a naive per-sample weight merge (issue [10] item 7).

ADS (Park et al., CVPR 2023) computes every masked convolution with
``theta_ads = theta_um + sum_d c_d theta_d M_d`` for the image's condition ``c``. Three ways to run one
batch, timed side by side (:func:`bench_util.interleaved`), same NAFNet, same masks (top-q% filters per
layer for three degradations; which filters does not change the cost, so random scores are used):

* ``um``: the unified model alone (the baseline of every ratio);
* ``ads``: :class:`~uniremoval.ads.adaptive_conv.AdaptiveConv2d` as built (the UM convolution plus one
  extra convolution over the selected filters of all degradations, weighted per sample), with the
  condition given (``ads``) and predicted by the degradation classifier (``ads_classifier``);
* ``naive_merge``: per sample, the merged weight of every layer (``merged_weight``) and a forward with
  them (``torch.func.functional_call``): k weight copies materialised per sample.

The slides' parameter overhead at q = 3% is about x1.09; the target for ``ads / um`` is at most 1.15.
Outputs of ``ads`` and ``naive_merge`` agree (the script checks it; tests/test_adaptive_conv.py tests it).

    python bench/bench_ads.py                  # CPU: NAFNet width 16, 128x128, batch 1 and 4
    python bench/bench_ads.py --size 256 --batches 1
    python bench/bench_ads.py --full           # GPU: NAFNet GoPro width 32, 256x256
"""
import argparse
import copy

import torch
from bench_util import interleaved, ratios, summarize, write_result
from torch.func import functional_call

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from uniremoval.ads.adaptive_conv import adaptive_condition, adaptive_convs, convert_to_adaptive, merged_weight
from uniremoval.ads.selection import parameter_overhead, random_scores, select_top_q

CPU_NET = {'type': 'NAFNet', 'img_channel': 3, 'width': 16, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 2],
           'dec_blk_nums': [1, 1, 1, 1]}
GOPRO_NET = {'type': 'NAFNet', 'img_channel': 3, 'width': 32, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 28],
             'dec_blk_nums': [1, 1, 1, 1]}
CLASSIFIER = {'type': 'DegradationClassifier', 'num_in_ch': 3, 'num_degradations': 3}
K = 3


def build_pair(net_opt, q, device):
    """(UM, CNN-ADS with random specific weights on the top-q% masks of K degradations, overhead)."""
    torch.manual_seed(0)
    um = build_network(dict(net_opt)).eval().to(device)
    masks = [select_top_q(random_scores(um, seed=d), q) for d in range(K)]
    ads = copy.deepcopy(um)
    convert_to_adaptive(ads, masks, K)  # in place
    with torch.no_grad():
        for conv in adaptive_convs(ads).values():
            for p in conv.specific_parameters():
                p.normal_(0, 1e-2)
    return um, ads.eval(), parameter_overhead(um, masks)


def naive_merge(ads, x, condition):
    """Forward of each sample with its own merged weights: the reference ADS avoids."""
    convs = adaptive_convs(ads)
    outs = []
    for b in range(x.shape[0]):
        weights = {f'{name}.weight': merged_weight(conv, condition[b]) for name, conv in convs.items()}
        with adaptive_condition(ads, torch.zeros(1, K, device=x.device)):  # the extra filters contribute 0
            outs.append(functional_call(ads, weights, (x[b:b + 1], )))
    return torch.cat(outs)


def measure(net_opt, size, batch, q, repeats, device):
    um, ads, overhead = build_pair(net_opt, q, device)
    classifier = build_network(dict(CLASSIFIER)).eval().to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    condition = torch.softmax(torch.randn(batch, K, device=device), 1)

    def run_ads():
        with adaptive_condition(ads, condition):
            return ads(x)

    def run_ads_classifier():
        with adaptive_condition(ads, torch.softmax(classifier(x), 1)):
            return ads(x)

    fns = {'um': lambda: um(x), 'ads': run_ads, 'ads_classifier': run_ads_classifier,
           'naive_merge': lambda: naive_merge(ads, x, condition)}
    with torch.inference_mode():
        difference = (run_ads() - naive_merge(ads, x, condition)).abs().max().item()
        times = interleaved(fns, repeats, device=device)
    return {'size': size, 'batch': batch, 'q': q, 'parameter_overhead': overhead, 'max_abs_ads_vs_naive': difference,
            'ratios_over_um': ratios(times, 'um'), 'seconds': {k: summarize(v) for k, v in times.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--full', action='store_true', help='NAFNet GoPro width 32 at 256x256 (GPU)')
    parser.add_argument('--quick', action='store_true', help='tiny sizes and 2 repeats (development)')
    parser.add_argument('--q', type=float, default=3.0)
    parser.add_argument('--size', type=int, help='image side (default: 128 on CPU, 256 with --full)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    net_opt, size, repeats = (GOPRO_NET, 256, 10) if args.full else (CPU_NET, 128, 6)
    if args.quick:
        size, repeats = 32, 2
    size = args.size or size
    rows = [measure(net_opt, size, batch, args.q, repeats, args.device) for batch in args.batches]
    for row in rows:
        r = row['ratios_over_um']
        print(f"NAFNet width {net_opt['width']} {size}px batch {row['batch']}, q {args.q}%: parameters "
              f"x{row['parameter_overhead']:.3f}; time / UM: ADS {r['ads']:.2f}, ADS + classifier "
              f"{r['ads_classifier']:.2f}, naive per-sample merge {r['naive_merge']:.2f} "
              f"(ADS vs naive max |diff| {row['max_abs_ads_vs_naive']:.1e})")
    name = 'ads_overhead_' + ('full' if args.full else 'quick' if args.quick else f'cpu_{size}px')
    write_result(name, {'network': net_opt, 'device': args.device, 'rows': rows}, quick=args.quick)


if __name__ == '__main__':
    main()
