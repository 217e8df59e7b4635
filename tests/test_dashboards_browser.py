"""Real-browser test of the dashboards: JupyterLab serves a notebook that shows a CAMExplorer, headless Chromium (Debian's
`chromium`, driven by Playwright with `executable_path`; no browser download) runs it, checks that the widgets render,
moves the background-threshold slider with the keyboard and checks that the label-map image changes.

Screenshots go to the test's output dir (`tmp_path`); one copy goes to `figures/dashboard_cam_explorer.png` when that
file is missing or `$WSSS_UPDATE_FIGURES` is set (it is tracked: a plain test run leaves the checkout clean).
Without chromium or playwright the test is skipped, except under CI (`$CI` set), where it fails: `.ci/run` installs
chromium, `dev_requirements` playwright."""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)

def _need(ok:bool, why:str):
    if ok: return
    if os.environ.get('CI'): pytest.fail(f'{why} (CI must provide it: .ci/run installs chromium; playwright is a dev requirement)')
    pytest.skip(f'{why}: the dashboards were NOT tested in a real browser. To test them: sudo apt-get install -y chromium '
                '(Debian), .venv/bin/pip install playwright (README, "make test")')

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _notebook(path:Path, root:Path, cams:Path):
    src = ("from wsss_lib.data import SegDataset\n"
           "from wsss_lib.cam_explorer import CAMExplorer\n"
           f"ex = CAMExplorer(SegDataset({str(root)!r}, 'train'), {str(cams)!r}, bg_mode='threshold', bg_threshold=0.15)\n"
           "ex")
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'dash', 'metadata': {}, 'outputs': [], 'source': src}],
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb))

def _wait_http(url:str, proc, timeout:float=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'jupyter lab exited with code {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: pass
        time.sleep(0.5)
    raise TimeoutError(f'jupyter lab did not answer {url} within {timeout} s')

def test_cam_explorer_in_chromium(tmp_path):
    _need(CHROMIUM is not None, 'chromium is not installed (apt-get install -y chromium)')
    try: from playwright.sync_api import sync_playwright, TimeoutError as PWTimeout
    except ImportError: _need(False, 'the playwright Python package is not installed (pip install playwright; never `playwright install`)')
    from wsss_lib.data import SegDataset
    from wsss_lib.synthetic import make_synthetic_voc
    root = make_synthetic_voc(tmp_path/'syn', n_train=3, n_val=1, seed=0, size=(96, 128))
    ds = SegDataset(root, 'train')
    cams = tmp_path/'cams'; cams.mkdir()
    for i in ds.ids:   # CAMs in CLIP-ES's file layout: 0.3 on each GT object, so t=0.15 keeps the objects and t=0.45 drops them
        m, k = ds.mask(i), ds.keys(i)
        np.save(cams/f'{i}.npy', {'keys': k, 'attn_highres': np.stack([(m == kk + 1) * 0.3 for kk in k]).astype(np.float16)})
    nbdir = tmp_path/'lab'; nbdir.mkdir()
    _notebook(nbdir/'dash.ipynb', root, cams)
    # a private Jupyter config/settings dir: no first-run news toast over the page, nothing written to the user's
    settings = tmp_path/'settings'/'@jupyterlab'/'apputils-extension'; settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path/'settings'), JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path/'workspaces'), MPLBACKEND='Agg')
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', f'--ServerApp.token={token}',
           '--ServerApp.ip=127.0.0.1', f'--ServerApp.root_dir={nbdir}', '--ServerApp.open_browser=False']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = open(tmp_path/'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f'http://127.0.0.1:{port}/api/status?token={token}', proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'])
            try:
                page = browser.new_page(viewport={'width': 1600, 'height': 1000})
                page.goto(f'http://127.0.0.1:{port}/lab/tree/dash.ipynb?token={token}')
                page.wait_for_selector('.jp-Notebook', timeout=60_000)
                page.wait_for_selector('.jp-Notebook .jp-Cell .jp-InputArea-editor', timeout=60_000)
                prompt = "() => /\\[(\\*|\\d+)\\]/.test(document.querySelector('.jp-Notebook .jp-Cell .jp-InputPrompt').textContent)"
                # wait for the kernel: on a loaded machine a keypress sent before it is up can raise a "Select Kernel" dialog
                page.wait_for_function("() => /\\| Idle/.test(document.body.innerText)", timeout=120_000)
                for attempt in range(4):   # the cell runs once the kernel is up; retry the keypress until it is queued
                    if page.locator('.jp-Dialog').count():   # accept the preselected python3 kernel if asked anyway
                        page.click('.jp-Dialog .jp-mod-accept'); page.wait_for_timeout(1000)
                    page.click('.jp-Notebook .jp-Cell .jp-InputArea-editor')
                    page.keyboard.press('Shift+Enter')
                    try: page.wait_for_function(prompt, timeout=10_000); break
                    except PWTimeout:
                        if attempt == 3: raise
                page.wait_for_selector('.widget-slider', timeout=120_000)
                label = page.locator('.wsss-panel-label img')
                label.first.wait_for(timeout=60_000)
                page.wait_for_function("() => [...document.querySelectorAll('.widget-image')].filter(i => i.src && i.naturalWidth > 0).length >= 4",
                                       timeout=60_000)
                assert 'Error displaying widget' not in page.content()
                page.screenshot(path=str(tmp_path/'before.png'), full_page=True)
                before = label.first.get_attribute('src')
                thr = page.locator('.widget-slider', has=page.locator('.widget-label', has_text='threshold t'))
                handle = thr.locator('.noUi-handle')
                handle.focus()
                for _ in range(30): page.keyboard.press('ArrowRight')            # t: 0.15 -> 0.45
                page.wait_for_function("([b]) => document.querySelector('.wsss-panel-label img').src !== b", arg=[before], timeout=30_000)
                after = label.first.get_attribute('src')
                assert after != before
                page.wait_for_function("() => document.querySelector('.wsss-panel-label .widget-html').textContent.includes('t=0.45')", timeout=30_000)
                assert 'Error displaying widget' not in page.content()
                page.screenshot(path=str(tmp_path/'after.png'), full_page=True)
                fig = REPO/'figures'/'dashboard_cam_explorer.png'   # the masks at t=0.15; a tracked file: refreshed on request
                if not fig.exists() or os.environ.get('WSSS_UPDATE_FIGURES'):
                    fig.parent.mkdir(exist_ok=True); shutil.copyfile(tmp_path/'before.png', fig)
            except Exception:
                with_shot = tmp_path/'failure.png'
                try: page.screenshot(path=str(with_shot), full_page=True)
                except Exception: pass
                raise
            finally: browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(15)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
        log.close()
