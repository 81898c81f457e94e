"""uniremoval.app.service without a browser: same pixels as uniremoval-restore, bad files as messages."""
import os
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np

from uniremoval.app import service


def test_service_equals_restore_command_and_reports_bad_files(tmp_path):
    img = (np.random.RandomState(1).rand(40, 36, 3) * 65535).astype(np.uint16)  # 16-bit stays 16-bit
    photo = str(tmp_path / 'photo.png')
    cv2.imwrite(photo, img)
    checkpoint, opt_file = service.demo_model_settings()
    ref = str(tmp_path / 'ref.png')
    subprocess.run([osp.join(osp.dirname(sys.executable), 'uniremoval-restore'), '-i', photo, '-o', ref, '-w',
                    checkpoint, '-opt', opt_file, '--tile', '24', '--tile-overlap', '4', '--device', 'cpu', '-q'],
                   check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    model = service.load_model()
    calls = []
    res = service.restore_file(model, photo, str(tmp_path), 24, 4, lambda d, t: calls.append((d, t)))
    assert res.ok and res.probabilities == {}
    assert res.image.dtype == np.uint16
    assert np.array_equal(cv2.imread(res.output, cv2.IMREAD_UNCHANGED), cv2.imread(ref, cv2.IMREAD_UNCHANGED))
    assert calls[-1] == (4, 4) and len(calls) == 4
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    res = service.restore_file(model, str(bad), str(tmp_path))
    assert not res.ok and res.error == 'bad.png: cannot decode image (corrupt or unsupported format)'
