"""Install the real BasicSR 1.4.2 from the package index on Python 3.10-3.13.

PyPI has only an sdist of ``basicsr`` 1.4.2, and its ``setup.py`` fails on Python 3.13:
``get_version()`` execs ``basicsr/version.py`` and then reads ``locals()['__version__']``, but
since PEP 667 ``locals()`` in a function returns a fresh snapshot, so the name is not there
(``KeyError: '__version__'``). ``pip download`` cannot fetch the sdist either, as it runs that
``setup.py`` to read the metadata. This script therefore:

1. downloads ``basicsr-1.4.2.tar.gz`` from the simple index pip uses (``PIP_INDEX_URL``,
   pip's ``index-url`` setting, else PyPI), or takes a local copy (``--sdist``), and checks its
   sha256 against the hash pinned below;
2. rewrites that one function to exec into an explicit dict;
3. builds a wheel with ``pip wheel --no-build-isolation --no-deps`` (without isolation, because
   ``setup_requires`` lists torch, which pip would otherwise download again into a throwaway
   build environment; the build itself imports neither torch nor numpy);
4. installs that wheel with pip, which brings BasicSR's own requirements.

The same route runs on every Python, so 3.10-3.12 install the same files as 3.13. Run it with
the interpreter of the target environment: ``python tools/install_basicsr.py``. Standard library
only; setuptools and wheel must be installed (``pip install --upgrade pip setuptools wheel``).
"""
import argparse
import hashlib
import importlib.metadata
import os
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

VERSION = '1.4.2'
SDIST = f'basicsr-{VERSION}.tar.gz'
SDIST_SHA256 = 'b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87'
DEFAULT_INDEX = 'https://pypi.org/simple'

OLD_GET_VERSION = """\
        exec(compile(f.read(), version_file, 'exec'))
    return locals()['__version__']
"""
NEW_GET_VERSION = """\
        namespace = {}
        exec(compile(f.read(), version_file, 'exec'), namespace)
    return namespace['__version__']
"""


def pip_index_url():
    """The index pip would use: PIP_INDEX_URL, else pip's configured ``index-url``, else PyPI."""
    if os.environ.get('PIP_INDEX_URL'):
        return os.environ['PIP_INDEX_URL']
    listing = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True)
    found = dict(re.findall(r"^([\w:.-]+)\.index-url='([^']*)'$", listing.stdout, flags=re.MULTILINE))
    for section in ('download', 'install', 'global'):
        if found.get(section):
            return found[section]
    return DEFAULT_INDEX


def ssl_context():
    """Verify TLS with the bundle pip is told to use (PIP_CERT), else the system's."""
    cafile = os.environ.get('PIP_CERT') or None
    return ssl.create_default_context(cafile=cafile)


def sdist_url(index_url, context):
    """Find the sdist's link on the PEP 503 project page ``<index>/basicsr/``."""
    page_url = index_url.rstrip('/') + '/basicsr/'
    request = urllib.request.Request(page_url, headers={'Accept': 'text/html'})
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        page = response.read().decode('utf-8', 'replace')
    for href in re.findall(r'href="([^"]+)"', page):
        link = urllib.parse.urljoin(page_url, href.replace('&amp;', '&'))
        if urllib.parse.urlsplit(link).path.rsplit('/', 1)[-1] == SDIST:
            return link.split('#', 1)[0]
    raise SystemExit(f'error: {page_url} lists no {SDIST}')


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(index_url, dest_dir):
    context = ssl_context()
    url = sdist_url(index_url, context)
    path = os.path.join(dest_dir, SDIST)
    print(f'downloading {url}')
    with urllib.request.urlopen(url, context=context, timeout=300) as response, open(path, 'wb') as out:
        for block in iter(lambda: response.read(1 << 20), b''):
            out.write(block)
    return path


def unpack(sdist, dest_dir):
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, 'data_filter'):  # 3.12+, and 3.10.12+/3.11.4+
            tar.extractall(dest_dir, filter='data')
        else:
            tar.extractall(dest_dir)
    return os.path.join(dest_dir, f'basicsr-{VERSION}')


def patch_setup_py(src_dir):
    path = os.path.join(src_dir, 'setup.py')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if text.count(OLD_GET_VERSION) != 1:
        raise SystemExit(f'error: {path} does not contain the expected get_version() body')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text.replace(OLD_GET_VERSION, NEW_GET_VERSION))


def installed_version():
    try:
        return importlib.metadata.version('basicsr')
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--sdist', help=f'a local {SDIST} to use instead of downloading it (offline mirrors)')
    parser.add_argument('--index-url', help='PEP 503 simple index to download from (default: the one pip uses)')
    parser.add_argument('--wheel-dir', help='keep the built wheel in this folder (default: a temporary one)')
    parser.add_argument('--force', action='store_true', help=f'rebuild and reinstall even if basicsr {VERSION} '
                        'is already installed')
    parser.add_argument('-q', '--quiet', action='store_true', help="pass -q to pip; show the build's output "
                        'only if it fails')
    args = parser.parse_args(argv)

    if not args.force and installed_version() == VERSION:
        print(f'basicsr {VERSION} is already installed (--force rebuilds it)')
        return 0
    pip = [sys.executable, '-m', 'pip'] + (['-q'] if args.quiet else [])
    with tempfile.TemporaryDirectory(prefix='basicsr-') as work:
        sdist = args.sdist or fetch_sdist(args.index_url or pip_index_url(), work)
        digest = sha256_of(sdist)
        if digest != SDIST_SHA256:
            raise SystemExit(f'error: {sdist} has sha256 {digest}, expected {SDIST_SHA256}')
        src_dir = unpack(sdist, os.path.join(work, 'src'))
        patch_setup_py(src_dir)
        wheel_dir = args.wheel_dir or os.path.join(work, 'wheel')
        capture = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) if args.quiet else {}
        build = subprocess.run(pip + ['wheel', '--no-build-isolation', '--no-deps', '-w', wheel_dir, src_dir],
                               **capture)
        if build.returncode:  # with --quiet, setuptools' warnings about BasicSR's packaging show only on failure
            sys.stdout.write(build.stdout or '')
            raise SystemExit(f'error: building the basicsr wheel failed (exit {build.returncode})')
        wheel = os.path.join(wheel_dir, f'basicsr-{VERSION}-py3-none-any.whl')
        reinstall = ['--force-reinstall', '--no-deps'] if args.force else []
        subprocess.run(pip + ['install'] + reinstall + [wheel], check=True)
    print(f'installed basicsr {installed_version()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
