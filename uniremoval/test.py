"""``basicsr test`` / ``python -m uniremoval.test``: BasicSR's test pipeline with the plugin loaded.

Same as ``basicsr.test.test_pipeline`` (one test loader per ``datasets`` entry, ``model.validation``
on each, images under ``results/<name>/visualization``), with safe option parsing
(:mod:`uniremoval.options`), results under the working directory, and the metric values returned
so scripts can use them.
"""
import logging
import sys
from os import path as osp

import torch

import uniremoval  # noqa: F401  (installs the compat shim and registers the plugin before BasicSR is used)
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils import get_env_info, get_root_logger, get_time_str, make_exp_dirs
from basicsr.utils.options import dict2str
from uniremoval.options import parse_options
from uniremoval.utils.errors import run_command
from uniremoval.utils.run_lock import acquire_run_lock


def test_pipeline(args=None, root_path=None):
    """Evaluate the model described by the option file given in ``args`` (BasicSR flags).

    Returns:
        dict[str, dict[str, float]]: per test set name, the averaged ``val.metrics`` values
        (empty dicts when the option file defines no metrics).
    """
    opt, _ = parse_options(sys.argv[1:] if args is None else args, root_path=root_path, is_train=False)
    with acquire_run_lock(opt['path']['results_root'], 'test run'):  # before make_exp_dirs archives the folder
        return _test(opt)


def _test(opt):
    """The test run of :func:`test_pipeline`, with ``results/<name>`` locked."""
    torch.backends.cudnn.benchmark = True

    make_exp_dirs(opt)
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))

    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = build_dataset(dataset_opt)
        test_loader = build_dataloader(
            test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=None, seed=opt['manual_seed'])
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
        test_loaders.append(test_loader)

    model = build_model(opt)
    val_opt = opt.get('val') or {}
    results = {}
    for test_loader in test_loaders:
        test_set_name = test_loader.dataset.opt['name']
        logger.info(f'Testing {test_set_name}...')
        model.validation(test_loader, current_iter=opt['name'], tb_logger=None, save_img=val_opt.get('save_img', False))
        results[test_set_name] = dict(getattr(model, 'metric_results', {}) or {}) if val_opt.get('metrics') else {}
    logger.info(f"Results saved under {opt['path']['results_root']}")
    return results


def main(argv=None, prog='python -m uniremoval.test'):
    """Test from command-line flags under the error policy of :mod:`uniremoval.utils.errors`; the exit status."""
    return run_command(test_pipeline, argv, prog)


if __name__ == '__main__':
    sys.exit(main())
