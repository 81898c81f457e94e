#!/usr/bin/env python
"""Pack public restoration datasets, as downloaded, into BasicSR LMDBs.

    python datasets_prep/pack.py <layout> --root <dataset folder> --out <output folder> [options]

One subcommand per dataset layout (``--help`` on each shows its options); see
``datasets_prep/README.md`` for the layouts, outputs and options, and :mod:`lmdb_packing`
(``datasets_prep/lmdb_packing.py``, next to this script) for the writer. Paired layouts write
``<out>/<split>_lq.lmdb`` and ``<out>/<split>_gt.lmdb`` (identical keys), unpaired ones
``<out>/<split>.lmdb``; ``--val-fraction`` / ``--val-count`` also write the ``val`` split.

Layouts (the file naming each one assumes is in its reader's docstring below)::

    reside-ots    RESIDE OTS (also ITS): hazy/<id>_<A>_<beta>.jpg, many per clear/<id>.jpg
    reside-sots   RESIDE SOTS outdoor/indoor: hazy/<id>_<A>_<beta>.jpg (or <id>_<k>.png) + gt/<id>.png
    rtts, urhi    RESIDE RTTS / URHI: real hazy images, unpaired
    rain1400      Rain1400 / Rain12600 (DDN): rainy_image/<id>_<k>.jpg (k=1..14) + ground_truth/<id>.jpg
    spa           SPA-Data: real_test_1000/{rain/<name>.png, gt/<name>gt.png}, or a pair list file
    gopro         GoPro: GOPRO_Large/<split>/<sequence>/{blur,sharp}/<frame>.png
    realblur      RealBlur-J (or -R): RealBlur_J_<split>_list.txt of "gt_path blur_path" lines
    pairs         two folders paired by file name (BasicSR filename_tmpl)
    pair-list     a text file of "lq_path gt_path" (or "gt_path lq_path") lines
    folder        one folder of unpaired images
"""
import argparse
import importlib.metadata
import os
import re
import sys
from os import path as osp

from lmdb_packing import CropSpec, Item, PackError, default_workers, pack, sanitize_key, scan_images


def installed_version():
    """uniremoval's installed version, read without importing it (this tool needs no torch)."""
    try:
        return importlib.metadata.version('uniremoval')
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


# ============================================================================ generic readers
def _stem(rel):
    return osp.splitext(rel)[0]


def _basename_stem(rel):
    return osp.splitext(osp.basename(rel))[0]


def _stem_map(folder, recursive, stem_of=_stem):
    """``{stem: relative path}`` of the images in ``folder``, and problems for ambiguous stems."""
    found, problems = {}, []
    for rel in scan_images(folder, recursive):
        stem = stem_of(rel)
        if stem in found:
            problems.append(f'{osp.join(folder, rel)}: same name as {osp.join(folder, found[stem])} '
                            '(apart from the extension); cannot tell which one to pair')
            continue
        found[stem] = rel
    return found, problems


def auto_keys(rel_paths):
    """Keys for ``rel_paths``: the file stems if they are unique, else the paths without the
    extension and without the leading folders they all share (``/`` becomes ``_``)."""
    stems = [_basename_stem(p) for p in rel_paths]
    if len(set(stems)) == len(stems):
        return stems
    parts = [_stem(p).replace('\\', '/').split('/') for p in rel_paths]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ['_'.join(p[common:]) for p in parts]


def pair_by_stem(lq_dir, gt_dir, lq_stem_of_gt=lambda s: s, recursive=False, key_from='gt'):
    """Pair the images of two folders: lq stem ``lq_stem_of_gt(gt stem)`` (extensions may differ).

    Returns ``(items, problems)``; problems name each image without a counterpart.
    """
    lq, lq_problems = _stem_map(lq_dir, recursive)
    gt, gt_problems = _stem_map(gt_dir, recursive)
    expected = {}
    for g in gt:
        expected.setdefault(lq_stem_of_gt(g), g)
    items, problems = [], lq_problems + gt_problems
    for lq_stem in sorted(lq):
        g = expected.get(lq_stem)
        if g is None:
            problems.append(f'{osp.join(lq_dir, lq[lq_stem])}: no counterpart in {gt_dir}')
            continue
        key = g if key_from == 'gt' else lq_stem
        items.append(Item(key=key, lq=osp.join(lq_dir, lq[lq_stem]), gt=osp.join(gt_dir, gt[g])))
    for g in sorted(gt):
        if lq_stem_of_gt(g) not in lq:
            problems.append(f'{osp.join(gt_dir, gt[g])}: no counterpart in {lq_dir}')
    return items, problems


