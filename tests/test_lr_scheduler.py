"""EpochExponentialLR (uniremoval/models/lr_scheduler.py) and EpochSchedulerMixin (model_mixins.py), CPU only."""
import pytest
import torch

import uniremoval  # noqa: F401  (torchvision shim + registration before BasicSR is used)
from basicsr.models.sr_model import SRModel
from uniremoval.models.lr_scheduler import EpochExponentialLR
from uniremoval.models.model_mixins import EpochSchedulerMixin


class EpochScheduledSRModel(EpochSchedulerMixin, SRModel):
    pass


def _optimizer(lr=0.1, groups=1):
    return torch.optim.SGD([{'params': [torch.nn.Parameter(torch.zeros(1))], 'lr': lr * (g + 1)}
                            for g in range(groups)])


def _step(scheduler):
    scheduler.optimizer.step()  # keeps torch's "scheduler.step() before optimizer.step()" check quiet
    scheduler.step()


def test_lr_decays_once_per_epoch_of_steps():
    optimizer = _optimizer(groups=2)
    scheduler = EpochExponentialLR(optimizer, gamma=0.5, iters_per_epoch=3)
    lrs = []
    for _ in range(8):
        lrs.append([g['lr'] for g in optimizer.param_groups])
        _step(scheduler)
    lrs.append([g['lr'] for g in optimizer.param_groups])
    for i, lr in enumerate(lrs):
        assert lr == [0.1 * 0.5**(i // 3), 0.2 * 0.5**(i // 3)]
    assert scheduler.get_last_lr() == lrs[-1] and scheduler.epoch == 2


def test_closed_form_ignores_lrs_set_in_between():
    # BasicSR's warm-up overwrites group['lr'] after stepping; the schedule must not compound on it
    optimizer = _optimizer()
    scheduler = EpochExponentialLR(optimizer, gamma=0.9, iters_per_epoch=2)
    _step(scheduler)
    optimizer.param_groups[0]['lr'] = 1e-5
    _step(scheduler)
    assert optimizer.param_groups[0]['lr'] == 0.1 * 0.9


def test_state_dict_resume_continues_the_same_schedule(tmp_path):
    optimizer = _optimizer(lr=2e-4)
    scheduler = EpochExponentialLR(optimizer, gamma=0.99, iters_per_epoch=3)
    for _ in range(7):
        _step(scheduler)
    path = tmp_path / 'state.pth'
    torch.save({'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()}, path)
    reference = []
    for _ in range(6):
        _step(scheduler)
        reference.append(optimizer.param_groups[0]['lr'])

    state = torch.load(path, weights_only=True)  # uniremoval's train loads training states this way
    optimizer2 = _optimizer(lr=2e-4)
    scheduler2 = EpochExponentialLR(optimizer2, gamma=0.5, iters_per_epoch=100)  # overwritten by the state
    optimizer2.load_state_dict(state['optimizer'])
    scheduler2.load_state_dict(state['scheduler'])
    assert (scheduler2.gamma, scheduler2.iters_per_epoch, scheduler2.last_epoch) == (0.99, 3, 7)
    resumed = []
    for _ in range(6):
        _step(scheduler2)
        resumed.append(optimizer2.param_groups[0]['lr'])
    assert resumed == reference
    assert resumed[-1] == 2e-4 * 0.99**(13 // 3)


@pytest.mark.parametrize('kwargs', [{'gamma': 0.0, 'iters_per_epoch': 3}, {'gamma': 0.99, 'iters_per_epoch': 0},
                                    {'gamma': 0.99, 'iters_per_epoch': 2.5}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        EpochExponentialLR(_optimizer(), **kwargs)


def _opt(tmp_path, scheduler, iters_per_epoch=None):
    train = {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': scheduler,
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    if iters_per_epoch is not None:
        train['iters_per_epoch'] = iters_per_epoch
    return {
        'name': 'scheduler_unit', 'model_type': 'SRModel', 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'scale': 1,
        'network_g': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1,
                      'upscale': 1},
        'path': {'models': str(tmp_path), 'training_states': str(tmp_path)},
        'train': train,
    }


def _train_iterations(model, iters):
    """BasicSR's training loop: update_learning_rate, then a step, for 1-based iterations ``iters``."""
    lrs = {}
    g = torch.Generator().manual_seed(0)
    for current_iter in iters:
        model.update_learning_rate(current_iter)
        lrs[current_iter] = model.get_current_learning_rate()[0]
        model.feed_data({'lq': torch.rand(2, 3, 8, 8, generator=g), 'gt': torch.rand(2, 3, 8, 8, generator=g)})
        model.optimize_parameters(current_iter)
    return lrs


@pytest.mark.parametrize('where', ['train', 'scheduler'])
def test_model_lr_after_n_epochs_is_lr0_times_gamma_to_the_n(tmp_path, where):
    n, iters_per_epoch = 3, 4
    scheduler = {'type': 'EpochExponentialLR', 'gamma': 0.99}
    if where == 'scheduler':
        scheduler['iters_per_epoch'] = iters_per_epoch
        opt = _opt(tmp_path, scheduler, iters_per_epoch=1000)  # the scheduler's own option wins
    else:
        opt = _opt(tmp_path, scheduler, iters_per_epoch=iters_per_epoch)
    model = EpochScheduledSRModel(opt)
    assert len(model.schedulers) == 1 and isinstance(model.schedulers[0], EpochExponentialLR)
    lrs = _train_iterations(model, range(1, n * iters_per_epoch + 2))
    for current_iter, lr in lrs.items():
        epoch = (current_iter - 1) // iters_per_epoch
        assert abs(lr - 1e-3 * 0.99**epoch) < 1e-12
    assert abs(model.get_current_learning_rate()[0] - 1e-3 * 0.99**n) < 1e-12
    assert abs(lrs[n * iters_per_epoch] - 1e-3 * 0.99**(n - 1)) < 1e-12


def test_model_resume_training_keeps_the_schedule(tmp_path):
    opt = _opt(tmp_path, {'type': 'EpochExponentialLR', 'gamma': 0.9}, iters_per_epoch=2)
    model = EpochScheduledSRModel(opt)
    _train_iterations(model, range(1, 6))
    state = {'optimizers': [o.state_dict() for o in model.optimizers],
             'schedulers': [s.state_dict() for s in model.schedulers]}
    reference = _train_iterations(model, range(6, 10))
    resumed = EpochScheduledSRModel(_opt(tmp_path, {'type': 'EpochExponentialLR', 'gamma': 0.9}, iters_per_epoch=2))
    resumed.resume_training(state)
    assert _train_iterations(resumed, range(6, 10)) == pytest.approx(reference, abs=1e-15)
    assert reference[9] == pytest.approx(1e-3 * 0.9**4, abs=1e-15)


def test_missing_iters_per_epoch_names_the_options(tmp_path):
    with pytest.raises(ValueError, match='train:iters_per_epoch'):
        EpochScheduledSRModel(_opt(tmp_path, {'type': 'EpochExponentialLR', 'gamma': 0.99}))


def test_missing_gamma_and_unknown_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='gamma'):
        EpochScheduledSRModel(_opt(tmp_path, {'type': 'EpochExponentialLR'}, iters_per_epoch=4))
    with pytest.raises(ValueError, match='gama'):
        EpochScheduledSRModel(_opt(tmp_path, {'type': 'EpochExponentialLR', 'gama': 0.99}, iters_per_epoch=4))


def test_other_types_go_to_basicsr(tmp_path):
    model = EpochScheduledSRModel(_opt(tmp_path, {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5}))
    assert type(model.schedulers[0]).__name__ == 'MultiStepRestartLR'
    with pytest.raises(NotImplementedError, match='StepLR'):
        EpochScheduledSRModel(_opt(tmp_path, {'type': 'StepLR', 'step_size': 2}))
