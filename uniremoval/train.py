"""``basicsr train`` / ``python -m uniremoval.train``: BasicSR's training pipeline with the plugin loaded.

The loop is BasicSR's ``basicsr.train.train_pipeline`` step for step (same logging, checkpoint,
validation and resume behaviour, same option keys), reusing its dataloader and logger helpers. It
differs where BasicSR 1.4.2 has rough edges:

* options come from :mod:`uniremoval.options` (safe YAML, no ``eval`` in ``--force_yml``) and
  arguments are passed in, not read from ``sys.argv`` inside the pipeline;
* resuming works on CPU (BasicSR calls ``torch.cuda.current_device()`` unconditionally) and loads
  training states with ``weights_only=True``;
* ``--auto_resume`` looks for ``experiments/<name>`` under the same root the run writes to
  (the working directory), ignores partially written state files and falls back, with a warning, to
  the previous state when the newest one (or its network file) is truncated or unreadable;
* a resumed run continues exactly where the saved one was: training states hold the position in the
  epoch and every rank's random generators (python, numpy, torch), and the resumed run replays the
  epoch's data iterator up to that position (see :func:`train_pipeline`), so its final weights equal
  an uninterrupted run's (tests/test_resume.py); validation does not consume the training generators;
* ``--launcher pytorch|slurm`` trains distributed on CPUs (Gloo) or GPUs (NCCL)
  (:mod:`uniremoval.utils.dist_util`, :class:`~uniremoval.models.model_mixins.DistributedTrainingMixin`).
"""
import datetime
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from os import path as osp

import torch

import uniremoval  # noqa: F401  (installs the compat shim and registers the plugin before BasicSR is used)
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.train import create_train_val_dataloader, init_tb_loggers
from basicsr.utils import (AvgTimer, MessageLogger, check_resume, get_env_info, get_root_logger, get_time_str,
                           make_exp_dirs, mkdir_and_rename)
from basicsr.utils.options import copy_opt_file, dict2str
from uniremoval.options import OptionsError, parse_options
from uniremoval.utils.checkpoint import STATE_FILE, capture_rng_state, find_resumable_state, restore_rng_state
from uniremoval.utils.display import shown
from uniremoval.utils.dist_util import broadcast_object
from uniremoval.utils.errors import run_command
from uniremoval.utils.run_lock import RunLockedError, acquire_run_lock

# what atomic_open leaves when a writer is killed: '.<name>.<8 random characters of mkstemp>.tmp'
STALE_TEMP_FILE = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def remove_stale_temp_files(run_folder):
    """Remove the temporary files that writes killed midway left in ``run_folder`` (and its sub-folders).

    Only files named as :func:`~uniremoval.utils.atomic_io.atomic_open` names them are removed, only inside
    this run's folder; called at resume, when no writer of this run is alive. Returns the removed paths.
    """
    removed = []
    for folder, _, files in os.walk(run_folder):
        for name in files:
            if STALE_TEMP_FILE.match(name):
                os.remove(osp.join(folder, name))
                removed.append(osp.join(folder, name))
    return sorted(removed)


