"""Helpers shared by the multi-type datasets (BasicSR keeps such helpers in ``basicsr/data/data_util.py``).

:class:`~uniremoval.data.multi_degradation_dataset.MultiDegradationDataset` and
:class:`~uniremoval.data.unpaired_degradation_dataset.UnpairedDegradationDataset` both read ``k``
labelled sources of images. What they share lives here:

* the option checks: :data:`SOURCE_KEYS`, :data:`BACKENDS`, :data:`PHASES`,
  :func:`check_source_opt`, :func:`parse_backend` and :func:`check_crop_and_sources`;
* :class:`ImageSource`: one source's folder / LMDB checks, its lazily opened file client and
  :meth:`ImageSource.read` (image decoding with the error messages naming the file);
* :class:`PairedSource`: a gt / lq source paired by file name, by a meta-info file or by two LMDBs,
  exactly as BasicSR's ``PairedImageDataset``, with the pairing checked when it is built;
* :class:`TypeBalancedIndexing`: the index layout (concatenated or type-balanced) of the datasets;
* :func:`check_contrast_range` and :func:`random_intensity_affine`: the paired contrast augmentation.
"""
import bisect
import numbers
import re
from copy import deepcopy
from os import path as osp

import cv2
import numpy as np

from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.utils import FileClient, get_root_logger, scandir
from uniremoval.utils.display import shown
from uniremoval.utils.errors import UsageError

SOURCE_KEYS = ('name', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'meta_info_file', 'filename_tmpl')
BACKENDS = ('disk', 'lmdb')
PHASES = ('train', 'val', 'test')
MAX_LISTED = 5  # offending file names quoted in a pairing error


def listing(names):
    """``'a.png', 'b.png', ... (12 in all)``: the first few of ``names`` and how many there are."""
    shown = ', '.join(repr(n) for n in names[:MAX_LISTED])
    more = ', ...' if len(names) > MAX_LISTED else ''
    return f'{shown}{more} ({len(names)} in all)'


def check_source_opt(index, opt):
    """Check the mapping ``sources[index]`` (a dict of :data:`SOURCE_KEYS` with a non-empty ``name``).

    Returns:
        tuple[str, str]: the name and ``where``, how errors name the source (``"sources[0] ('haze')"``).
    """
    if not isinstance(opt, dict):
        raise ValueError(f'sources[{index}] must be a mapping with keys {SOURCE_KEYS}, got {opt!r}.')
    unknown = sorted(set(opt) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(f'sources[{index}] has unknown option(s) {unknown}; allowed: {list(SOURCE_KEYS)}.')
    name = opt.get('name')
    if not isinstance(name, str) or not name:
        raise ValueError(f'sources[{index}] needs a non-empty string `name`, got {name!r}.')
    return name, f"sources[{index}] ('{name}')"


def parse_backend(where, backend):
    """``(type, kwargs)`` of an ``io_backend`` mapping (copied), checked; errors start with ``where``."""
    backend = deepcopy(backend)
    if not isinstance(backend, dict) or backend.get('type') not in BACKENDS:
        raise ValueError(f'{where}: io_backend must be a mapping with type one of {list(BACKENDS)}, '
                         f'got {backend!r}.')
    return backend.pop('type'), backend


def check_crop_and_sources(opt, phase, dataset_name):
    """Validate the options every multi-type dataset shares; return ``(gt_size, sources)``.

    ``gt_size`` must be a positive int in phase train; ``sources`` a non-empty list with unique names.
    """
    gt_size = opt.get('gt_size')
    if phase == 'train' and (isinstance(gt_size, bool) or not isinstance(gt_size, numbers.Integral) or gt_size < 1):
        raise ValueError(f'{dataset_name}: phase train needs a positive int `gt_size`, got {gt_size!r}.')
    sources = opt.get('sources')
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ValueError(f'{dataset_name} needs a non-empty list `sources`, got {sources!r}.')
    names = [src.get('name') if isinstance(src, dict) else None for src in sources]
    duplicates = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicates:
        raise ValueError(f'{dataset_name}: source names must be unique, repeated: {duplicates}.')
    return gt_size, sources


def check_contrast_range(value, where):
    """``value`` (the ``contrast_range`` option) as a ``(low, high)`` float pair with 0 < low <= high <= 1, or None."""
    if value is None:
        return None
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value))
    if not ok or not 0 < value[0] <= value[1] <= 1:
        raise ValueError(f'{where}: `contrast_range` must be [low, high] with 0 < low <= high <= 1; got {value!r}.')
    return float(value[0]), float(value[1])