def pair_many_to_one(lq_dir, gt_dir, gt_id_of, what, recursive=True):
    """Pair each lq image with the gt whose stem is ``gt_id_of(lq stem)`` (several lq per gt).

    Keys are the lq stems; the gt is duplicated under each key and is the split's group, so all
    lq versions of one gt land in the same split. ``what`` describes the expected naming.
    """
    gt, problems = _stem_map(gt_dir, recursive, stem_of=_basename_stem)
    lq_names = scan_images(lq_dir, recursive)
    items, used = [], set()
    for rel in lq_names:
        stem = _basename_stem(rel)
        gt_id = gt_id_of(stem)
        lq_path = osp.join(lq_dir, rel)
        if gt_id is None:
            problems.append(f'{lq_path}: not named {what}')
        elif gt_id not in gt:
            problems.append(f'{lq_path}: no counterpart {gt_id}.* in {gt_dir}')
        else:
            used.add(gt_id)
            gt_path = osp.join(gt_dir, gt[gt_id])
            items.append(Item(key=stem, lq=lq_path, gt=gt_path, group=gt_path))
    for gt_id in sorted(set(gt) - used):
        problems.append(f'{osp.join(gt_dir, gt[gt_id])}: no counterpart in {lq_dir}')
    return items, problems


def read_pair_list(list_file, root=None, order='lq-gt'):
    """Items from a text file of ``<path> <path>`` lines (``order`` says which is which).

    Paths are relative to ``root`` (default: the list file's folder); a leading ``/`` or ``./`` is
    dropped unless the path exists as written (SPA-Data lists start with ``/`` or ``./``).
    Blank lines and lines starting with ``#`` are ignored; further fields on a line are ignored.
    Keys: :func:`auto_keys` of the lq paths; the group (split unit) is the gt image.
    """
    if not osp.isfile(list_file):
        raise PackError(f'pair list file not found: {list_file}')
    root = root if root is not None else osp.dirname(osp.abspath(list_file))
    pairs, problems = [], []
    with open(list_file, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith('#'):
                continue
            if len(fields) < 2:
                raise PackError(f'{list_file}, line {number}: expected two paths, got {line.strip()!r}')
            first, second = (_resolve(p, root) for p in fields[:2])
            lq, gt = (first, second) if order == 'lq-gt' else (second, first)
            missing = [p for p in (lq, gt) if not osp.isfile(p)]
            if missing:
                problems.append(f'{list_file}, line {number}: missing ' + ', '.join(missing))
                continue
            pairs.append((lq, gt))
    keys = auto_keys([osp.relpath(lq, root) for lq, _ in pairs])
    return [Item(key=k, lq=lq, gt=gt, group=gt) for k, (lq, gt) in zip(keys, pairs)], problems


def _resolve(path, root):
    if osp.isabs(path) and osp.exists(path):
        return path
    rel = path.lstrip('/')
    while rel.startswith('./'):
        rel = rel[2:].lstrip('/')
    return osp.join(root, rel)


def single_folder(folder, recursive=False):
    """Unpaired items: the images of ``folder``, keys :func:`auto_keys` of their relative paths."""
    rels = scan_images(folder, recursive)
    return [Item(key=k, lq=osp.join(folder, rel)) for k, rel in zip(auto_keys(rels), rels)], []


def _subdir(root, override, candidates, what, option):
    """``root/override`` if given, else the first of ``root/<candidate>`` that exists."""
    if not osp.isdir(root):
        raise PackError(f'dataset root not found: {root}')
    if override:
        path = override if osp.isabs(override) else osp.join(root, override)
        if not osp.isdir(path):
            raise PackError(f'{what} folder not found: {path}')
        return path
    for name in candidates:
        if osp.isdir(osp.join(root, name)):
            return osp.join(root, name)
    raise PackError(f'no {what} folder under {root} (looked for {", ".join(candidates)}); pass {option}.')


# ============================================================================ dataset layouts
def read_reside(args):
    """RESIDE OTS / ITS / SOTS: hazy images named after their clear image, several per clear one.

    Layout (``--root``; folder names tried in this order, or ``--hazy-dir`` / ``--clear-dir``)::

        <root>/hazy/<id>_<A>_<beta>.jpg     (or haze/; searched recursively, so the OTS parts
        <root>/clear/<id>.jpg               part1..part4 may stay in subfolders; or gt/)

    OTS: ``0001_0.8_0.2.jpg`` -> ``clear/0001.jpg`` (35 hazy per clear image); SOTS-outdoor:
    ``hazy/0001_0.8_0.2.jpg`` -> ``gt/0001.png`` (one each); ITS / SOTS-indoor:
    ``hazy/1400_1.png`` (or ``1_1_0.90179.png``) -> ``gt/1400.png``. The clear id is the hazy
    stem up to its first ``_`` (the whole stem if it has none); extensions may differ. Keys are
    the hazy stems with ``.`` -> ``p`` (``0001_0p8_0p2``), the clear image duplicated under each.
    """
    hazy = _subdir(args.root, args.hazy_dir, ('hazy', 'haze'), 'hazy', '--hazy-dir')
    clear = _subdir(args.root, args.clear_dir, args.clear_candidates, 'clear', '--clear-dir')
    items, problems = pair_many_to_one(hazy, clear, lambda stem: stem.split('_')[0], '<id>_<A>_<beta>')
    return items, problems, True


def read_rain1400(args):
    """Rain1400 / Rain12600 (Fu et al., DDN, CVPR 2017): 14 rainy images per clean one.

    Layout (``--root``, e.g. the ``training`` or ``testing`` folder; or ``--rainy-dir`` / ``--clean-dir``)::

        <root>/rainy_image/<id>_<k>.jpg     k = 1..14       (or rainy/, input/)
        <root>/ground_truth/<id>.jpg                        (or gt/, norain/, target/)

    Keys are the rainy stems (``901_3``), the clean image duplicated under each; the 14 rainy
    versions of one clean image stay in the same split.
    """
    rainy = _subdir(args.root, args.rainy_dir, ('rainy_image', 'rainy', 'input'), 'rainy', '--rainy-dir')
    clean = _subdir(args.root, args.clean_dir, ('ground_truth', 'gt', 'norain', 'target'), 'clean',
                    '--clean-dir')

    def clean_id(stem):
        match = re.fullmatch(r'(.+)_(\d+)', stem)
        return match.group(1) if match else None

    items, problems = pair_many_to_one(rainy, clean, clean_id, '<id>_<k>')
    return items, problems, True


def read_spa(args):
    """SPA-Data (Wang et al., SPANet, CVPR 2019): real rain with ground truth.

    Test layout (``--root`` is ``real_test_1000`` or the folder holding it)::

        <root>/rain/<name>.png
        <root>/gt/<name>gt.png              (<name>.png is accepted too)

    keys ``<name>``. Training (or any) pair list, ``--list real_world.txt``: lines
    ``<rain path> <gt path>`` relative to ``--root`` (default: the list's folder), a leading ``/``
    or ``./`` allowed, e.g. ``./real_world/000/000-1/000-1_1_1.png ./real_world_gt/000/000_1_1.png``;
    keys are the rain stems (``000-1_1_1``), the gt is the split group (all rainy frames of one
    gt patch stay together). Default ``--split``: ``train`` with ``--list``, else ``test``.
    """
    if args.split is None:
        args.split = 'train' if args.list else 'test'
    if args.list:
        items, problems = read_pair_list(args.list, args.root, order='lq-gt')
        return items, problems, True
    root = args.root
    if root is None:
        raise PackError('spa needs --root (the real_test_1000 folder) or --list (a pair list file).')
    if not osp.isdir(osp.join(root, 'rain')) and osp.isdir(osp.join(root, 'real_test_1000')):
        root = osp.join(root, 'real_test_1000')
    rain = _subdir(root, None, ('rain',), 'rain', '--list')
    gt = _subdir(root, None, ('gt', 'norain'), 'gt', '--list')

    def rain_stem(gt_stem):
        return gt_stem[:-2] if gt_stem.endswith('gt') else gt_stem

    items, problems = pair_by_stem(rain, gt, rain_stem, key_from='lq')
    return items, problems, True


def read_gopro(args):
    """GoPro (Nah et al., CVPR 2017), ``GOPRO_Large`` as downloaded.

    Layout (``--root`` is ``GOPRO_Large``; ``--split`` picks ``train`` or ``test``)::

        <root>/<split>/<sequence>/blur/<frame>.png      (or blur_gamma/ with --blur-dir blur_gamma)
        <root>/<split>/<sequence>/sharp/<frame>.png

    Keys ``<sequence>_<frame>`` (``GOPR0372_07_00_000047``). The val split holds out single frames,
    or whole sequences with ``--val-by-sequence`` (neighbouring frames are near duplicates).
    """
    base = osp.join(args.root, args.split)
    if not osp.isdir(base):
        raise PackError(f'GoPro split folder not found: {base} (--root is GOPRO_Large, --split train or test)')
    sequences = sorted(d for d in os.listdir(base) if osp.isdir(osp.join(base, d)) and not d.startswith('.'))
    if not sequences:
        raise PackError(f'no sequence folders in {base}')
    items, problems = [], []
    for seq in sequences:
        blur, sharp = osp.join(base, seq, args.blur_dir), osp.join(base, seq, 'sharp')
        missing = [p for p in (blur, sharp) if not osp.isdir(p)]
        if missing:
            problems.append(f'{osp.join(base, seq)}: no ' + ' and no '.join(osp.basename(p) + '/' for p in missing))
            continue
        seq_items, seq_problems = pair_by_stem(blur, sharp)
        problems += seq_problems
        items += [Item(key=f'{seq}_{it.key}', lq=it.lq, gt=it.gt, group=seq if args.val_by_sequence else it.gt)
                  for it in seq_items]
    return items, problems, True


def read_realblur(args):
    """RealBlur-J (or -R with ``--variant R``; Rim et al., ECCV 2020), as extracted.

    Layout (``--root``; ``--split`` picks the list, or ``--list`` gives one)::

        <root>/RealBlur_J_train_list.txt    lines "gt_path blur_path", relative to <root>, e.g.
        <root>/RealBlur_J_test_list.txt     RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene230/gt/gt_7.png ...
        <root>/RealBlur-J_ECC_IMCORR_centroid_itensity_ref/<scene>/{gt/gt_<n>,blur/blur_<n>}.png

    Keys ``<scene>_<n>`` (``scene230_7``) when every blur path has this form, else
    :func:`auto_keys` of the blur paths.
    """
    list_file = args.list or osp.join(args.root, f'RealBlur_{args.variant}_{args.split}_list.txt')
    items, problems = read_pair_list(list_file, args.root, order='gt-lq')
    pattern = re.compile(r'(scene\d+)[/\\]blur[/\\]blur_(\d+)\.\w+$')
    matches = [pattern.search(it.lq) for it in items]
    if items and all(matches):
        items = [Item(key=f'{m.group(1)}_{m.group(2)}', lq=it.lq, gt=it.gt, group=it.gt)
                 for it, m in zip(items, matches)]
    return items, problems, True


def read_unpaired(args):
    """RTTS / URHI (RESIDE real hazy images) and any folder of unpaired images.

    Layout: the images directly in ``--root`` (searched recursively with ``--recursive``; RTTS:
    ``<root>/JPEGImages/<name>.png`` is used when present, its VOC ``Annotations/`` ignored;
    URHI: ``<root>/<name>.jpg``). Keys are the file stems (relative paths when stems repeat).
    One LMDB ``<out>/<split>.lmdb``.
    """
    folder = args.root
    if args.command == 'rtts' and osp.isdir(osp.join(folder, 'JPEGImages')):
        folder = osp.join(folder, 'JPEGImages')
    if not osp.isdir(folder):
        raise PackError(f'image folder not found: {folder}')
    items, problems = single_folder(folder, args.recursive)
    return items, problems, False


def read_pairs(args):
    """Two folders paired by file name, as BasicSR's ``paired_paths_from_folder``.

    ``--lq DIR --gt DIR``: the lq of gt ``<stem>.<ext>`` is ``--filename-tmpl`` formatted with
    ``<stem>`` (default ``{}``: same stem; extensions may differ), e.g. ``{}x4`` or ``{}_rain``.
    Keys are the gt stems (relative paths with ``_`` for ``/`` with ``--recursive``).
    """
    tmpl = args.filename_tmpl
    if '{}' not in tmpl:
        raise PackError(f"--filename-tmpl must contain '{{}}', got {tmpl!r}")
    for what, folder in (('lq', args.lq), ('gt', args.gt)):
        if not osp.isdir(folder):
            raise PackError(f'{what} folder not found: {folder}')
    items, problems = pair_by_stem(args.lq, args.gt, tmpl.format, recursive=args.recursive)
    return items, problems, True


def read_list(args):
    """Any pair list file: ``--list FILE`` of ``<lq> <gt>`` lines (``--order gt-lq`` for the reverse)."""
    items, problems = read_pair_list(args.list, args.root, order=args.order)
    return items, problems, True


# ============================================================================ command line
def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


def _fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f'must be in (0, 1), got {text}')
    return value