def find_latest_state(state_dir):
    """Return the path of the newest complete ``<iter>.state`` file in ``state_dir``, or None."""
    if not osp.isdir(state_dir):
        return None
    iters = [int(m.group(1)) for m in map(STATE_FILE.match, os.listdir(state_dir)) if m]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def _network_files(opt):
    """``iter -> [models/net_<label>_<iter>.pth, ...]`` for the networks a resume loads (BasicSR's check_resume)."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    labels = [key.replace('network_', '') for key in opt if key.startswith('network_') and key not in ignored]
    return lambda it: [osp.join(opt['path']['models'], f'net_{label}_{it}.pth') for label in labels]


def load_resume_state(opt):
    """Load the training state to resume from (``--auto_resume`` or ``path.resume_state``), on the CPU.

    With ``--auto_resume``, the newest state that loads and whose network files are intact is used;
    newer unusable ones are skipped with a warning (``opt['resume_warnings']``, logged once the log is
    open). An explicit ``path.resume_state`` that cannot be read is an error naming the file.

    Returns:
        dict | None: ``{'epoch', 'iter', 'optimizers', 'schedulers'}`` as saved by BasicSR models, plus
        ``rng_states`` and ``train_position`` where saved by uniremoval's ``SafeCheckpointMixin``.
    """
    opt['resume_warnings'] = []
    if opt['auto_resume']:
        path, state, skipped = None, None, []
        if opt['rank'] == 0:
            path, state, skipped = find_resumable_state(opt['path']['training_states'], _network_files(opt))
        path, skipped = broadcast_object((path, skipped))  # every rank resumes from rank 0's choice
        if path is not None and state is None:
            state = torch.load(path, map_location='cpu', weights_only=True)
        if skipped:
            if path is None:
                raise RuntimeError('--auto_resume: no training state can be resumed from:\n  ' + '\n  '.join(skipped))
            opt['resume_warnings'] = [f'{msg}; resuming from the previous state {path} instead' for msg in skipped]
        if path is None:
            return None
        opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
        if path is None:
            return None
        if not osp.isfile(path):
            raise FileNotFoundError(f'path.resume_state: training state {path} does not exist')
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise RuntimeError(f'path.resume_state: cannot read training state {path} (truncated or not a BasicSR '
                               f'.state file?): {type(e).__name__}: {e}') from e
    total_iter = opt['train']['total_iter']
    if state['iter'] > total_iter:  # BasicSR would 'finish' at once, having trained nothing
        raise OptionsError(f"{'--auto_resume' if opt['auto_resume'] else 'path:resume_state'}: the training state "
                           f"{shown(path)} is at iteration {state['iter']}, beyond train:total_iter {total_iter}: "
                           f"nothing would be trained; raise train:total_iter (e.g. --force_yml train:total_iter="
                           f"{2 * state['iter']}) or start a run with another name")
    check_resume(opt, state['iter'])
    return state


@contextmanager
def preserved_rng():
    """Run a block (validation) without moving the training run's random generators."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def _resume_position(opt, resume_state, iters_per_epoch, logger):
    """Where the data iterator restarts after a resume: ``(epoch, batches to skip, rng at epoch start, rng now)``."""
    epoch = resume_state['epoch']
    position = resume_state.get('train_position') or {}
    rng_states = resume_state.get('rng_states')
    rng = None
    if rng_states is not None and len(rng_states) == opt['world_size']:
        rng = rng_states[opt['rank']]
    elif rng_states is not None:
        logger.warning(f"The training state was saved by {len(rng_states)} processes, this run has "
                       f"{opt['world_size']}: random generators are not restored, augmentation will differ.")
    skip = position.get('iter_in_epoch')
    if skip is None:
        logger.warning('The training state has no position in the epoch (saved by another program): the epoch '
                       'restarts from its first batch, as in BasicSR.')
        return epoch, 0, None, None
    if position.get('iters_per_epoch') != iters_per_epoch:
        logger.warning(f"Batches per epoch changed since the state was saved ({position.get('iters_per_epoch')} -> "
                       f'{iters_per_epoch}, e.g. another batch size or world size): the data order cannot continue; '
                       f'training goes on with epoch {epoch + 1}.')
        return epoch + 1, 0, None, None
    now = rng['now'] if rng else None
    if skip >= iters_per_epoch:  # saved at the end of an epoch: the next one starts from the saved generators
        return epoch + 1, 0, now, None
    return epoch, skip, (rng['epoch_start'] if rng else None), now


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
    run_lock = lock_run_folder(opt, opt['path']['experiments_root'], 'training run')
    try:
        return _train(opt, args, on_log)
    finally:
        if run_lock is not None:
            run_lock.release()


def lock_run_folder(opt, run_folder, what):
    """Rank 0 locks ``run_folder`` (:mod:`uniremoval.utils.run_lock`) before it is created or archived; every
    rank raises :class:`~uniremoval.utils.run_lock.RunLockedError` when another run holds it.

    Returns:
        RunLock | None: the held lock on rank 0, None on the other ranks.
    """
    lock, problem = None, None
    if opt.get('rank', 0) == 0:
        try:
            lock = acquire_run_lock(run_folder, what)
        except RunLockedError as e:
            problem = str(e)
    problem = broadcast_object(problem)  # the other ranks stop with rank 0
    if problem is not None:
        raise RunLockedError(problem)
    return lock


