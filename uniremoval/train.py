"""``basicsr train`` / ``python -m uniremoval.train``: BasicSR's training pipeline with the plugin loaded.

The loop is BasicSR's ``basicsr.train.train_pipeline`` step for step (same logging, checkpoint,
validation and resume behaviour, same option keys), reusing its dataloader and logger helpers. It
differs where BasicSR 1.4.2 has rough edges:

* options come from :mod:`uniremoval.options` (safe YAML, no ``eval`` in ``--force_yml``) and
  arguments are passed in, not read from ``sys.argv`` inside the pipeline;
* resuming works on CPU (BasicSR calls ``torch.cuda.current_device()`` unconditionally) and loads
  training states with ``weights_only=True``;
* ``--auto_resume`` looks for ``experiments/<name>`` under the same root the run writes to
  (the working directory), and ignores partially written state files.
"""
import datetime
import logging
import os
import re
import sys
import time
from os import path as osp

import torch

import uniremoval  # noqa: F401  (installs the compat shim and registers the plugin before BasicSR is used)
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.train import create_train_val_dataloader, init_tb_loggers
from basicsr.utils import (AvgTimer, MessageLogger, check_resume, get_env_info, get_root_logger, get_time_str,
                           make_exp_dirs, mkdir_and_rename)
from basicsr.utils.options import copy_opt_file, dict2str
from uniremoval.options import parse_options

STATE_FILE = re.compile(r'^(\d+)\.state$')


def find_latest_state(state_dir):
    """Return the path of the newest complete ``<iter>.state`` file in ``state_dir``, or None."""
    if not osp.isdir(state_dir):
        return None
    iters = [int(m.group(1)) for m in map(STATE_FILE.match, os.listdir(state_dir)) if m]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def load_resume_state(opt):
    """Load the training state to resume from (``--auto_resume`` or ``path.resume_state``), on the model's device.

    Returns:
        dict | None: ``{'epoch', 'iter', 'optimizers', 'schedulers'}`` as saved by BasicSR models.
    """
    if opt['auto_resume']:
        resume_state_path = find_latest_state(opt['path']['training_states'])
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    else:
        resume_state_path = opt['path'].get('resume_state')
    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f"path.resume_state: training state {resume_state_path} does not exist")
    device = torch.device('cuda', torch.cuda.current_device()) if opt['num_gpu'] > 0 else torch.device('cpu')
    resume_state = torch.load(resume_state_path, map_location=device, weights_only=True)
    check_resume(opt, resume_state['iter'])
    return resume_state


def _make_prefetcher(opt, train_loader, logger):
    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        return CPUPrefetcher(train_loader)
    if prefetch_mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('datasets:train:prefetch_mode cuda needs datasets:train:pin_memory: true')
        logger.info('Use cuda prefetch dataloader')
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"datasets:train:prefetch_mode must be ~, 'cpu' or 'cuda', got {prefetch_mode!r}")


def train_pipeline(args=None, root_path=None, on_log=None):
    """Train the model described by the option file given in ``args`` (BasicSR flags).

    Args:
        args (list[str] | None): command-line arguments, e.g. ``['-opt', 'options/kt.yml']``;
            default ``sys.argv[1:]``.
        root_path (str | None): where ``experiments/`` and ``tb_logger/`` go; default the working directory.
        on_log (callable | None): called with the logged values (``{'epoch', 'iter', 'lrs', 'time',
            'data_time', <loss terms>}``) every ``logger.print_freq`` iterations, e.g. to draw curves.

    Returns:
        BaseModel: the trained model (its networks hold the final weights).
    """
    opt, args = parse_options(sys.argv[1:] if args is None else args, root_path=root_path, is_train=True)
    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
    copy_opt_file(args.opt, opt['path']['experiments_root'])

    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = init_tb_loggers(opt)

    train_loader, train_sampler, val_loaders, _, total_iters = create_train_val_dataloader(opt, logger)

    if not opt['train'].get('iters_per_epoch'):  # for per-epoch schedules inside models (e.g. KT's decay)
        opt['train']['iters_per_epoch'] = len(train_loader)
    model = build_model(opt)
    if resume_state:
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
        start_epoch, current_iter = resume_state['epoch'], resume_state['iter']
    else:
        start_epoch, current_iter = 0, 0

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetcher = _make_prefetcher(opt, train_loader, logger)

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    epoch = start_epoch
    # BasicSR loops over a precomputed number of epochs, which ends early when the loader drops the
    # last incomplete batch (drop_last) and the epoch count was rounded from ceil(len / batch);
    # here epochs run until total_iter is reached.
    while current_iter < total_iters:
        train_sampler.set_epoch(epoch)
        if hasattr(train_loader.dataset, 'set_epoch'):  # e.g. MultiDegradationDataset's window over large sources
            train_loader.dataset.set_epoch(epoch)
        prefetcher.reset()
        train_data = prefetcher.next()
        if train_data is None:
            raise ValueError(f"datasets:train ({opt['datasets']['train'].get('name')}) yields no batch: it holds "
                             f"{len(train_loader.dataset)} samples, fewer than batch_size_per_gpu")
        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                if on_log is not None:
                    on_log(dict(log_vars))
                msg_logger(log_vars)
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)
            if opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, opt['val'].get('save_img', False))
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()
        epoch += 1

    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if opt.get('val') is not None and current_iter % opt['val']['val_freq'] != 0:  # not just validated
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val'].get('save_img', False))
    if tb_logger:
        tb_logger.close()
    return model


def main(argv=None):
    train_pipeline(argv)


if __name__ == '__main__':
    main()
