"""Learning-rate schedules that BasicSR 1.4.2 lacks, stepped once per iteration as BasicSR does.

:class:`EpochExponentialLR` is Uni-Removal's per-epoch decay: "There is a decay of 0.99 on every epoch", in
both the knowledge-transfer and the domain-adaptation stage (arXiv 2307.05075, §IV-A2). BasicSR's
``BaseModel.update_learning_rate`` calls ``scheduler.step()`` once per iteration (from iteration 2 on), so
the epoch is derived from the iteration count and the number of iterations per epoch.
:class:`~uniremoval.models.model_mixins.EpochSchedulerMixin` builds it from ``train.scheduler``.
"""
from torch.optim.lr_scheduler import LRScheduler


class EpochExponentialLR(LRScheduler):
    """Exponential decay by ``gamma`` once every ``iters_per_epoch`` scheduler steps.

    After ``i`` calls to :meth:`step` the learning rate of every parameter group is
    ``initial_lr * gamma ** (i // iters_per_epoch)``, computed in closed form, so learning rates set in
    between (BasicSR's linear warm-up) do not compound into it. With BasicSR's once-per-iteration stepping,
    1-based iteration ``t`` trains with ``initial_lr * gamma ** ((t - 1) // iters_per_epoch)``: epoch ``e``
    (0-based) uses ``gamma ** e``. ``state_dict``/``load_state_dict`` (inherited) keep ``gamma``,
    ``iters_per_epoch`` and the step count, so a resumed run continues the same schedule.

    Args:
        optimizer (torch.optim.Optimizer): Wrapped optimizer.
        gamma (float): Multiplicative decay per epoch (0.99 in Uni-Removal, §IV-A2).
        iters_per_epoch (int): Scheduler steps (iterations) per epoch.
        last_epoch (int): Index of the last step, as in torch's schedulers (``-1`` to start). Default: -1.
    """

    def __init__(self, optimizer, gamma, iters_per_epoch, last_epoch=-1):
        if not gamma > 0:
            raise ValueError(f'EpochExponentialLR: gamma must be positive, got {gamma}')
        if isinstance(iters_per_epoch, bool) or int(iters_per_epoch) != iters_per_epoch or iters_per_epoch < 1:
            raise ValueError(f'EpochExponentialLR: iters_per_epoch must be a positive integer, got {iters_per_epoch}')
        self.gamma = gamma
        self.iters_per_epoch = int(iters_per_epoch)
        super().__init__(optimizer, last_epoch)

    @property
    def epoch(self):
        """Number of completed epochs (0-based index of the current one)."""
        return self.last_epoch // self.iters_per_epoch

    def get_lr(self):
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self):
        factor = self.gamma**self.epoch
        return [base_lr * factor for base_lr in self.base_lrs]
