"""The Gradio page of ``uniremoval-app`` over :mod:`uniremoval.app.service` (no restoration logic here).

Offline and private by construction: :func:`offline_environment` turns Gradio's analytics, telemetry and
update check off before Gradio is imported; the theme uses system fonts (Gradio's default theme loads
Google Fonts); no share link; uploads and results live in one temporary folder per server
(``GRADIO_TEMP_DIR``), outputs in one folder per browser session removed when the session ends.
"""
import os
import shutil
import tempfile
import threading
from os import path as osp

OFFLINE_ENVIRONMENT = {
    'GRADIO_ANALYTICS_ENABLED': 'False',
    'GRADIO_TELEMETRY_ENABLED': 'False',
    'GRADIO_CHECK_VERSION': 'False',
    'HF_HUB_DISABLE_TELEMETRY': '1',
    'HF_HUB_OFFLINE': '1',
}
SYSTEM_FONTS = ['ui-sans-serif', 'system-ui', 'sans-serif']
MONO_FONTS = ['ui-monospace', 'monospace']


def offline_environment(temp_dir):
    """Set the environment that keeps Gradio offline and its files in ``temp_dir`` (before importing it)."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    os.environ['GRADIO_TEMP_DIR'] = temp_dir


def _format_results(results, model):
    lines = [f'**Model:** {model.description} ({model.engine}, {model.device})', '']
    for r in results:
        if r.ok:
            line = f'- **{r.name}**: restored in {r.seconds:.2f} s'
            if r.probabilities:
                probs = ', '.join(f'{k} {v:.1%}' for k, v in r.probabilities.items())
                line += f'; classifier: {probs}'
            lines.append(line)
        else:
            lines.append(f'- **Error**: {r.error}')
    return '\n'.join(lines)


def build_page():
    """The ``gr.Blocks`` page (Gradio imported here, after :func:`offline_environment`)."""
    import gradio as gr

    from uniremoval.app import service
    from uniremoval.restoration import SetupError

    models, lock = {}, threading.Lock()

    def get_model(source, checkpoint_upload, checkpoint_path, options_upload, engine, device):
        if source == 'shipped demo network':
            key = (None, None, engine, device)
            checkpoint, opt_file = None, None
        else:
            checkpoint = checkpoint_upload or (checkpoint_path or '').strip() or None
            opt_file = options_upload or None
            if checkpoint is None:
                raise SetupError('choose a checkpoint (.pth or .onnx): upload one or give its path')
            key = (checkpoint, opt_file, engine, device)
        with lock:
            if key not in models:
                models.clear()  # one model at a time in memory
                models[key] = service.load_model(checkpoint, opt_file, engine, device)
            return models[key]

    def session_folder(folder):
        return folder or tempfile.mkdtemp(prefix='session-', dir=os.environ.get('GRADIO_TEMP_DIR'))

    def run(files, source, checkpoint_upload, checkpoint_path, options_upload, tile, overlap, engine, device,
            folder, progress=gr.Progress()):
        folder = session_folder(folder)
        if not files:
            return None, [], 'Upload one or more images first.', folder
        try:
            tile, overlap = int(tile or 0), int(overlap or 0)
            if tile < 0 or overlap < 0 or (tile and overlap >= tile):
                raise SetupError('tile and overlap must be >= 0 and the overlap smaller than the tile')
            model = get_model(source, checkpoint_upload, checkpoint_path, options_upload, engine, device)
        except Exception as e:  # noqa: BLE001  (a set-up problem is shown in the page)
            return None, [], f'**Error**: {e}', folder
        results, slider = [], None
        for i, path in enumerate(files):
            name = osp.basename(path)

            def report(done, total, i=i, name=name):
                progress((done, total), desc=f'{name} ({i + 1}/{len(files)}): tiles', unit='tiles')

            results.append(service.restore_file(model, path, folder, tile, overlap, report, name=name))
            if slider is None and results[-1].ok:
                slider = (path, results[-1].output)
        outputs = [r.output for r in results if r.ok]
        return slider, outputs, _format_results(results, model), folder

    def end_session(folder):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    with gr.Blocks(title='uniremoval', analytics_enabled=False) as page:
        page.uniremoval_theme = theme
        folder = gr.State(None, delete_callback=end_session)  # called when the session ends
        gr.Markdown('# uniremoval: restore images in the browser\nRemoves haze, rain, blur and noise with a '
                    'Uni-Removal or ADS network. Everything runs on this machine; uploads are deleted when '
                    'the session ends.')
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio(['shipped demo network', 'my checkpoint'], value='shipped demo network',
                                  label='Model')
                with gr.Accordion('Checkpoint', open=False):
                    checkpoint_upload = gr.File(label='Checkpoint (.pth or .onnx)', file_types=['.pth', '.onnx'],
                                                type='filepath')
                    checkpoint_path = gr.Textbox(label='or its path on this machine')
                    options_upload = gr.File(label='Option file (.yml; optional for ONNX and the paper MPRNet)',
                                             file_types=['.yml', '.yaml'], type='filepath')
                with gr.Row():
                    tile = gr.Number(512, label='Tile size (0 = whole image)', precision=0, minimum=0,
                                     elem_id='tile')
                    overlap = gr.Number(32, label='Tile overlap', precision=0, minimum=0, elem_id='overlap')
                with gr.Row():
                    engine = gr.Dropdown(['auto', *service.available_engines()], value='auto', label='Engine')
                    device = gr.Dropdown(service.available_devices(), value='cpu', label='Device')
                files = gr.File(label='Images (drop one or several)', file_count='multiple', type='filepath',
                                elem_id='inputs')
                button = gr.Button('Restore', variant='primary', elem_id='restore')
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label='Before / after', type='filepath', elem_id='slider')
                status = gr.Markdown(elem_id='status')
                downloads = gr.File(label='Restored images (PNG, 16-bit inputs stay 16-bit)', file_count='multiple',
                                    interactive=False, elem_id='downloads')
        button.click(run, [files, source, checkpoint_upload, checkpoint_path, options_upload, tile, overlap, engine,
                           device, folder], [slider, downloads, status, folder])
    return page


def serve(host='127.0.0.1', port=7860, block=True):
    """Start the page on ``host:port`` (no share link) with a private temporary folder, removed when the
    server stops. Returns ``(page, temp folder)``; ``block=False`` returns at once (tests)."""
    temp_dir = tempfile.mkdtemp(prefix='uniremoval-app-')
    offline_environment(temp_dir)
    page = build_page()
    try:
        page.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                    theme=page.uniremoval_theme, footer_links=[], quiet=True, ssr_mode=False,
                    allowed_paths=[temp_dir])
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    if block:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return page, temp_dir