def random_intensity_affine(imgs, contrast_range, rng=np.random):
    """Map every image of a pair (or list) by the same random ``x -> a * x + b``, in [0, 1].

    ``a`` is uniform in ``contrast_range`` and ``b`` uniform in ``[0, 1 - a]``, so a [0, 1] image
    stays in [0, 1]: a contrast reduction towards a random grey level, pale (``b = 1 - a``) to dark
    (``b = 0``). The degradation models of :mod:`uniremoval.data.degradations` commute with this
    map, so a degraded / clean pair stays a valid pair of the same model: haze
    ``I = J t + A (1 - t)`` becomes the haze of ``a J + b`` with airlight ``a A + b``, rain
    ``T (B + S) + (1 - T) A`` that of ``a B + b`` with streaks ``a S``, and blur (a kernel summing
    to 1) that of ``a B + b`` with the same kernel. It shows a network clean or blurred images as pale
    as hazy ones, so that paleness alone does not read as haze.

    Args:
        imgs (list[ndarray]): float images in [0, 1], all mapped alike.
        contrast_range (tuple[float, float]): range of ``a``, within (0, 1].
        rng: a ``numpy.random`` generator or the module (BasicSR's loaders seed it per worker).

    Returns:
        list[ndarray]: the mapped images (new arrays, float32).
    """
    a = rng.uniform(contrast_range[0], contrast_range[1])
    b = rng.uniform(0.0, 1.0 - a)
    return [(img * a + b).astype(np.float32) for img in imgs]


def to_float_bgr(img, where='image'):
    """A decoded image (``cv2.IMREAD_UNCHANGED``) as float32 3-channel BGR HWC in [0, 1].

    Grayscale is repeated into three channels, the alpha channel of BGRA images is dropped (as
    ``cv2.IMREAD_COLOR`` does), 8-bit images are divided by 255 and 16-bit ones by 65535 (keeping their
    precision, which ``IMREAD_COLOR`` would cut to 8 bits); float images are clipped to [0, 1].
    """
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 4:
        img = img[:, :, :3]
    elif channels != 3:
        raise ValueError(f'{where} has {channels} channels; expected 1 (gray), 3 (BGR) or 4 (BGRA).')
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img.astype(np.float32), 0, 1)
    raise ValueError(f'{where} has pixel type {img.dtype}; expected 8- or 16-bit integers or floats.')


