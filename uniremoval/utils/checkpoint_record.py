"""The record a checkpoint keeps of what it was trained for (issue [13]): network options, pixel range,
degradation types.

The record is a plain dict (str / int / float / bool / list / dict only, so
``torch.load(weights_only=True)`` reads it) stored under :data:`RECORD_KEY` next to ``params`` /
``params_ema``. BasicSR's ``BaseModel.load_network`` reads only ``load_net[param_key]`` and ignores
every other key, so a checkpoint with a record loads as before.

``make_record(opt)`` builds it from a training option dict; ``read_record(ckpt)`` returns it (or None
for a checkpoint without one, e.g. an official state_dict); ``merge_setting`` decides one setting from
the record, the option file and a flag, raising :class:`RecordConflict` naming both values when they
disagree.
"""
from uniremoval.utils.errors import UsageError

RECORD_KEY = 'uniremoval_record'
RECORD_VERSION = 1
PLAIN = (str, int, float, bool, type(None))


class RecordConflict(UsageError, ValueError):
    """An option file or flag contradicts the checkpoint's record, or a record is malformed."""


def _plain(value, where):
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f'{where}:{k}') for k, v in value.items()}
    raise RecordConflict(f'checkpoint record: {where} is a {type(value).__name__}, expected a plain value')


def degradation_types(opt):
    """Source names of the training set's ``sources`` (the degradation types), in order; [] if none."""
    train = ((opt.get('datasets') or {}).get('train') or {})
    return [s.get('name') for s in train.get('sources') or [] if isinstance(s, dict) and s.get('name')]


def make_record(opt):
    """The record of training options ``opt``: version, ``network_g``, ``pixel_range``, degradation types,
    and ``network_c`` (an ADS classifier's options) where ``opt`` has one."""
    record = {'version': RECORD_VERSION,
              'network_g': _plain(dict(opt['network_g']), 'network_g'),
              'pixel_range': [float(v) for v in (opt.get('pixel_range') or [0, 1])],
              'degradation_types': degradation_types(opt)}
    if isinstance(opt.get('network_c'), dict):
        record['network_c'] = _plain(dict(opt['network_c']), 'network_c')
    return record


def read_record(checkpoint, where='checkpoint'):
    """The record of a loaded checkpoint dict, or None if it has none; checks its version and keys."""
    if not isinstance(checkpoint, dict) or RECORD_KEY not in checkpoint:
        return None
    record = checkpoint[RECORD_KEY]
    if not isinstance(record, dict) or record.get('version') != RECORD_VERSION:
        raise RecordConflict(f'{where}: {RECORD_KEY} is not a version {RECORD_VERSION} record: {record!r:.200}')
    if not isinstance(record.get('network_g'), dict) or 'type' not in record['network_g']:
        raise RecordConflict(f'{where}: {RECORD_KEY}:network_g must be a mapping with a type')
    pixel_range = record.get('pixel_range')
    if not (isinstance(pixel_range, list) and len(pixel_range) == 2):
        raise RecordConflict(f'{where}: {RECORD_KEY}:pixel_range must be [low, high], got {pixel_range!r}')
    return record


def merge_setting(name, recorded, from_file=None, from_flag=None, where='checkpoint', file_name='option file'):
    """One setting from the record (``recorded``), the option file and a flag (None: not given).

    The flag wins over the option file, either over nothing; with a record, any given value must equal
    it, otherwise :class:`RecordConflict` names both values.
    """
    given, source = (from_flag, 'flag') if from_flag is not None else (from_file, file_name)
    if recorded is None:
        return given
    if given is not None and _same(given) != _same(recorded):
        raise RecordConflict(f'{name}: {source} gives {given!r} but {where} was trained with {recorded!r}')
    return recorded


def _same(value):
    if isinstance(value, (list, tuple)):
        return [_same(v) for v in value]
    if isinstance(value, dict):
        return {k: _same(v) for k, v in value.items()}
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
