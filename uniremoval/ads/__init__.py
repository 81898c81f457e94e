"""ADS / ADMS (Park et al., CVPR 2023): adaptive discriminative filters for specific degradations.

* :mod:`uniremoval.ads.faig`: FAIG-SD filter attribution between the unified model and a target
  model fine-tuned on one degradation (step 2).
* :mod:`uniremoval.ads.selection`: maskable layers, top-q% masks per layer, the slides' selection
  baselines (random, encoder-only, |theta_um - theta_d|), mask files, per-layer counts and the
  parameter overhead.
* :mod:`uniremoval.ads.adaptive_conv`: :class:`AdaptiveConv2d` (CNN-ADS convolution,
  ``theta_ads = theta_um + sum_d c_d theta_d M_d``, step 4) and the in-place conversion of a backbone.

The registered networks are ``ADSNet`` (``uniremoval/archs/ads_arch.py``) and
``DegradationClassifier`` (``uniremoval/archs/degradation_classifier_arch.py``, step 3).
"""
from uniremoval.ads.adaptive_conv import (AdaptiveConv2d, adaptive_condition, adaptive_convs, convert_to_adaptive,
                                          is_maskable_conv, merged_weight, split_adaptive_state_dict)
from uniremoval.ads.faig import faig_scores
from uniremoval.ads.selection import (encoder_only_masks, encoder_only_scores, format_mask_summary, load_masks,
                                      mask_summary, maskable_convs, num_selected_filters, parameter_overhead,
                                      random_scores, save_masks, select_top_q, select_within_budget,
                                      selected_weight_count, top_q_weight_budget, weight_difference_scores)

__all__ = [
    'AdaptiveConv2d', 'adaptive_condition', 'adaptive_convs', 'convert_to_adaptive', 'is_maskable_conv',
    'merged_weight', 'split_adaptive_state_dict', 'faig_scores', 'encoder_only_masks', 'encoder_only_scores',
    'format_mask_summary', 'load_masks', 'mask_summary', 'maskable_convs', 'num_selected_filters',
    'parameter_overhead', 'random_scores', 'save_masks', 'select_top_q', 'select_within_budget',
    'selected_weight_count', 'top_q_weight_budget', 'weight_difference_scores'
]