def _add_common(parser, split):
    """The options every layout has (added to each subparser: argparse ``parents`` share their
    actions, so per-layout defaults would leak from one layout into another)."""
    g = parser.add_argument_group('output')
    g.add_argument('--out', required=True, help='output folder: <out>/<split>_lq.lmdb, <out>/<split>_gt.lmdb '
                   '(<out>/<split>.lmdb for unpaired data)')
    g.add_argument('--split', default=split, help=f'name of the split written (default: {split or "see above"})')
    g.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                   help='PNG compression level (default: 1, as BasicSR)')
    g.add_argument('--overwrite', action='store_true', help='replace existing output LMDBs')
    g = parser.add_argument_group('sub-images (as BasicSR extract_subimages.py)')
    g.add_argument('--crop-size', type=_positive, help='crop each image into SIZE x SIZE sub-images '
                   '(keys <key>_s001, ...)')
    g.add_argument('--step', type=_positive, help='distance between sub-images (default: crop size // 2)')
    g.add_argument('--thresh-size', type=int, default=0, help='add a last sub-image flush with the border '
                   'when more than this many pixels are left (default: 0)')
    g = parser.add_argument_group('train/val split (by source image; deterministic)')
    v = g.add_mutually_exclusive_group()
    v.add_argument('--val-fraction', type=_fraction, help='hold out this fraction of source images')
    v.add_argument('--val-count', type=_positive, help='hold out this many source images')
    g.add_argument('--val-split', default='val', help='name of the held-out split (default: val)')
    g.add_argument('--seed', type=int, default=0, help='seed of the split (default: 0)')
    g = parser.add_argument_group('run')
    g.add_argument('--workers', type=_positive, default=default_workers(),
                   help='processes decoding/encoding images (default: min(4, cpus))')
    g.add_argument('--skip-bad', action='store_true', help='skip bad pairs/images (missing counterpart, '
                   'different sizes, unreadable, smaller than the crop) and list them at the end')
    g.add_argument('--no-progress', action='store_true', help='no progress bars')


