"""Step 3 of ADS (Park et al., CVPR 2023, slides "Method: Step 3 - Degradation classifier").

The degradation classifier (DC) predicts the degradation type of an input image; its softmax
``c = (c_1, ..., c_k)`` weights the degradation-specific filters of CNN-ADS at inference
(``theta_ads = theta_um + sum_d c_d theta_d M_d``, Step 4). It is trained with cross-entropy on the
type label that :class:`~uniremoval.data.multi_degradation_dataset.MultiDegradationDataset` gives every
sample (``label``: the index of its source in ``sources``; ``degradation``: the source name).

Validation reports the overall and per-type accuracy and the k x k confusion matrix (rows: true type,
columns: predicted), logs them and writes (atomically) ``<visualization>/confusion_<iter>.json`` and ``.csv``
(``<iter>`` is the run's name under ``basicsr test``). ``self.metric_results`` holds ``accuracy`` (what
BasicSR's best-metric tracking reads), ``self.best_metric_results[<val name>]['accuracy']`` the best and
its iteration, ``self.confusion`` the last matrix; ``val.metrics`` is not used.

Options::

    model_type: DegradationClassifierModel
    network_g: {type: DegradationClassifier, num_in_ch: 3, num_degradations: 3, num_feat: 32, num_blocks: 4}
    train:
      optim_g: {type: Adam, lr: 1.0e-3}
      scheduler: {type: MultiStepLR, milestones: [...], gamma: 0.5}
      label_smoothing: 0.0          # torch's CrossEntropyLoss argument
      ce_weight: 1.0                # weight of the cross-entropy term
    val:
      val_freq: 100
"""
import csv
import io
import json
from collections import OrderedDict
from os import path as osp

import torch
from torch.nn import functional as F

from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.models.model_mixins import SafeCheckpointMixin, check_finite_losses
from uniremoval.utils.atomic_io import atomic_open


def confusion_matrix(true, pred, num_classes):
    """k x k int64 matrix: ``m[t, p]`` counts samples of true class ``t`` predicted as ``p``."""
    true = torch.as_tensor(true, dtype=torch.long).flatten()
    pred = torch.as_tensor(pred, dtype=torch.long).flatten()
    if true.numel() != pred.numel():
        raise ValueError(f'confusion_matrix: {true.numel()} labels but {pred.numel()} predictions')
    if true.numel() and (int(true.min()) < 0 or int(true.max()) >= num_classes or int(pred.min()) < 0
                         or int(pred.max()) >= num_classes):
        raise ValueError(f'confusion_matrix: labels and predictions must lie in [0, {num_classes}), got '
                         f'{true.unique().tolist()} and {pred.unique().tolist()}')
    return torch.bincount(true * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy_report(matrix, names):
    """``{'accuracy': overall, 'per_type': {name: accuracy or None}, 'counts': {name: n}, 'confusion': [[...]],
    'types': names}`` of a confusion matrix (a type without samples has accuracy ``None``)."""
    matrix = torch.as_tensor(matrix, dtype=torch.long)
    total = int(matrix.sum())
    rows = matrix.sum(1)
    per_type = {name: (float(matrix[i, i]) / int(rows[i]) if int(rows[i]) else None) for i, name in enumerate(names)}
    return {
        'accuracy': float(matrix.diag().sum()) / total if total else None,
        'per_type': per_type,
        'counts': {name: int(rows[i]) for i, name in enumerate(names)},
        'types': list(names),
        'confusion': matrix.tolist(),
    }


def write_confusion(report, json_path, csv_path):
    """Write an :func:`accuracy_report` as JSON and as a CSV confusion matrix (rows true, columns predicted),
    each through a temporary file renamed into place."""
    with atomic_open(json_path, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=1)
        f.write('\n')
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['true \\ predicted'] + report['types'] + ['accuracy'])
    for name, row in zip(report['types'], report['confusion']):
        acc = report['per_type'][name]
        writer.writerow([name] + row + ['' if acc is None else f'{acc:.4f}'])
    with atomic_open(csv_path, 'w', encoding='utf-8', newline='') as f:
        f.write(buf.getvalue())