class ImageSource:
    """What every image source of the multi-type datasets shares.

    Subclasses set ``where`` (how errors name the source), ``backend_type`` and ``backend_kwargs``
    (a BasicSR ``FileClient``'s), ``gt_root`` / ``lq_root`` (the roots :meth:`read` names in its
    errors), ``mode`` and ``paths`` (a list of ``{'<kind>_path': file path or LMDB key}``).

    The file client is opened on first use, once per process: it is not pickled (LMDB
    environments do not pickle), so each data-loader worker opens its own.
    """

    _client = None

    def __len__(self):
        return len(self.paths)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop('_client', None)  # reopened lazily
        return state

    def check_dir(self, key, path):
        """Raise :class:`ValueError` unless ``path`` (option ``key``) is an existing folder."""
        if not osp.exists(path):
            raise ValueError(f'{self.where}: `{key}` does not exist: {path}')
        if not osp.isdir(path):
            raise ValueError(f'{self.where}: `{key}` is not a folder: {path}')

    def lmdb_names(self, key, root):
        """{lmdb key: image name} of one LMDB, keys derived from meta_info.txt as BasicSR does."""
        self.check_dir(key, root)
        if not root.endswith('.lmdb'):
            raise ValueError(f'{self.where}: io_backend lmdb needs `{key}` to be a folder ending in .lmdb, '
                             f'got {root}')
        meta = osp.join(root, 'meta_info.txt')
        if not osp.isfile(meta):
            raise ValueError(f'{self.where}: `{key}` {root} has no meta_info.txt; a BasicSR LMDB holds data.mdb '
                             'and meta_info.txt (see basicsr.utils.lmdb_util.make_lmdb_from_imgs).')
        with open(meta) as fin:
            return {line.split('.')[0]: line.split(' ')[0] for line in fin}

    def client(self):
        """This source's ``FileClient``, opened on first use."""
        if self._client is None:
            try:
                self._client = FileClient(self.backend_type, **deepcopy(self.backend_kwargs))
            except Exception as err:  # lmdb.Error: a corrupt or truncated data.mdb
                raise ValueError(f'{self.where}: cannot open {self.backend_type} data '
                                 f'{self.backend_kwargs.get("db_paths", "")}: {err}') from err
        return self._client

    def read(self, path, kind):
        """Read one image as float32 BGR HWC in [0, 1], naming the file in any error.

        Args:
            path (str): file path, or LMDB key.
            kind (str): the file client key (``'gt'``, ``'lq'``, ``'clear'``), also the word used in errors.
        """
        client = self.client()
        root = self.gt_root if kind == 'gt' else self.lq_root
        where = f"key '{path}' of LMDB {root}" if self.backend_type == 'lmdb' else path
        try:
            content = client.get(path, kind)
        except OSError as err:
            raise OSError(f'{self.where}: cannot read {kind} image {where}: {err}') from err
        img = None
        if content:  # None: key missing from the LMDB; b'': empty file
            try:
                img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
            except (cv2.error, MemoryError):  # OpenCV's size limit or no memory for the pixels
                img = None
        if img is None:
            raise ValueError(f'{self.where}: {kind} image {where} is missing, empty, truncated or not a decodable '
                             'image.')
        return to_float_bgr(img, f'{self.where}: {kind} image {where}')


