"""uniremoval-app in a real browser: headless Chromium driven by Selenium through the system ChromeDriver.

Starts ``uniremoval-app`` on a free local port (a real process), uploads a PNG, waits for the result, downloads
the restored PNG and checks it equals ``uniremoval-restore``'s output for the same checkpoint and tile settings;
then uploads a corrupt file and checks the error is on the page and the server still answers. Downloads nothing.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from os import path as osp

import cv2
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from uniremoval.app.service import demo_model_settings

BIN = osp.dirname(sys.executable)
TILE, OVERLAP = 32, 8


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for(url, proc, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f'uniremoval-app exited with {proc.returncode}: {proc.stdout.read()}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f'{url} did not answer in {seconds} s')


@pytest.fixture(scope='module')
def server():
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([osp.join(BIN, 'uniremoval-app'), '--port', str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        _wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver_path = shutil.which('chromedriver')
    assert chromium and driver_path, 'install chromium and chromium-driver (.ci/run does)'
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1400,1000',
                '--disable-gpu'):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _upload_and_run(browser, files):
    WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#inputs input[type=file]')))
    browser.find_element(By.CSS_SELECTOR, '#inputs input[type=file]').send_keys('\n'.join(files))
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '#inputs a, #inputs .file-name, #inputs td')) > 0)
    browser.find_element(By.ID, 'restore').click()


def test_restore_in_browser_equals_command_and_survives_a_corrupt_file(server, browser, tmp_path):
    rng = np.random.RandomState(0)
    img = cv2.GaussianBlur((rng.rand(48, 56, 3) * 255).astype(np.uint8), (5, 5), 0)
    photo = str(tmp_path / 'photo.png')
    cv2.imwrite(photo, img)
    checkpoint, opt_file = demo_model_settings()
    reference = str(tmp_path / 'reference.png')
    subprocess.run([osp.join(BIN, 'uniremoval-restore'), '-i', photo, '-o', reference, '-w', checkpoint, '-opt',
                    opt_file, '--tile', str(TILE), '--tile-overlap', str(OVERLAP), '--device', 'cpu', '-q'],
                   check=True, env=dict(os.environ, OMP_NUM_THREADS='1'))

    browser.get(server)
    wait = WebDriverWait(browser, 40)
    for elem_id, value in (('tile', TILE), ('overlap', OVERLAP)):
        box = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#{elem_id} input')))
        box.clear()
        box.send_keys(str(value))
    _upload_and_run(browser, [photo])
    wait.until(EC.text_to_be_present_in_element((By.ID, 'status'), 'restored in'))
    link = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#downloads a[href*="photo_restored.png"]'))
    with urllib.request.urlopen(link.get_attribute('href'), timeout=10) as r:
        data = np.frombuffer(r.read(), np.uint8)
    downloaded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    expected = cv2.imread(reference, cv2.IMREAD_UNCHANGED)
    assert downloaded.shape == expected.shape == img.shape
    assert np.array_equal(downloaded, expected)
    assert not np.array_equal(downloaded, img)  # the network changed the image

    corrupt = str(tmp_path / 'corrupt.png')
    with open(photo, 'rb') as f:
        head = f.read(60)  # a PNG signature and header, then nothing: truncated
    with open(corrupt, 'wb') as f:
        f.write(head)
    browser.get(server)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#inputs input[type=file]')))
    _upload_and_run(browser, [corrupt, photo])
    wait.until(EC.text_to_be_present_in_element((By.ID, 'status'), 'Error'))
    status = browser.find_element(By.ID, 'status').text
    assert 'corrupt.png: cannot decode image' in status
    assert 'photo.png: restored in' in status  # the other image of the batch still came back
    with urllib.request.urlopen(server, timeout=5) as r:
        assert r.status == 200
