"""Pack image datasets into BasicSR-style LMDBs, safely.

The engine behind ``datasets_prep/pack.py`` (an offline tool: nothing at training time uses it). A
dataset layout becomes a list of :class:`Item` (an lq image, its gt image or ``None`` for unpaired data,
an LMDB key and a *group*, the source image the split keeps together), and :func:`pack` writes them.

Output, exactly the format of BasicSR's ``basicsr/utils/lmdb_util.py`` (read by BasicSR's
``PairedImageDataset`` with ``io_backend: {type: lmdb}`` and by ``MultiDegradationDataset``)::

    <out>/<split>_lq.lmdb/{data.mdb, lock.mdb, meta_info.txt}    paired data
    <out>/<split>_gt.lmdb/{data.mdb, lock.mdb, meta_info.txt}    (same keys, same order)
    <out>/<split>.lmdb/{data.mdb, lock.mdb, meta_info.txt}       unpaired data

Each value is the PNG encoding (``compress_level``) of the image as BasicSR's ``imfrombytes``
decodes the source file (8-bit BGR), so the LMDB yields exactly the pixels the disk backend would.
``meta_info.txt`` has one line ``<key>.png (<h>,<w>,<c>) <compress_level>`` per image; BasicSR reads
the key back as the text before the first ``.``, so keys use ``[A-Za-z0-9_-]`` only
(:func:`sanitize_key`: ``0001_0.8_0.2`` -> ``0001_0p8_0p2``, any other character ``_``).

Sub-images (``crop=CropSpec(size, step, thresh)``) follow BasicSR's ``extract_subimages.py``
(keys ``<key>_s001``, ...; lq and gt cropped at the same places). Every LMDB is written into a
hidden temporary folder next to its destination and renamed into place only when all outputs of the
run are complete, so a failed run leaves no output (details: docs/design.md, "LMDB packing").
Existing outputs are refused unless ``overwrite``; bad inputs stop the run with the offending file
names, or are skipped and reported with ``skip_bad``.
"""
import os
import random
import re
import shutil
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from multiprocessing import get_context
from os import path as osp
from typing import List, Optional, Sequence

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

try:  # header-only size checks (a dependency of torchvision and scikit-image)
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
MAX_LISTED = 20  # problems quoted in an error message
TMP_TAG = '.tmp-'


class PackError(Exception):
    """A dataset cannot be packed as asked (bad pairs, existing outputs, bad options)."""


@dataclass(frozen=True)
class Item:
    """One source image (pair) to pack.

    Attributes:
        key (str): LMDB key (sanitized by :func:`pack`); sub-images get ``_sNNN`` suffixes.
        lq (str): path of the lq image (the only image for unpaired data).
        gt (str | None): path of the gt image, ``None`` for unpaired data.
        group (str): what the train/val split keeps together (default: the gt, else the lq path),
            e.g. all hazy versions of one clear image.
    """
    key: str
    lq: str
    gt: Optional[str] = None
    group: Optional[str] = None

    @property
    def group_id(self):
        return self.group if self.group is not None else (self.gt if self.gt is not None else self.lq)