class PairedSource(ImageSource):
    """One paired source ``sources[index]``: its name, folders, IO backend options and the list of pairs.

    Pairs are read as BasicSR's ``PairedImageDataset`` reads them: two folders paired by file name
    (``filename_tmpl``), a ``meta_info_file`` listing the gt names, or two LMDBs (keys from their
    ``meta_info.txt``). Pairing is checked here, so a gt without an lq (or the reverse), a missing
    folder, an LMDB without ``meta_info.txt`` or an empty source raise :class:`ValueError` naming
    the source, the option and the offending files.

    Args:
        index (int): position in ``sources`` (the label).
        opt (dict): the source's options, :data:`SOURCE_KEYS`.
        default_backend (dict): ``io_backend`` used when the source has none.

    Attributes:
        paths (list[dict]): ``{'lq_path', 'gt_path'}`` of every pair.
        mode (str): ``'folder'``, ``'meta_info_file'`` or ``'lmdb'``.
    """

    def __init__(self, index, opt, default_backend):
        self.name, self.where = check_source_opt(index, opt)
        self.index = index
        self.backend_type, self.backend_kwargs = parse_backend(self.where, opt.get('io_backend') or default_backend)

        for key in ('dataroot_gt', 'dataroot_lq'):
            if not isinstance(opt.get(key), str) or not opt[key]:
                raise ValueError(f'{self.where}: option `{key}` (a folder or .lmdb path) is required, '
                                 f'got {opt.get(key)!r}.')
        self.gt_root, self.lq_root = opt['dataroot_gt'], opt['dataroot_lq']
        self.filename_tmpl = opt.get('filename_tmpl') or '{}'
        self.meta_info_file = opt.get('meta_info_file')

        if self.backend_type == 'lmdb':
            if self.meta_info_file is not None:
                get_root_logger().warning(f'{self.where}: meta_info_file is ignored with io_backend lmdb; the '
                                          'LMDBs\' own meta_info.txt lists the images.')
            self.mode = 'lmdb'
            self.paths = self._pair_lmdb()
            self.backend_kwargs.update(db_paths=[self.lq_root, self.gt_root], client_keys=['lq', 'gt'])
        elif self.meta_info_file is not None:
            self.mode = 'meta_info_file'
            self.paths = self._pair_meta_info_file()
        else:
            self.mode = 'folder'
            self.paths = self._pair_folder()
        if not self.paths:
            raise ValueError(f'{self.where}: no image pairs found in dataroot_gt {self.gt_root} / '
                             f'dataroot_lq {self.lq_root} ({self.mode} mode).')

    def _mismatch(self, gt_without_lq, lq_without_gt, what='files'):
        problems = []
        if gt_without_lq:
            problems.append(f'gt {what} without an lq counterpart: {listing(gt_without_lq)}')
        if lq_without_gt:
            problems.append(f'lq {what} without a gt counterpart: {listing(lq_without_gt)}')
        return ValueError(f'{self.where}: gt and lq do not pair up (dataroot_gt {self.gt_root}, dataroot_lq '
                          f'{self.lq_root}, filename_tmpl {self.filename_tmpl!r}): ' + '; '.join(problems))

    def _lq_name(self, gt_name):
        basename, ext = osp.splitext(gt_name)
        return f'{self.filename_tmpl.format(basename)}{ext}'

    def _pair_folder(self):
        for key, root in (('dataroot_gt', self.gt_root), ('dataroot_lq', self.lq_root)):
            self.check_dir(key, root)
            if osp.isfile(osp.join(root, 'data.mdb')):
                raise ValueError(f'{self.where}: `{key}` {root} is an LMDB; set io_backend: {{type: lmdb}} for '
                                 'this source.')
        gt_names = sorted(scandir(self.gt_root))
        lq_names = sorted(scandir(self.lq_root))
        expected = {gt: self._lq_name(gt) for gt in gt_names}
        lq_set, expected_set = set(lq_names), set(expected.values())
        gt_without_lq = [gt for gt in gt_names if expected[gt] not in lq_set]
        lq_without_gt = [lq for lq in lq_names if lq not in expected_set]
        if gt_without_lq or lq_without_gt:
            raise self._mismatch(gt_without_lq, lq_without_gt)
        paths = paired_paths_from_folder([self.lq_root, self.gt_root], ['lq', 'gt'], self.filename_tmpl)
        return sorted(paths, key=lambda p: p['gt_path'])

    def _pair_meta_info_file(self):
        self.check_dir('dataroot_gt', self.gt_root)
        self.check_dir('dataroot_lq', self.lq_root)
        if not osp.isfile(self.meta_info_file):
            raise ValueError(f'{self.where}: `meta_info_file` does not exist: {self.meta_info_file}')
        with open(self.meta_info_file, 'r') as fin:
            lines = fin.read().split('\n')
        if lines and lines[-1] == '':
            lines.pop()  # trailing newline
        blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        if blank:
            raise ValueError(f'{self.where}: meta_info_file {self.meta_info_file} has blank line(s) {blank[:10]}.')
        gt_names = [line.strip().split(' ')[0] for line in lines]
        no_gt = [n for n in gt_names if not osp.isfile(osp.join(self.gt_root, n))]
        no_lq = [self._lq_name(n) for n in gt_names if not osp.isfile(osp.join(self.lq_root, self._lq_name(n)))]
        if no_gt or no_lq:
            problems = []
            if no_gt:
                problems.append(f'missing in dataroot_gt {self.gt_root}: {listing(no_gt)}')
            if no_lq:
                problems.append(f'missing in dataroot_lq {self.lq_root}: {listing(no_lq)}')
            raise ValueError(f'{self.where}: files listed in meta_info_file {self.meta_info_file} '
                             f'(filename_tmpl {self.filename_tmpl!r}) are ' + '; '.join(problems))
        return paired_paths_from_meta_info_file([self.lq_root, self.gt_root], ['lq', 'gt'], self.meta_info_file,
                                                self.filename_tmpl)

    def _pair_lmdb(self):
        gt = self.lmdb_names('dataroot_gt', self.gt_root)
        lq = self.lmdb_names('dataroot_lq', self.lq_root)
        gt_without_lq = [gt[k] for k in sorted(gt) if k not in lq]
        lq_without_gt = [lq[k] for k in sorted(lq) if k not in gt]
        if gt_without_lq or lq_without_gt:
            raise self._mismatch(gt_without_lq, lq_without_gt, what='LMDB entries')
        return paired_paths_from_lmdb([self.lq_root, self.gt_root], ['lq', 'gt'])


