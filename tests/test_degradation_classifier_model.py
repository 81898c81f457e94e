"""DegradationClassifierModel (ADS step 3): cross-entropy on MultiDegradationDataset's type labels,
accuracy per type and confusion matrix in validation (logged and written as JSON/CSV)."""
import csv
import json
import os
from os import path as osp

import pytest
import torch
import yaml
from test_ads_model import KINDS, rbn_dataset, write_rbn

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from uniremoval.models.degradation_classifier_model import accuracy_report, confusion_matrix
from uniremoval.options import parse_options


def test_confusion_matrix_and_report_known_answer():
    m = confusion_matrix([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2], 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    report = accuracy_report(m, ['rain', 'blur', 'noise'])
    assert report['accuracy'] == pytest.approx(5 / 7)
    assert report['per_type'] == pytest.approx({'rain': 0.5, 'blur': 1.0, 'noise': 2 / 3})
    assert report['counts'] == {'rain': 2, 'blur': 2, 'noise': 3}
    assert accuracy_report(confusion_matrix([1], [1], 3), KINDS)['per_type']['rain'] is None
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        confusion_matrix([0, 3], [0, 0], 3)


@pytest.fixture(scope='module')
def rbn(tmp_path_factory):
    root = tmp_path_factory.mktemp('rbn_cls')
    return {'train': write_rbn(str(root / 'train'), 3, seed=3), 'val': write_rbn(str(root / 'val'), 2, seed=4)}


def classifier_model(tmp_path, rbn):
    opt = {
        'name': 'cls_test', 'model_type': 'DegradationClassifierModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': rbn_dataset(rbn['train'], 'rbn_train'), 'val': rbn_dataset(rbn['val'], 'rbn_val', 'val')},
        'network_g': {'type': 'DegradationClassifier', 'num_in_ch': 3, 'num_degradations': 3, 'num_feat': 8,
                      'num_blocks': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 5e-3}, 'total_iter': 30, 'warmup_iter': -1,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}},
        'val': {'val_freq': 30},
        'logger': {'print_freq': 10, 'save_checkpoint_freq': 30, 'use_tb_logger': False},
    }
    path = osp.join(str(tmp_path), 'cls.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    opt, _ = parse_options(['-opt', path], root_path=str(tmp_path), is_train=True)
    for key in ('models', 'training_states', 'visualization'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return build_model(opt), opt


def test_cross_entropy_decreases_and_validation_writes_confusion(tmp_path, rbn):
    torch.manual_seed(0)
    model, opt = classifier_model(tmp_path, rbn)
    dataset = build_dataset(dict(opt['datasets']['train']))
    samples = [dataset[i] for i in range(len(dataset))]
    data = {'lq': torch.stack([s['lq'] for s in samples]), 'label': torch.tensor([s['label'] for s in samples])}
    # the dataset's labels are the positions of the sources: rain 0, blur 1, noise 2
    assert [(s['label'], s['degradation']) for s in samples[:3]] == list(enumerate(KINDS))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model.net_g(data['lq']), data['label']).item()
    losses = []
    for it in range(25):
        model.feed_data(data)
        model.optimize_parameters(it + 1)
        losses.append(model.log_dict['l_ce'])
    assert losses[0] == pytest.approx(expected, rel=1e-5)  # plain cross-entropy on the type label
    assert losses[-1] < 0.7 * losses[0]  # 1.10 -> 0.59 when written

    val_opt = dict(opt['datasets']['val'])
    loader = build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False)
    model.validation(loader, 25, None, False)
    report = model.accuracy_report
    folder = osp.join(opt['path']['visualization'], 'rbn_val')
    with open(osp.join(folder, 'confusion_25.json')) as f:
        on_disk = json.load(f)
    assert on_disk['confusion'] == report['confusion'] == model.confusion.tolist()
    assert on_disk['counts'] == {k: 2 for k in KINDS}
    assert sum(map(sum, report['confusion'])) == 6
    diag = sum(report['confusion'][i][i] for i in range(3))
    assert report['accuracy'] == pytest.approx(diag / 6) == model.metric_results['accuracy']
    with open(osp.join(folder, 'confusion_25.csv')) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['true \\ predicted', *KINDS, 'accuracy']
    assert [list(map(int, r[1:4])) for r in rows[1:]] == report['confusion']
    assert model.best_metric_results['rbn_val']['accuracy']['iter'] == 25


def test_save_and_reload_predicts_the_same(tmp_path, rbn):
    model, opt = classifier_model(tmp_path, rbn)
    model.save(0, 7)
    ckpt = osp.join(opt['path']['models'], 'net_g_7.pth')
    from uniremoval.restoration import load_network
    net = load_network(ckpt, opt['network_g'], param_key='params')
    x = torch.rand(2, 3, 20, 20)
    assert torch.equal(torch.softmax(net(x), 1), model.predict(x))


def test_nan_loss_stops_before_the_step(tmp_path, rbn):
    from uniremoval.models.model_mixins import NonFiniteLossError
    model, _ = classifier_model(tmp_path, rbn)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.feed_data({'lq': torch.full((3, 3, 24, 24), float('nan')), 'label': torch.tensor([0, 1, 2])})
    with pytest.raises(NonFiniteLossError, match='iteration 3: loss term l_ce = nan'):
        model.optimize_parameters(3)
    assert all(torch.equal(model.net_g.state_dict()[k], v) for k, v in before.items())