@MODEL_REGISTRY.register()
class DegradationClassifierModel(SafeCheckpointMixin, BaseModel):
    """Cross-entropy training of a degradation-type classifier (``network_g`` returns logits (B, k))."""

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = self.model_to_device(build_network(opt['network_g']))
        self.print_network(self.net_g)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g, load_path, self.opt['path'].get('strict_load_g', True),
                              self.opt['path'].get('param_key_g', 'params'))
        self.num_types = self.get_bare_model(self.net_g).num_degradations \
            if hasattr(self.get_bare_model(self.net_g), 'num_degradations') else opt['network_g']['num_degradations']
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.label_smoothing = float(train_opt.get('label_smoothing', 0.0))
        self.ce_weight = float(train_opt.get('ce_weight', 1.0))
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)
        self.setup_schedulers()

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'label' in data:
            label = torch.as_tensor(data['label'], dtype=torch.long)
            if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.num_types):
                raise ValueError(f'DegradationClassifierModel: sample labels {label.unique().tolist()} outside '
                                 f'[0, {self.num_types}) (network_g num_degradations); the dataset has more types '
                                 'than the classifier has outputs')
            self.label = label.to(self.device)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        logits = self.net_g(self.lq)
        l_ce = self.ce_weight * F.cross_entropy(logits, self.label, label_smoothing=self.label_smoothing)
        check_finite_losses({'l_ce': l_ce}, current_iter, self.opt, lrs=self.get_current_learning_rate())
        l_ce.backward()
        self.optimizer_g.step()
        acc = (logits.detach().argmax(1) == self.label).float().mean()
        self.log_dict = self.reduce_loss_dict(OrderedDict(l_ce=l_ce, acc=acc))

    def predict(self, lq):
        """Softmax probabilities (B, k) for [0, 1] images ``lq``, in eval mode without autograd."""
        was_training = self.net_g.training
        self.net_g.eval()
        with torch.no_grad():
            probs = F.softmax(self.net_g(lq.to(self.device)), dim=1)
        self.net_g.train(was_training)
        return probs

    def test(self):
        self.probs = self.predict(self.lq)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        names = list(getattr(dataset, 'labels', None) or [str(i) for i in range(self.num_types)])
        if len(names) != self.num_types:
            raise ValueError(f'DegradationClassifierModel: validation set {dataset_name} has {len(names)} types '
                             f'{names} but the classifier predicts {self.num_types}')
        trues, preds = [], []
        for val_data in dataloader:
            self.feed_data(val_data)
            self.test()
            trues.append(self.label.cpu())
            preds.append(self.probs.argmax(1).cpu())
            del self.lq, self.label, self.probs
        self.confusion = confusion_matrix(torch.cat(trues), torch.cat(preds), self.num_types)
        report = accuracy_report(self.confusion, names)
        report.update(dataset=dataset_name, iter=current_iter)
        self.accuracy_report = report
        self.metric_results = {'accuracy': report['accuracy']}

        tag = current_iter if self.opt['is_train'] else self.opt['name']
        folder = osp.join(self.opt['path']['visualization'], dataset_name)
        write_confusion(report, osp.join(folder, f'confusion_{tag}.json'), osp.join(folder, f'confusion_{tag}.csv'))

        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        best = self.best_metric_results.setdefault(
            dataset_name, {'accuracy': dict(better='higher', val=float('-inf'), iter=-1)})['accuracy']
        if report['accuracy'] >= best['val']:
            best.update(val=report['accuracy'], iter=current_iter)
        log = [f'Validation {dataset_name}: accuracy {report["accuracy"]:.4f} (best {best["val"]:.4f} '
               f'@ {best["iter"]} iter)']
        for name in names:
            acc = report['per_type'][name]
            log.append(f'\t [{name}] accuracy {"-" if acc is None else f"{acc:.4f}"} '
                       f'({report["counts"][name]} images)')
        log.append('\t confusion (rows true, columns predicted; ' + ', '.join(names) + '):')
        log += ['\t   ' + ' '.join(f'{v:5d}' for v in row) for row in report['confusion']]
        get_root_logger().info('\n'.join(log))
        if tb_logger:
            tb_logger.add_scalar(f'metrics/{dataset_name}/accuracy', report['accuracy'], current_iter)
            for name, acc in report['per_type'].items():
                if acc is not None:
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{name}/accuracy', acc, current_iter)

    def save(self, epoch, current_iter):
        self.save_network(self.net_g, 'net_g', current_iter)
        self.save_training_state(epoch, current_iter)