class TypeBalancedIndexing:
    """Index layout shared by the multi-type datasets (``MultiDegradationDataset``,
    ``UnpairedDegradationDataset``): k sources, label = source position.

    With ``balanced`` true, ``len = k * samples_per_type`` and index ``i`` holds type ``t = i % k``
    and sample ``(i // k + epoch * samples_per_type) % source_sizes[t]`` of that source (``epoch``
    set by :meth:`set_epoch`); otherwise the sources are concatenated.
    """

    def _init_indexing(self, opt, names, source_sizes, dataset_name):
        """Validate ``balanced`` / ``samples_per_type`` and set the attributes the indexing needs."""
        self._indexing_name = dataset_name
        self.source_sizes = list(source_sizes)
        self.num_types = len(self.source_sizes)
        self._offsets = np.cumsum([0] + self.source_sizes).tolist()  # concatenated mode
        self.balanced = bool(opt.get('balanced', True))
        spt = opt.get('samples_per_type')
        if self.balanced:
            if spt is None:
                spt = max(self.source_sizes)
            if isinstance(spt, bool) or not isinstance(spt, numbers.Integral) or spt < 1:
                raise ValueError(f'{dataset_name}: `samples_per_type` must be a positive int, got {spt!r}.')
            self.samples_per_type = int(spt)
            larger = [f'{n} ({size})' for n, size in zip(names, self.source_sizes) if size > self.samples_per_type]
            if larger:
                get_root_logger().info(
                    f'{dataset_name}: sources {", ".join(larger)} hold more than samples_per_type='
                    f'{self.samples_per_type} samples; each epoch visits a window of them that moves when the '
                    'training loop calls dataset.set_epoch(epoch).')
        else:
            if spt is not None:
                get_root_logger().warning(f'{dataset_name}: samples_per_type is ignored with balanced: false.')
            self.samples_per_type = None
        self.epoch = 0

    def __len__(self):
        if self.balanced:
            return self.num_types * self.samples_per_type
        return self._offsets[-1]

    def set_epoch(self, epoch):
        """Move the window of sources larger than ``samples_per_type`` (balanced mode only)."""
        self.epoch = int(epoch)

    def locate(self, index):
        """``(label, index within that source)`` of dataset index ``index``."""
        index = int(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f'{self._indexing_name} index {index} out of range for length {n}.')
        if self.balanced:
            label = index % self.num_types
            within = index // self.num_types + self.epoch * self.samples_per_type
            return label, within % self.source_sizes[label]
        label = bisect.bisect_right(self._offsets, index) - 1
        return label, index - self._offsets[label]

    def type_of_index(self, index):
        """Label (source index) of dataset index ``index``, without reading any image."""
        return self.locate(index)[0]


# ----------------------------------------------------------------------------- checks before training
class DataCheckError(UsageError, ValueError):
    """A data path of a dataset's options is missing, empty or holds an unusable image; names the file."""


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
PNG_END = b'IEND\xaeB`\x82'
JPEG_END = b'\xff\xd9'