def _train(opt, args, on_log):
    """The training run of :func:`train_pipeline`, with the run folder locked."""
    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    resume_warnings = opt.pop('resume_warnings', [])
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
    for message in resume_warnings:
        logger.warning(message)

    iters_per_epoch = len(train_loader)
    if not opt['train'].get('iters_per_epoch'):  # for per-epoch schedules inside models (e.g. KT's decay)
        opt['train']['iters_per_epoch'] = iters_per_epoch
    model = build_model(opt)
    if opt['dist'] and hasattr(model, 'sync_loss_modules'):
        model.sync_loss_modules()  # DDP syncs the trained networks; loss networks are outside it
    skip, epoch_rng, now_rng = 0, None, None
    if resume_state:
        if opt['rank'] == 0:
            for stale in remove_stale_temp_files(opt['path']['experiments_root']):
                logger.info(f'Removed {shown(stale)}, left by a write that was interrupted.')
        model.resume_training(resume_state)
        logger.info(f"Resuming training from epoch: {resume_state['epoch']}, iter: {resume_state['iter']}.")
        current_iter = resume_state['iter']
        start_epoch, skip, epoch_rng, now_rng = _resume_position(opt, resume_state, iters_per_epoch, logger)
        train_opt = opt['datasets']['train']
        if train_opt.get('persistent_workers') or train_opt.get('prefetch_mode') == 'cpu':
            logger.warning('datasets:train:persistent_workers / prefetch_mode cpu: data augmentation after the '
                           'resume is not the uninterrupted run\'s (worker generators carry over epochs / a '
                           'background thread draws them).')
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
        train_sampler.set_epoch(epoch)  # the shuffle depends on the epoch only (EnlargedSampler)
        if hasattr(train_loader.dataset, 'set_epoch'):  # e.g. MultiDegradationDataset's window over large sources
            train_loader.dataset.set_epoch(epoch)
        if epoch_rng is not None:  # resuming: the generators the saved run had when it made this iterator
            restore_rng_state(epoch_rng)
            epoch_rng = None
        position = {'epoch_rng': capture_rng_state(), 'iters_per_epoch': iters_per_epoch}
        prefetcher.reset()
        iter_in_epoch = 0
        if skip:  # resuming mid-epoch: replay the batches already trained on, so that the data loader
            # workers' generators (seeded per epoch by BasicSR's worker_init_fn) reach the same point
            skip_start = time.time()
            for _ in range(skip):
                if prefetcher.next() is None:
                    raise RuntimeError(f'Resuming at batch {skip} of epoch {epoch}, but the epoch has fewer batches')
            iter_in_epoch, skip = skip, 0
            logger.info(f'Replayed the first {iter_in_epoch} batches of epoch {epoch} (trained before the resume) '
                        f'in {time.time() - skip_start:.1f} s.')
        if now_rng is not None:  # the generators at the moment the state was saved
            restore_rng_state(now_rng)
            now_rng = None
        train_data = prefetcher.next()
        if train_data is None:
            share = (f" ({len(train_sampler)} per process with {opt['world_size']} processes)"
                     if opt['world_size'] > 1 else '')
            raise ValueError(f"datasets:train ({opt['datasets']['train'].get('name')}) yields no batch: it holds "
                             f"{len(train_loader.dataset)} samples{share}, fewer than batch_size_per_gpu "
                             f"({opt['datasets']['train'].get('batch_size_per_gpu')})")
        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            iter_in_epoch += 1
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
                model.train_position = dict(position, iter_in_epoch=iter_in_epoch)  # read by save_training_state
                model.save(epoch, current_iter)
            if opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0:
                with preserved_rng():
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


def main(argv=None, prog='python -m uniremoval.train'):
    """Train from command-line flags under the error policy of :mod:`uniremoval.utils.errors`; the exit status."""
    return run_command(train_pipeline, argv, prog)


if __name__ == '__main__':
    sys.exit(main())