def build_parser():
    parser = argparse.ArgumentParser(
        prog='pack.py', description='Pack a dataset, as downloaded, into BasicSR LMDBs.',
        epilog='See datasets_prep/README.md.')
    parser.add_argument('--version', action='version', version=f'%(prog)s (uniremoval) {installed_version()}')
    subs = parser.add_subparsers(dest='command', required=True, metavar='LAYOUT')

    def add(name, reader, help_text, split, aliases=()):
        sub = subs.add_parser(name, help=help_text, aliases=list(aliases), description=reader.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(reader=reader, command=name)
        _add_common(sub, split)
        return sub

    for name, split, clear, text in (
            ('reside-ots', 'train', ('clear', 'gt'), 'RESIDE OTS/ITS: hazy/<id>_<A>_<beta>.jpg + clear/<id>.jpg'),
            ('reside-sots', 'test', ('gt', 'clear'), 'RESIDE SOTS: hazy/<id>_<A>_<beta>.jpg + gt/<id>.png')):
        sub = add(name, read_reside, text, split)
        sub.add_argument('--root', required=True, help='folder holding hazy/ and clear/ (or gt/)')
        sub.add_argument('--hazy-dir', help='hazy folder, relative to --root (default: hazy or haze)')
        sub.add_argument('--clear-dir', help=f'clear folder, relative to --root (default: {" or ".join(clear)})')
        sub.add_argument('--gt-center-crop', action='store_true',
                         help='center-crop a clear image larger than its hazy ones to their size (for '
                         'releases whose gt keep a border the hazy images lack)')
        sub.set_defaults(clear_candidates=clear)
    for name, split in (('rtts', 'rtts'), ('urhi', 'urhi'), ('folder', 'images')):
        sub = add(name, read_unpaired, f'{name.upper() if name != "folder" else "any folder of"} unpaired images',
                  split)
        sub.add_argument('--root', '--input', dest='root', required=True, help='the image folder')
        sub.add_argument('--recursive', action='store_true', help='search subfolders too')

    sub = add('rain1400', read_rain1400, 'Rain1400/Rain12600: rainy_image/<id>_<k>.jpg + ground_truth/<id>.jpg',
              'train')
    sub.add_argument('--root', required=True, help='folder holding rainy_image/ and ground_truth/')
    sub.add_argument('--rainy-dir', help='rainy folder, relative to --root')
    sub.add_argument('--clean-dir', help='clean folder, relative to --root')

    sub = add('spa', read_spa, 'SPA-Data: real_test_1000/{rain,gt}, or a pair list file', None)
    sub.add_argument('--root', help='real_test_1000 (or its parent); with --list, the root of its paths')
    sub.add_argument('--list', help='pair list file of "<rain path> <gt path>" lines (e.g. real_world.txt)')

    sub = add('gopro', read_gopro, 'GoPro: GOPRO_Large/<split>/<sequence>/{blur,sharp}/<frame>.png', 'train')
    sub.add_argument('--root', required=True, help='the GOPRO_Large folder')
    sub.add_argument('--blur-dir', default='blur', choices=('blur', 'blur_gamma'), help='default: blur')
    sub.add_argument('--val-by-sequence', action='store_true', help='hold out whole sequences for val')

    sub = add('realblur', read_realblur, 'RealBlur-J/R: RealBlur_<J|R>_<split>_list.txt of "gt blur" lines',
              'train', aliases=('realblur-j',))
    sub.add_argument('--root', required=True, help='folder holding the list files and image folders')
    sub.add_argument('--variant', default='J', choices=('J', 'R'), help='RealBlur-J (default) or RealBlur-R')
    sub.add_argument('--list', help='pair list file to use instead of RealBlur_<variant>_<split>_list.txt')

    sub = add('pairs', read_pairs, 'two folders paired by file name', 'train')
    sub.add_argument('--lq', required=True, help='folder of degraded images')
    sub.add_argument('--gt', required=True, help='folder of ground-truth images')
    sub.add_argument('--filename-tmpl', default='{}', help="lq stem from gt stem (default '{}')")
    sub.add_argument('--recursive', action='store_true', help='search subfolders too (matching relative paths)')

    sub = add('pair-list', read_list, 'a text file of "<lq path> <gt path>" lines', 'train')
    sub.add_argument('--list', required=True, help='the pair list file')
    sub.add_argument('--root', help="root of the list's relative paths (default: the list's folder)")
    sub.add_argument('--order', default='lq-gt', choices=('lq-gt', 'gt-lq'), help='field order (default lq-gt)')
    return parser


def run(args):
    """Read the layout named by ``args`` and pack it; return the :class:`PackReport`."""
    if args.crop_size is None and (args.step is not None or args.thresh_size):
        raise PackError('--step and --thresh-size need --crop-size.')
    crop = None
    if args.crop_size is not None:
        crop = CropSpec(args.crop_size, args.step or max(1, args.crop_size // 2), args.thresh_size)
    items, problems, paired = args.reader(args)
    return pack(items, args.out, args.split, paired=paired, problems=problems, crop=crop,
                val_fraction=args.val_fraction, val_count=args.val_count, val_split=args.val_split, seed=args.seed,
                compress_level=args.compress_level, workers=args.workers, skip_bad=args.skip_bad,
                overwrite=args.overwrite, gt_center_crop=getattr(args, 'gt_center_crop', False),
                progress=not args.no_progress)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except PackError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(report.summary())
    return 0


__all__ = ['main', 'run', 'build_parser', 'auto_keys', 'pair_by_stem', 'pair_many_to_one', 'read_pair_list',
           'single_folder', 'sanitize_key']

if __name__ == '__main__':
    sys.exit(main())