@dataclass(frozen=True)
class CropSpec:
    """Sub-image extraction: ``size`` x ``size`` crops every ``step`` pixels (BasicSR semantics)."""
    size: int
    step: int
    thresh: int = 0

    def __post_init__(self):
        for name in ('size', 'step'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PackError(f'crop {name} must be a positive integer, got {value!r}.')
        if not isinstance(self.thresh, int) or self.thresh < 0:
            raise PackError(f'crop thresh_size must be a non-negative integer, got {self.thresh!r}.')


@dataclass
class PackReport:
    """What :func:`pack` wrote: per split, the output folders and counts; the skipped problems."""
    outputs: dict = field(default_factory=dict)  # split -> list of LMDB paths
    sources: dict = field(default_factory=dict)  # split -> number of source items written
    entries: dict = field(default_factory=dict)  # split -> number of LMDB keys (sub-images)
    skipped: List[str] = field(default_factory=list)
    removed_leftovers: List[str] = field(default_factory=list)

    def summary(self):
        lines = []
        for split, paths in self.outputs.items():
            lines.append(f'{split}: {self.sources[split]} source images -> {self.entries[split]} keys in '
                         + ', '.join(paths))
        for path in self.removed_leftovers:
            lines.append(f'removed a leftover temporary folder of an interrupted run: {path}')
        if self.skipped:
            lines.append(f'skipped {len(self.skipped)} bad item(s) (--skip-bad):')
            lines.extend(f'  {p}' for p in self.skipped)
        return '\n'.join(lines)


# ---------------------------------------------------------------------------------------- helpers
def listing(problems, limit=MAX_LISTED):
    """The first ``limit`` problems, one per line, and how many there are."""
    shown = '\n'.join(f'  {p}' for p in problems[:limit])
    more = f'\n  ... ({len(problems)} in all)' if len(problems) > limit else ''
    return shown + more


def sanitize_key(name):
    """An LMDB key BasicSR can read back from ``meta_info.txt``: ``.`` -> ``p``, others -> ``_``."""
    key = name.replace('.', 'p')
    return re.sub(r'[^A-Za-z0-9_-]', '_', key)


def is_image(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_images(folder, recursive=False):
    """Sorted paths (relative to ``folder``, ``/``-separated) of the images in ``folder``."""
    if not osp.isdir(folder):
        raise PackError(f'folder not found: {folder}')
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            rel = osp.relpath(root, folder)
            for name in files:
                if is_image(name) and not name.startswith('.'):
                    found.append(name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/'))
    else:
        found = [n for n in os.listdir(folder)
                 if is_image(n) and not n.startswith('.') and osp.isfile(osp.join(folder, n))]
    return sorted(found)


def default_workers():
    return max(1, min(4, os.cpu_count() or 1))


def crop_positions(h, w, crop):
    """Top-left corners ``(y, x)`` of the sub-images of an ``h`` x ``w`` image (BasicSR's rule)."""
    def axis(length):
        starts = list(range(0, length - crop.size + 1, crop.step))
        if length - (starts[-1] + crop.size) > crop.thresh:
            starts.append(length - crop.size)
        return starts
    return [(y, x) for y in axis(h) for x in axis(w)]


def decode_image(path):
    """The image at ``path`` as BasicSR's ``imfrombytes`` decodes it; :class:`ValueError` if unreadable."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f'{path}: cannot read the file ({err})') from err
    img = None
    if buf.size:
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        except cv2.error:
            img = None
    if img is None:
        raise ValueError(f'{path}: corrupt, empty or not a decodable image')
    return img


def probe_size(path):
    """``(h, w)`` of the image at ``path`` from its header (PIL), else by decoding it; ValueError if unreadable."""
    if Image is not None:
        try:
            with Image.open(path) as img:
                w, h = img.size
            return h, w
        except FileNotFoundError:
            raise ValueError(f'{path}: file not found') from None
        except Exception:  # noqa: BLE001  (PIL cannot parse it: let OpenCV try, as the loader would)
            pass
    return decode_image(path).shape[:2]


def encode_png(img, level):
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise RuntimeError('cv2.imencode failed to encode a PNG')
    return buf.tobytes()


def shape_of(img):
    return (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])


# ---------------------------------------------------------------------------------------- workers
_OPTS = {}


def _init_worker(opts, in_pool=True):
    _OPTS.clear()
    _OPTS.update(opts)
    _OPTS['cache'] = {}
    if in_pool:
        cv2.setNumThreads(1)  # the pool is the parallelism


def _probe(item):
    """Check one item from image headers only: None if fine, else the problem."""
    crop, cache = _OPTS['crop'], _OPTS['cache']
    try:
        h, w = probe_size(item.lq)
        if item.gt is not None:
            if item.gt not in cache:
                cache.clear()
                cache[item.gt] = probe_size(item.gt)
            gh, gw = cache[item.gt]
    except ValueError as err:
        return str(err)
    if item.gt is not None:
        fits = (gh >= h and gw >= w) if _OPTS['gt_center_crop'] else (gh, gw) == (h, w)
        if not fits:
            return f'size mismatch: lq {item.lq} is {h}x{w} (HxW) but gt {item.gt} is {gh}x{gw}'
    if crop is not None and (h < crop.size or w < crop.size):
        return f'{item.lq}: {h}x{w} (HxW) is smaller than the crop size {crop.size}'
    return None


def _pieces(img, positions, crop, level):
    if crop is None:
        return [(shape_of(img), encode_png(img, level))]
    out = []
    for y, x in positions:
        sub = np.ascontiguousarray(img[y:y + crop.size, x:x + crop.size, ...])
        out.append((shape_of(sub), encode_png(sub, level)))
    return out


def _gt_pieces(path, lq_hw, positions, crop, level, center_crop):
    """Encoded gt pieces, cached for the last gt (many lq images share one gt, e.g. RESIDE OTS)."""
    cache = _OPTS['cache']
    cache_key = (path, lq_hw, tuple(positions) if positions else None)
    if cache_key in cache:
        return cache[cache_key]
    img = decode_image(path)
    h, w = img.shape[:2]
    if center_crop and (h, w) != lq_hw and h >= lq_hw[0] and w >= lq_hw[1]:
        top, left = (h - lq_hw[0]) // 2, (w - lq_hw[1]) // 2
        img = img[top:top + lq_hw[0], left:left + lq_hw[1], ...]
    if img.shape[:2] != lq_hw:
        return None, img.shape[:2]
    pieces = _pieces(img, positions, crop, level)
    cache.clear()
    cache[cache_key] = (pieces, lq_hw)
    return pieces, lq_hw


def _process(item):
    """Decode, check, crop and encode one item: ``(entries, problem)``, exactly one of them None."""
    crop, level = _OPTS['crop'], _OPTS['compress_level']
    try:
        lq = decode_image(item.lq)
    except ValueError as err:
        return None, str(err)
    h, w = lq.shape[:2]
    positions = None
    if crop is not None:
        if h < crop.size or w < crop.size:
            return None, f'{item.lq}: {h}x{w} (HxW) is smaller than the crop size {crop.size}'
        positions = crop_positions(h, w, crop)
    gt_pieces = None
    if item.gt is not None:
        try:
            gt_pieces, gt_hw = _gt_pieces(item.gt, (h, w), positions, crop, level, _OPTS['gt_center_crop'])
        except ValueError as err:
            return None, str(err)
        if gt_pieces is None:
            return None, (f'size mismatch: lq {item.lq} is {h}x{w} (HxW) but gt {item.gt} is '
                          f'{gt_hw[0]}x{gt_hw[1]}')
    lq_pieces = _pieces(lq, positions, crop, level)
    entries = []
    for i, (shape, lq_bytes) in enumerate(lq_pieces):
        key = item.key if crop is None else f'{item.key}_s{i + 1:03d}'
        gt_entry = gt_pieces[i] if gt_pieces is not None else (None, None)
        entries.append((key, shape, lq_bytes, gt_entry[0], gt_entry[1]))
    return entries, None


# ---------------------------------------------------------------------------------------- writer
def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final_path):
    """Remove temporary folders of ``final_path`` left by runs whose process is gone; return them."""
    folder, name = osp.split(osp.abspath(final_path))
    removed = []
    if not osp.isdir(folder):
        return removed
    pattern = re.compile(r'^\.' + re.escape(name) + re.escape(TMP_TAG) + r'(\d+)-[0-9a-f]+$')
    for entry in sorted(os.listdir(folder)):
        match = pattern.match(entry)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(osp.join(folder, entry), ignore_errors=True)
            removed.append(osp.join(folder, entry))
    return removed


class LmdbWriter:
    """Writes one BasicSR LMDB under a temporary name; :meth:`finalize` renames it into place.

    Values are committed in batches (``batch`` entries or ``batch_bytes``); the map grows
    (doubles) whenever it is full, so ``map_size`` is only a starting point.
    """

    def __init__(self, final_path, compress_level=1, map_size=1 << 30, batch=1000, batch_bytes=256 << 20):
        if not final_path.endswith('.lmdb'):
            raise PackError(f"an LMDB path must end with '.lmdb', got {final_path}")
        self.final_path = osp.abspath(final_path)
        folder, name = osp.split(self.final_path)
        self.tmp_path = osp.join(folder, f'.{name}{TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}')
        self.compress_level = compress_level
        self.batch, self.batch_bytes = batch, batch_bytes
        self.pending, self.pending_bytes = [], 0
        self.count = 0
        self.keys = set()
        self.claimed = False
        os.makedirs(folder, exist_ok=True)
        self.env = lmdb.open(self.tmp_path, map_size=map_size, subdir=True, meminit=False)
        self.meta = open(osp.join(self.tmp_path, 'meta_info.txt'), 'w')

    def put(self, key, value, shape):
        if key in self.keys:
            raise PackError(f'duplicate LMDB key {key!r} in {self.final_path}')
        self.keys.add(key)
        self.pending.append((key.encode('ascii'), value))
        self.pending_bytes += len(value)
        h, w, c = shape
        self.meta.write(f'{key}.png ({h},{w},{c}) {self.compress_level}\n')
        self.count += 1
        if len(self.pending) >= self.batch or self.pending_bytes >= self.batch_bytes:
            self.commit()

    def commit(self):
        if not self.pending:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()['map_size'] * 2)
        self.pending, self.pending_bytes = [], 0

    def close(self):
        """Commit what is pending and close (the data stays under the temporary name)."""
        if self.env is None:
            return
        self.commit()
        self.meta.close()
        self.env.sync(True)
        self.env.close()
        self.env = None

    def abort(self):
        """Drop everything written: close and remove the temporary folder."""
        try:
            if self.env is not None:
                self.meta.close()
                self.env.close()
                self.env = None
        finally:
            shutil.rmtree(self.tmp_path, ignore_errors=True)

    def claim(self):
        """Take the final name without replacing anything: create it as an empty folder (``mkdir`` fails
        if the name exists, whichever run made it). :meth:`finalize` then renames the LMDB onto that empty
        folder; a folder that something filled meanwhile makes that rename fail (``ENOTEMPTY``)."""
        try:
            os.mkdir(self.final_path)
        except FileExistsError:
            raise PackError(f'output appeared while packing (another run into the same --out?), not replaced: '
                            f'{self.final_path}') from None
        self.claimed = True

    def unclaim(self):
        """Remove the empty folder made by :meth:`claim` (after a failure before :meth:`finalize`)."""
        if getattr(self, 'claimed', False):
            try:
                os.rmdir(self.final_path)
            except OSError:
                pass
            self.claimed = False

    def finalize(self):
        """Rename the complete temporary LMDB to its final name: onto the folder taken by :meth:`claim`, or
        replacing an existing one (overwrite)."""
        self.close()
        old = None
        if getattr(self, 'claimed', False):
            try:
                os.rename(self.tmp_path, self.final_path)
            except OSError as e:
                raise PackError(f'output appeared while packing, not replaced: {self.final_path} ({e.strerror})'
                                ) from None
            self.claimed = False
            return
        if osp.exists(self.final_path):
            old = f'{self.tmp_path}-old'
            os.rename(self.final_path, old)
        os.rename(self.tmp_path, self.final_path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- split
def split_groups(groups, val_fraction=None, val_count=None, seed=0):
    """The set of groups held out for validation: a seeded shuffle of the sorted groups, first ``n``."""
    if val_fraction is None and val_count is None:
        return set()
    if val_fraction is not None and val_count is not None:
        raise PackError('give either a validation fraction or a validation count, not both.')
    groups = sorted(set(groups))
    if val_fraction is not None:
        if not 0 < val_fraction < 1:
            raise PackError(f'the validation fraction must be in (0, 1), got {val_fraction}.')
        n_val = max(1, int(round(val_fraction * len(groups))))
    else:
        if val_count < 1:
            raise PackError(f'the validation count must be positive, got {val_count}.')
        n_val = val_count
    if n_val >= len(groups):
        raise PackError(f'cannot hold out {n_val} source image(s) for validation: there are only '
                        f'{len(groups)} (at least one must stay in training).')
    random.Random(seed).shuffle(groups)
    return set(groups[:n_val])


def output_paths(out, split, paired):
    if paired:
        return [osp.join(out, f'{split}_lq.lmdb'), osp.join(out, f'{split}_gt.lmdb')]
    return [osp.join(out, f'{split}.lmdb')]


# ---------------------------------------------------------------------------------------- pack
def pack(items: Sequence[Item],
         out,
         split='train',
         *,
         paired=True,
         problems=(),
         crop: Optional[CropSpec] = None,
         val_fraction=None,
         val_count=None,
         val_split='val',
         seed=0,
         compress_level=1,
         workers=None,
         skip_bad=False,
         overwrite=False,
         gt_center_crop=False,
         progress=True,
         map_size=1 << 30):
    """Write ``items`` into BasicSR LMDBs under ``out``; see the module docstring.

    The stages, each a function below: check the options (:func:`_check_options`), sanitize the
    keys (:func:`_plan_items`), refuse existing outputs (:func:`_refuse_existing`), check every item
    from its image headers (:func:`_drop_bad_items`), hold groups out for validation
    (:func:`_split_items`), remove temporary folders of killed runs, then read, crop and write each
    split into LMDBs (and their ``meta_info.txt``) under temporary names and rename them all into
    place once every one is complete (:func:`_write_outputs`).

    Args:
        items: the source images (pairs), e.g. from a layout reader of ``datasets_prep/pack.py``.
        out (str): output folder (created if needed).
        split (str): name of the main split: ``<out>/<split>_{lq,gt}.lmdb`` (``<split>.lmdb`` unpaired).
        paired (bool): items carry a gt (two LMDBs with identical keys) or not (one LMDB).
        problems: problems already found while listing (e.g. a missing counterpart).
        crop: sub-image extraction, or None to store whole images.
        val_fraction, val_count: hold this fraction / number of groups (source images) out
            into ``val_split``, chosen by a shuffle seeded with ``seed``.
        compress_level (int): PNG compression 0-9 (BasicSR's default is 1).
        workers (int): decoding/encoding processes (1: in this process). Default: min(4, cpus).
        skip_bad (bool): skip bad items and report them instead of stopping.
        overwrite (bool): replace existing outputs instead of refusing.
        gt_center_crop (bool): center-crop a gt that is larger than its lq to the lq size.
        progress (bool): show tqdm progress bars.
        map_size (int): initial LMDB map size in bytes (grows when full).

    Returns:
        PackReport

    Raises:
        PackError: bad options, existing outputs, bad items (without ``skip_bad``), nothing to pack.
    """
    splitting = val_fraction is not None or val_count is not None
    workers = _check_options(split, val_split, splitting, compress_level, workers)
    items, report = _plan_items(items, paired, problems, skip_bad)

    split_names = [split, val_split] if splitting else [split]
    targets = {s: output_paths(out, s, paired) for s in split_names}
    _refuse_existing(targets, overwrite)

    opts = dict(crop=crop, compress_level=compress_level, gt_center_crop=gt_center_crop)  # the workers' options
    items = _drop_bad_items(items, opts, workers, progress, skip_bad, report)
    by_split = _split_items(items, split, val_split if splitting else None, val_fraction, val_count, seed)

    for paths in targets.values():
        for p in paths:
            report.removed_leftovers += remove_stale_temps(p)
    _write_outputs(by_split, targets, out, paired, opts, workers, progress, skip_bad, map_size, report,
                   overwrite=overwrite)
    return report


def _check_options(split, val_split, splitting, compress_level, workers):
    """Check the options that need no item; return the number of worker processes."""
    if not 0 <= compress_level <= 9:
        raise PackError(f'the PNG compression level must be 0-9, got {compress_level}.')
    for name in (split, val_split):
        if not re.fullmatch(r'[A-Za-z0-9_.-]+', name or ''):
            raise PackError(f'split names may hold only letters, digits, ".", "_" and "-", got {name!r}.')
    if splitting and val_split == split:
        raise PackError(f'the validation split needs a name other than {split!r}.')
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise PackError(f'workers must be at least 1, got {workers}.')
    return workers


def _plan_items(items, paired, problems, skip_bad):
    """The items with sanitized, unique keys, and a :class:`PackReport` that lists ``problems`` as skipped.

    Refuses items without a gt in ``paired`` mode, listing ``problems`` (without ``skip_bad``), keys
    that several images would share and an empty list.
    """
    items = list(items)
    if paired and any(it.gt is None for it in items):
        raise PackError('paired packing needs a gt for every item.')

    problems = list(problems)
    if problems and not skip_bad:
        raise PackError(f'{len(problems)} bad item(s) (pass --skip-bad to leave them out):\n{listing(problems)}')
    report = PackReport(skipped=problems)

    items = [Item(sanitize_key(it.key), it.lq, it.gt, it.group_id) for it in items]
    seen = {}
    for it in items:
        seen.setdefault(it.key, []).append(it.lq)
    clashes = [f'key {k!r}: ' + ', '.join(v) for k, v in seen.items() if len(v) > 1]
    if clashes:
        raise PackError(f'{len(clashes)} LMDB key(s) would be shared by several images:\n{listing(clashes)}')
    if not items:
        raise PackError('nothing to pack: no images found' + (' (all were bad)' if problems else '') + '.')
    return items, report


def _refuse_existing(targets, overwrite):
    """Refuse outputs that exist already (``targets``: split -> LMDB paths) unless ``overwrite``, before any work."""
    existing = [p for paths in targets.values() for p in paths if osp.exists(p)]
    if existing and not overwrite:
        raise PackError('output already exists (pass --overwrite to replace it): ' + ', '.join(existing))


def _drop_bad_items(items, opts, workers, progress, skip_bad, report):
    """Check every item from its image headers and return the good ones.

    The complete list of bad items is known before anything is written: it stops the run, or with
    ``skip_bad`` is added to ``report.skipped``.
    """
    with closing(_run(_probe, items, opts, workers, 'check', progress)) as results:
        bad = [(it, problem) for it, problem in zip(items, results) if problem is not None]
    if bad and not skip_bad:
        raise PackError(f'{len(bad)} bad item(s) (pass --skip-bad to leave them out):\n'
                        f'{listing([p for _, p in bad])}')
    report.skipped += [p for _, p in bad]
    bad_items = {it for it, _ in bad}
    items = [it for it in items if it not in bad_items]
    if not items:
        raise PackError('nothing to pack: every item is bad.')
    return items


def _split_items(items, split, val_split, val_fraction, val_count, seed):
    """``{split name: items sorted by key}``; groups held out by :func:`split_groups` go to ``val_split``.

    ``val_split`` is None when nothing is held out.
    """
    held_out = split_groups([it.group_id for it in items], val_fraction, val_count, seed)
    by_split = {split: sorted((it for it in items if it.group_id not in held_out), key=lambda it: it.key)}
    if val_split is not None:
        by_split[val_split] = sorted((it for it in items if it.group_id in held_out), key=lambda it: it.key)
    return by_split


def _write_outputs(by_split, targets, out, paired, opts, workers, progress, skip_bad, map_size, report,
                   overwrite=False):
    """Write every split under temporary names, then rename all of them into place.

    Without ``overwrite`` every final name is first taken (:meth:`LmdbWriter.claim`), so an output that
    another run made meanwhile is refused, not replaced. Any failure (or interruption) removes every
    temporary LMDB, and ``out`` if this run created it
    and left it empty, so existing outputs stay untouched.
    """
    created_out = not osp.isdir(out)
    writers = []
    try:
        for s, split_items in by_split.items():
            _write_split(s, split_items, targets[s], paired, opts, workers, progress, skip_bad, map_size, writers,
                         report)
        for writer in writers:
            writer.close()
        if not overwrite:  # outputs that appeared since the start are refused, never replaced
            for writer in writers:
                writer.claim()
        for writer in writers:
            writer.finalize()
    except BaseException:
        for writer in writers:
            writer.unclaim()
            writer.abort()
        if created_out:
            try:
                os.rmdir(out)  # only if this run created it and left it empty
            except OSError:
                pass
        raise


def _write_split(name, split_items, paths, paired, opts, workers, progress, skip_bad, map_size, writers, report):
    """Read, crop and encode the items of split ``name`` and write them into its LMDB(s) under temporary names.

    The :class:`LmdbWriter` s opened are appended to ``writers`` (so that the caller can abort them);
    ``report`` gets the split's counts and outputs, or the items that fail to decode with ``skip_bad``.
    """
    lq_writer = LmdbWriter(paths[0], opts['compress_level'], map_size)
    writers.append(lq_writer)
    gt_writer = None
    if paired:
        gt_writer = LmdbWriter(paths[1], opts['compress_level'], map_size)
        writers.append(gt_writer)
    n_sources = 0
    with closing(_run(_process, split_items, opts, workers, name, progress)) as results:
        for entries, problem in results:
            if problem is not None:  # passed the header check, failed to decode
                if not skip_bad:
                    raise PackError(f'bad item (pass --skip-bad to leave such items out and list them '
                                    f'at the end):\n  {problem}')
                report.skipped.append(problem)
                continue
            n_sources += 1
            for key, shape, lq_bytes, gt_shape, gt_bytes in entries:
                lq_writer.put(key, lq_bytes, shape)
                if gt_writer is not None:
                    gt_writer.put(key, gt_bytes, gt_shape)
    if lq_writer.count == 0:
        raise PackError(f'split {name!r}: nothing left to pack, every image was bad.')
    report.sources[name], report.entries[name] = n_sources, lq_writer.count
    report.outputs[name] = paths


def _run(func, items, opts, workers, desc, progress):
    """Yield ``func(item)`` for ``items`` in order, in a pool of ``workers`` processes when > 1."""
    bar = tqdm(total=len(items), unit='img', desc=desc, disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if workers > 1 and len(items) > 1:
            # 'spawn', not fork: a fork of a process whose OpenCV/OpenMP thread pools already ran (any
            # caller that used torch or cv2 before, e.g. a test session) can deadlock in the workers
            pool = get_context('spawn').Pool(min(workers, len(items)), initializer=_init_worker, initargs=(opts,))
            results = pool.imap(func, items, chunksize=max(1, min(16, len(items) // (4 * workers))))
        else:
            _init_worker(opts, in_pool=False)
            results = map(func, items)
        for result in results:
            bar.update(1)
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