def image_size(path):
    """``(height, width)`` of an image file from its header, after a cheap check that it is complete.

    Reads the header (PIL opens lazily, without decoding pixels) and, for PNG and JPEG, the last bytes:
    a PNG must end with its ``IEND`` chunk, a JPEG with its end-of-image marker (up to trailing zero
    padding). A truncated file (an interrupted copy or download) thus fails here, when the dataset is
    checked, instead of when a training iteration draws it. A file corrupt in the middle still passes;
    :meth:`ImageSource.read` names it when it is decoded.

    Raises:
        DataCheckError: naming the file.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            width, height = img.size
            fmt = img.format
    except Image.DecompressionBombError as e:  # PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS)
        raise DataCheckError(f'image {shown(path)} declares too many pixels to decode safely: {e}') from e
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataCheckError(f'image {path} is not a readable image: {e}') from e
    tail = b''
    if fmt in ('PNG', 'JPEG'):
        with open(path, 'rb') as f:
            f.seek(max(0, osp.getsize(path) - 64))
            tail = f.read().rstrip(b'\x00')
    if (fmt == 'PNG' and not tail.endswith(PNG_END)) or (fmt == 'JPEG' and not tail.endswith(JPEG_END)):
        raise DataCheckError(f'image {path} is truncated (its {fmt} end marker is missing): re-copy or remove it')
    return height, width


def _image_files(folder):
    return sorted(f for f in scandir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def _lmdb_sizes(key, root):
    """{image name: (h, w)} of a BasicSR LMDB, from its meta_info.txt; checks data.mdb is present."""
    if not osp.isdir(root):
        raise DataCheckError(f'{key}: LMDB folder {root} does not exist')
    for name in ('data.mdb', 'meta_info.txt'):
        if not osp.isfile(osp.join(root, name)):
            raise DataCheckError(f'{key}: LMDB {root} has no {name} (a BasicSR LMDB holds data.mdb and meta_info.txt)')
    sizes = {}
    with open(osp.join(root, 'meta_info.txt')) as fin:
        for number, line in enumerate(fin, 1):
            if not line.strip():
                continue
            match = re.match(r'^(\S+)\s+\((\d+),\s*(\d+)(?:,\s*\d+)?\)', line)
            if match is None:
                raise DataCheckError(f'{key}: line {number} of {root}/meta_info.txt is not "<name> (h,w,c) <level>": '
                                     f'{line.strip()!r}')
            sizes[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    if not sizes:
        raise DataCheckError(f'{key}: LMDB {root} is empty (its meta_info.txt lists no image)')
    check_lmdb(root, [osp.splitext(name)[0] for name in sizes], key)
    return sizes


def check_lmdb(root, keys, option='LMDB'):
    """Open the LMDB ``root`` read-only and check it is whole: a valid header, a ``data.mdb`` at least as
    long as its last used page (a truncated copy would otherwise crash the reader with SIGBUS when a
    page past the end is touched), and every key of ``keys`` present (looked up in the B-tree; values
    are not read). Raises :class:`DataCheckError` naming the LMDB and the first missing key."""
    import lmdb
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as e:
        if 'already open in this process' in str(e):
            return  # py-lmdb opens an environment once per process: a reader here already opened it
        raise DataCheckError(f'{option}: {root} is not a readable LMDB (corrupt or truncated data.mdb): {e}') from e
    try:
        info, stat = env.info(), env.stat()
        needed = (info['last_pgno'] + 1) * stat['psize']
        size = osp.getsize(osp.join(root, 'data.mdb'))
        if size < needed:
            raise DataCheckError(f'{option}: LMDB {root} is truncated: data.mdb has {size} bytes, its pages need '
                                 f'{needed}')
        with env.begin(write=False) as txn:
            cursor = txn.cursor()
            for k in keys:
                if not cursor.set_key(k.encode('ascii')):
                    raise DataCheckError(f"{option}: key '{k}' listed in {root}/meta_info.txt is missing from "
                                         f'LMDB {root} (corrupt, truncated or written incompletely)')
    except lmdb.Error as e:
        raise DataCheckError(f'{option}: LMDB {root} cannot be read (corrupt or truncated): {e}') from e
    finally:
        env.close()


def _folder_sizes(key, root, meta_info_file=None, check_images=True):
    """{file name: (h, w) or None} of a disk folder (or of the names its meta_info_file lists)."""
    if not osp.isdir(root):
        raise DataCheckError(f'{key}: folder {root} does not exist' if not osp.exists(root)
                             else f'{key}: {root} is not a folder')
    if meta_info_file is not None:
        meta_info_file = osp.expanduser(meta_info_file)
        if not osp.isfile(meta_info_file):
            raise DataCheckError(f'meta_info_file {meta_info_file} does not exist')
        with open(meta_info_file) as fin:
            names = [line.strip().split(' ')[0] for line in fin if line.strip()]
    else:
        names = _image_files(root)
    if not names:
        raise DataCheckError(f'{key}: folder {root} holds no images ({", ".join(IMAGE_EXTENSIONS)})'
                             + (f' listed in {meta_info_file}' if meta_info_file else ''))
    sizes = {}
    for name in names:
        try:
            sizes[name] = image_size(osp.join(root, name)) if check_images else None
        except DataCheckError as e:
            raise DataCheckError(f'{key}: {e}') from e
    return sizes


def _too_small(sizes, root, gt_size, what):
    for name, size in sizes.items():
        if size is not None and min(size) < gt_size:
            raise DataCheckError(f'{what} image {osp.join(root, name)} is {size[0]}x{size[1]} (HxW), smaller than '
                                 f'the training patch ({gt_size}x{gt_size}, gt_size {gt_size})')


def _check_collection(opt, train, gt_size, scale, where=''):
    """Check one set of data options: ``dataroot_gt`` / ``dataroot_lq`` / ``dataroot_clear`` (+ meta info)."""
    backend = (opt.get('io_backend') or {}).get('type', 'disk')
    check_images = opt.get('check_images', True)
    found = {}
    for key in ('dataroot_gt', 'dataroot_lq', 'dataroot_clear'):
        root = opt.get(key)
        if root is None:
            continue
        if not isinstance(root, str) or not root:
            raise DataCheckError(f'{where}{key}: expected a folder path, got {root!r}')
        root = osp.expanduser(root)
        this_backend = backend
        if key == 'dataroot_clear' and opt.get('clear_io_backend'):
            this_backend = opt['clear_io_backend'].get('type', 'disk')
        if this_backend == 'lmdb':
            found[key] = (root, _lmdb_sizes(where + key, root), True)
        else:
            meta = opt.get('clear_meta_info_file' if key == 'dataroot_clear' else 'meta_info_file')
            if key == 'dataroot_lq' and opt.get('dataroot_gt') is not None:
                meta = None  # a paired meta_info_file lists the gt names
            found[key] = (root, _folder_sizes(where + key, root, meta, check_images), False)
    if 'dataroot_gt' in found and 'dataroot_lq' in found:
        (gt_root, gt_sizes, lmdb), (lq_root, lq_sizes, _) = found['dataroot_gt'], found['dataroot_lq']
        tmpl = opt.get('filename_tmpl') or '{}'
        for gt_name, gt_hw in gt_sizes.items():
            base, ext = osp.splitext(gt_name)
            lq_name = gt_name if lmdb else f'{tmpl.format(base)}{ext}'
            lq_hw = lq_sizes.get(lq_name)
            if gt_hw is None or lq_hw is None:
                continue  # unchecked sizes, or unpaired names (the dataset reports those)
            if gt_hw != (lq_hw[0] * scale, lq_hw[1] * scale):
                raise DataCheckError(
                    f'{where}gt image {osp.join(gt_root, gt_name)} is {gt_hw[0]}x{gt_hw[1]} (HxW) but lq image '
                    f'{osp.join(lq_root, lq_name)} is {lq_hw[0]}x{lq_hw[1]}' +
                    (f'; with scale {scale} the gt must be {lq_hw[0] * scale}x{lq_hw[1] * scale}' if scale != 1
                     else '; they must be the same size'))
    if train and gt_size:
        if 'dataroot_gt' in found:
            _too_small(found['dataroot_gt'][1], found['dataroot_gt'][0], gt_size, where + 'gt')
        elif 'dataroot_lq' in found:
            _too_small(found['dataroot_lq'][1], found['dataroot_lq'][0], gt_size, where + 'lq')
        if 'dataroot_clear' in found:
            _too_small(found['dataroot_clear'][1], found['dataroot_clear'][0], gt_size, where + 'clear')


def check_dataset_files(opt, train):
    """Check the data a dataset's options point to, before the dataset is built.

    Folders and LMDBs must exist and hold images; with ``check_images`` (default true) every image's
    header is read (:func:`image_size`: unreadable or truncated files fail), paired gt / lq images must
    have matching sizes and, in training, be at least ``gt_size`` on each side. LMDB sizes come from
    their ``meta_info.txt``. Cost: two small reads per file (measured: docs/findings.md, "Dataset checks");
    set ``check_images: false`` in the dataset options to check only folders and counts.

    Args:
        opt (dict): dataset options (BasicSR's, or ours with ``sources``).
        train (bool): whether the dataset is a training set (patch size checks).

    Raises:
        DataCheckError: naming the option and the folder or file.
    """
    gt_size = opt.get('gt_size') if isinstance(opt.get('gt_size'), int) else None
    scale = opt.get('scale', 1) or 1
    _check_collection(opt, train, gt_size, scale)
    for index, source in enumerate(opt.get('sources') or []):
        if isinstance(source, dict):
            merged = {k: v for k, v in opt.items() if k in ('io_backend', 'check_images')}
            merged.update(source)
            _check_collection(merged, train, gt_size, scale, where=f"sources[{index}] ('{source.get('name')}') ")
