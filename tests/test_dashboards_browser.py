"""Real-browser tests of the dashboards: one JupyterLab server (module-scoped fixture `lab`, shared by every test here)
serves copies of the dashboard notebooks; headless Chromium (Debian's `chromium`, driven by Playwright with
`executable_path`; no browser download) opens one, runs it as a user would (Run ▸ Run All Cells, with the notebook's
smoke parameters injected after its parameters cell, as papermill does), and checks what a person sees: the widgets
render without "Error displaying widget", the dashboard shows its defaults (the headless cells drive a separate
instance), the class legend and the colour bars are there, the controls do not overflow a 1600 px page with the file
browser open, a narrower page (1100 px) shrinks the CAM explorer's image panels instead of wrapping them, a slider move redraws, and "Export figure" writes a PNG and a PDF.

Screenshots of each dashboard go to the test's output dir; a copy goes to `figures/dashboard_NAME.png` when that file
is missing or `$WSSS_UPDATE_FIGURES` is set (tracked files: a plain test run leaves the checkout clean). Without
chromium or playwright the tests are skipped, except under CI (`$CI` set), where they fail: `.ci/run` installs
chromium, `dev_requirements` playwright."""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
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

def example_notebook(dest:Path, # folder served by the lab
                     name:str, # nbs/experiments/NAME.ipynb
                     **params)->Path:
    "A copy of an example notebook with `params` injected in a cell after its parameters cell (papermill's way)."
    nb = json.loads((REPO/'nbs'/'experiments'/f'{name}.ipynb').read_text())
    i = next(j for j, c in enumerate(nb['cells']) if 'parameters' in c.get('metadata', {}).get('tags', []))
    src = '# injected parameters (the browser test)\n' + ''.join(f'{k} = {v!r}\n' for k, v in params.items())
    nb['cells'].insert(i + 1, {'cell_type': 'code', 'execution_count': None, 'id': 'injected-parameters', 'metadata': {},
                               'outputs': [], 'source': src})
    out = dest/f'{name}.ipynb'; out.write_text(json.dumps(nb)); return out

class Lab:
    "A JupyterLab server and a headless Chromium, shared by the tests of this module."
    def __init__(self, root:Path, port:int, token:str, browser, tmp:Path):
        self.root, self.port, self.token, self.browser, self.tmp = root, port, token, browser, tmp

    def open(self, name:str, width:int=1600, height:int=1000):
        "Open notebook `name` (under `root`) in a new page, the file browser open; wait for an idle kernel."
        page = self.browser.new_page(viewport={'width': width, 'height': height})
        # ?reset: a fresh workspace, so the tabs of a notebook opened before are not restored (Run All went to one of them)
        page.goto(f'http://127.0.0.1:{self.port}/lab/tree/{name}?reset&token={self.token}')
        page.wait_for_selector('.jp-Notebook .jp-CodeCell .jp-InputArea-editor', timeout=60_000)   # code cells: a rendered markdown cell's editor is hidden
        # wait for the kernel: on a loaded machine a command sent before it is up can raise a "Select Kernel" dialog
        page.wait_for_function("() => /\\| Idle/.test(document.body.innerText)", timeout=120_000)
        if page.locator('.jp-Dialog').count(): page.click('.jp-Dialog .jp-mod-accept'); page.wait_for_timeout(500)
        if not page.locator('#filebrowser').is_visible():    # a person's usual layout: the file browser open on the left
            page.click('.jp-SideBar [data-id="filebrowser"]')
        return page

    def run_all(self, page, name:str, timeout_s:float=300):
        "Run ▸ Run All Cells; wait until the last of the notebook's code cells has run; fail on an error output."
        self.start_run_all(page); self.wait_run_all(page, name, timeout_s)

    def start_run_all(self, page):
        "Run ▸ Run All Cells, without waiting (two notebooks' kernels can then work at once)."
        page.click('.lm-MenuBar-itemLabel:text-is("Run")')
        page.click('.lm-Menu-itemLabel:text-is("Run All Cells")')

    def wait_run_all(self, page, name:str, timeout_s:float=300):
        "Wait until the last of the notebook's code cells has run; fail on an error output."
        n = sum(c['cell_type'] == 'code' and ''.join(c['source']).strip() != '' for c in json.loads((self.root/name).read_text())['cells'])
        page.wait_for_function("""([n]) => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(e => e.textContent.includes(`[${n}]`))
                                           && !/\\[\\*\\]/.test([...document.querySelectorAll('.jp-InputPrompt')].map(e => e.textContent).join(''))""",
                               arg=[n], timeout=timeout_s * 1000)
        err = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback")')
        assert err.count() == 0, err.first.inner_text()[-2000:]
        assert 'Error displaying widget' not in page.content()

    def screenshot(self, locator, name:str):
        "Screenshot of a dashboard into the test dir; into figures/NAME.png when missing or $WSSS_UPDATE_FIGURES is set."
        shot = self.tmp/f'{name}.png'
        page, vp = locator.page, locator.page.viewport_size
        h = int(locator.evaluate('e => e.getBoundingClientRect().height'))
        page.set_viewport_size({'width': vp['width'], 'height': max(vp['height'], h + 300)})   # the whole dashboard in view
        page.wait_for_timeout(300)
        try: locator.scroll_into_view_if_needed(); locator.screenshot(path=str(shot))
        finally: page.set_viewport_size(vp)
        fig = REPO/'figures'/f'{name}.png'
        if not fig.exists() or os.environ.get('WSSS_UPDATE_FIGURES'):
            fig.parent.mkdir(exist_ok=True); shutil.copyfile(shot, fig)
        return shot

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "One JupyterLab server + Chromium for every dashboard test of the module (starting them is most of a test's time)."
    _need(CHROMIUM is not None, 'chromium is not installed (apt-get install -y chromium)')
    try: from playwright.sync_api import sync_playwright
    except ImportError: _need(False, 'the playwright Python package is not installed (pip install playwright; never `playwright install`)')
    tmp = tmp_path_factory.mktemp('lab')
    root = tmp/'nbs'; root.mkdir()
    # a private Jupyter config/settings dir: no first-run news toast over the page, nothing written to the user's
    settings = tmp/'settings'/'@jupyterlab'/'apputils-extension'; settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    # every cell in the DOM (JupyterLab renders only the cells in view by default): outputs scrolled away stay checkable
    nbset = tmp/'settings'/'@jupyterlab'/'notebook-extension'; nbset.mkdir(parents=True)
    (nbset/'tracker.jupyterlab-settings').write_text(json.dumps({'windowingMode': 'none'}))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp/'settings'), JUPYTER_RUNTIME_DIR=str(tmp/'runtime'),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'), MPLBACKEND='Agg', WSSS_DATA=str(tmp/'data'),
               WSSS_RUNS=str(tmp/'runs'), OMP_NUM_THREADS='1')
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', f'--ServerApp.token={token}',
           '--ServerApp.ip=127.0.0.1', f'--ServerApp.root_dir={root}', '--ServerApp.open_browser=False']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = open(tmp/'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f'http://127.0.0.1:{port}/api/status?token={token}', proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'])
            try: yield Lab(root, port, token, browser, tmp)
            finally: browser.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(15)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
        log.close()

def _failure_shot(lab, page, name):
    try: page.screenshot(path=str(lab.tmp/f'{name}-failure.png'), full_page=True)
    except Exception: pass

def test_cam_explorer_run_all(lab):
    "dash_cam_explorer after Run All: defaults shown, legend and colour bars, no overflow, a slider redraws, export writes PNG + PDF."
    run = lab.tmp/'run_cam_explorer'
    example_notebook(lab.root, 'dash_cam_explorer', run_dir=str(run), smoke=True, device='cpu')
    page = lab.open('dash_cam_explorer.ipynb')
    try:
        lab.run_all(page, 'dash_cam_explorer.ipynb')
        dash = page.locator('.wsss-cam-explorer')
        dash.wait_for(timeout=60_000)
        page.wait_for_function("""() => [...document.querySelectorAll('.wsss-cam-explorer .widget-image')]
                                          .filter(i => i.offsetParent && !(i.src && i.naturalWidth > 0)).length === 0""", timeout=60_000)
        # the defaults, not what the headless cells set: CLIP-ES live, refined map, power α = 1, the refined-vs-initial row
        src = dash.locator('.widget-dropdown', has=page.locator('label', has_text='source')).locator('select')
        assert src.first.input_value() == 'clip_es (live)'
        alpha = dash.locator('.widget-slider', has=page.locator('.widget-label', has_text='power α'))
        assert alpha.locator('.widget-readout').inner_text().strip() == '1.00'
        assert 'α=1' in dash.locator('.wsss-panel-label .widget-html').inner_text()
        assert 'initial' in dash.locator('.wsss-panel-cmp_b .widget-html').inner_text() and 'mIoU' in dash.locator('.wsss-panel-cmp_b').inner_text()
        # legend and colour bars on screen; the busy line exists and is hidden at rest
        legend = dash.locator('.wsss-legend')
        assert legend.is_visible() and 'background' in legend.inner_text() and 'ignore' in legend.inner_text()
        assert dash.locator('.wsss-colorbar').first.is_visible() and dash.locator('.wsss-colorbar-diverging').is_visible()
        assert dash.locator('.wsss-panel-curve img').is_visible() and not dash.locator('.wsss-busy').is_visible()
        # 1600 px with the file browser open: nothing is clipped, every control row wraps inside the output area
        assert page.locator('#filebrowser').is_visible()
        over = page.evaluate("""() => [...document.querySelectorAll('.wsss-cam-explorer .widget-box, .wsss-cam-explorer .widget-hbox')]
                                      .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 2).length""")
        assert over == 0, f'{over} control rows overflow'
        lab.screenshot(dash, 'dashboard_cam_explorer')
        _panels_scale(page, 'wsss-cam-explorer', 'wsss-panel-image')
        # a slider move redraws the label map, the busy line shown while the kernel computes
        _watch_busy(page, 'wsss-cam-explorer')
        before = dash.locator('.wsss-panel-label img').get_attribute('src')
        alpha.locator('.noUi-handle').focus()
        for _ in range(10): page.keyboard.press('ArrowRight')              # α: 1.0 -> 2.0
        page.wait_for_function("([b]) => document.querySelector('.wsss-cam-explorer .wsss-panel-label img').src !== b", arg=[before], timeout=30_000)
        page.wait_for_function("() => document.querySelector('.wsss-cam-explorer .wsss-panel-label .widget-html').textContent.includes('α=2')", timeout=30_000)
        assert page.evaluate('() => window.__busySeen'), 'the busy line never showed during the slider move'
        _check_export(page, dash, 'wsss-cam-explorer', run/'figures'/'cam_explorer_export')   # PNG and PDF where the path box says
        assert 'Error displaying widget' not in page.content()
    except Exception:
        _failure_shot(lab, page, 'cam_explorer'); raise
    finally: page.close()

def _panels_scale(page, cls:str, panel:str, width:int=1100):
    "A narrower page (`width` px) shrinks the panels of the row holding `panel` instead of overflowing; the viewport restored after."
    row = f"document.querySelector('.{cls} .{panel}').parentElement"
    js = f"""() => {{ const r = {row}; const ps = [...r.children].filter(e => e.classList.contains('wsss-panel') && e.offsetParent);
                      return {{over: r.scrollWidth - r.clientWidth, right: r.getBoundingClientRect().right, row: r.clientWidth,
                              widths: ps.map(e => e.getBoundingClientRect().width),
                              imgs: ps.map(e => e.querySelector('img').getBoundingClientRect().width),
                              rights: ps.map(e => e.getBoundingClientRect().right)}}; }}"""
    vp, wide = page.viewport_size, page.evaluate(js)
    page.set_viewport_size({'width': width, 'height': vp['height']})
    try:
        page.wait_for_function(f"([w]) => {row}.clientWidth < w - 1", arg=[wide['row']], timeout=30_000)   # the page has re-laid out
        narrow = page.evaluate(js)
        assert narrow['over'] <= 2, f"the panel row overflows by {narrow['over']} px at {width} px"
        assert max(narrow['rights']) <= narrow['right'] + 2, f'a panel sticks out of its row at {width} px: {narrow}'
        assert all(n < w - 1 for n, w in zip(narrow['widths'], wide['widths'])), f"panels did not shrink: {wide['widths']} -> {narrow['widths']}"
        assert all(abs(i - w) <= 1 for i, w in zip(narrow['imgs'], narrow['widths'])), f'images do not fill their panels: {narrow}'
        _no_overflow(page, cls)
    finally: page.set_viewport_size(vp)

def _images_loaded(page, cls:str, timeout_ms:int=60_000):
    "Wait until every visible image of the dashboard with CSS class `cls` has loaded."
    page.wait_for_function(f"""() => [...document.querySelectorAll('.{cls} .widget-image')]
                                      .filter(i => i.offsetParent && !(i.src && i.naturalWidth > 0)).length === 0""", timeout=timeout_ms)

def _no_overflow(page, cls:str):
    "At 1600 px with the file browser open, no row of the dashboard is wider than its box (rows wrap instead)."
    assert page.locator('#filebrowser').is_visible()
    over = page.evaluate(f"""() => [...document.querySelectorAll('.{cls} .widget-box, .{cls} .widget-hbox')]
                                  .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 2).length""")
    assert over == 0, f'{over} rows of {cls} overflow'

def _watch_busy(page, cls:str):
    "From now on, `window.__busySeen` turns true once the dashboard's busy line shows."
    page.evaluate(f"""() => {{ const b = document.querySelector('.{cls} .wsss-busy'); window.__busySeen = false;
                             new MutationObserver(() => {{ if (getComputedStyle(b).visibility === 'visible') window.__busySeen = true; }})
                               .observe(b, {{attributes: true, attributeFilter: ['style']}}); }}""")

def _check_export(page, dash, cls:str, stem:Path):
    "Click the dashboard's Export figure: a valid PNG and PDF at `stem`.png/.pdf."
    dash.locator('.wsss-export button', has_text='Export figure').click()
    page.wait_for_function(f"() => document.querySelector('.{cls} .wsss-export').textContent.includes('wrote')", timeout=60_000)
    assert stem.with_suffix('.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and stem.with_suffix('.pdf').read_bytes()[:5] == b'%PDF-'

def _start(lab, name:str, run:Path):
    "Open example notebook `name` (smoke parameters, its run folder `run`) and start Run All; the page."
    example_notebook(lab.root, name, run_dir=str(run), smoke=True, device='cpu')
    page = lab.open(f'{name}.ipynb')
    try: lab.start_run_all(page)
    except Exception: _failure_shot(lab, page, name); page.close(); raise
    return page

def _dashboard_after_run_all(lab, page, nb:str, cls:str):
    "Wait for notebook `nb`'s Run All, then for its dashboard (CSS class `cls`) with every image loaded; the dashboard's locator."
    lab.wait_run_all(page, nb)
    dash = page.locator(f'.{cls}'); dash.wait_for(timeout=60_000)
    _images_loaded(page, cls)
    return dash

def _check_affinity_explorer(lab, page, run:Path):
    "dash_affinity: defaults (all blocks, head mean), legend, three colour bars, clicks pick the patch (ipyevents), export."
    try:
        dash = _dashboard_after_run_all(lab, page, 'dash_affinity.ipynb', 'wsss-affinity-explorer')
        # the defaults, not what the headless cells set: CLIP-ES's blocks (all 4 of the tiny CLIP's), the head mean
        slider = lambda label: dash.locator('.widget-slider', has=page.locator('.widget-label', has_text=label)).locator('.widget-readout')
        assert slider('blocks').inner_text().replace(' ', '') in ('0-3', '0–3'), slider('blocks').inner_text()
        heads = dash.locator('.widget-dropdown', has=page.locator('label', has_text='heads')).locator('select')
        assert heads.input_value() == 'mean of heads', heads.input_value()
        # legend (class swatches with background and ignore), colour bars (affinity, CAM, diverging difference), no busy line at rest
        legend = dash.locator('.wsss-legend')
        assert legend.is_visible() and 'background' in legend.inner_text() and 'ignore' in legend.inner_text()
        assert dash.locator('.wsss-colorbar').count() == 3 and dash.locator('.wsss-colorbar-diverging').is_visible()
        assert not dash.locator('.wsss-busy').is_visible()
        assert dash.locator('.wsss-click-note').inner_text().strip() == ''     # ipyevents is installed: no "needs ipyevents" line
        _no_overflow(page, 'wsss-affinity-explorer')
        lab.screenshot(dash, 'dashboard_affinity')
        # a click on the image picks the patch under the pointer: bottom-right corner, then top-left (patch (0, 0))
        img = dash.locator('.wsss-panel-image img'); box = img.bounding_box()
        rc = lambda: (slider('patch row').inner_text(), slider('patch col').inner_text())
        _watch_busy(page, 'wsss-affinity-explorer')
        for fx, fy in ((0.97, 0.97), (0.02, 0.02)):
            before, src = rc(), img.get_attribute('src')
            img.click(position={'x': box['width'] * fx, 'y': box['height'] * fy})
            page.wait_for_function("""([r, c]) => { const e = [...document.querySelectorAll('.wsss-affinity-explorer .widget-slider')]
                                          .filter(s => /patch (row|col)/.test(s.textContent)).map(s => s.querySelector('.widget-readout').textContent.trim());
                                        return e.length === 2 && (e[0] !== r || e[1] !== c); }""", arg=list(before), timeout=30_000)
            page.wait_for_function("([s]) => document.querySelector('.wsss-affinity-explorer .wsss-panel-image img').src !== s", arg=[src], timeout=30_000)
        assert rc() == ('0', '0'), rc()
        assert page.evaluate('() => window.__busySeen'), 'the busy line never showed while a click redrew'
        _check_export(page, dash, 'wsss-affinity-explorer', run/'figures'/'affinity_export')
        assert 'Error displaying widget' not in page.content()
    except Exception:
        _failure_shot(lab, page, 'affinity'); raise
    finally: page.close()

def _check_prompt_explorer(lab, page, run:Path):
    "dash_prompt_sharpness: defaults (A, B the first two templates, no synonym), legend, colour bar, export."
    try:
        dash = _dashboard_after_run_all(lab, page, 'dash_prompt_sharpness.ipynb', 'wsss-prompt-explorer')
        # the defaults, not the headless best/worst and synonyms: A and B the first two templates, no synonym typed
        sel = lambda label: dash.locator('.widget-dropdown', has=page.locator('label', has_text=label)).locator('select')
        assert (sel('template A').input_value(), sel('template B').input_value()) == ('a clean origami {}.', 'a rendering of a weird {}.')
        assert sel('class').first.input_value() == 'aeroplane'
        assert dash.locator('.widget-text', has=page.locator('label', has_text='synonyms')).locator('input').input_value() == ''
        legend = dash.locator('.wsss-legend')
        assert legend.is_visible() and 'background' in legend.inner_text() and 'ignore' in legend.inner_text()
        assert dash.locator('.wsss-colorbar').is_visible() and dash.locator('.wsss-prompt-stats').is_visible()
        assert not dash.locator('.wsss-busy').is_visible()
        _no_overflow(page, 'wsss-prompt-explorer')
        lab.screenshot(dash, 'dashboard_prompts')
        _check_export(page, dash, 'wsss-prompt-explorer', run/'figures'/'prompt_export')
        assert 'Error displaying widget' not in page.content()
    except Exception:
        _failure_shot(lab, page, 'prompts'); raise
    finally: page.close()

def test_affinity_and_prompt_explorers_run_all(lab):
    "dash_affinity and dash_prompt_sharpness after Run All: defaults shown, legend and colour bars, a click on the affinity image picks the patch, export writes PNG + PDF."
    # both notebooks run at once (two kernels): kernel start and imports overlap; then each is checked in turn. Their
    # smoke world is made here first, so the two kernels do not both generate it into $WSSS_DATA at once
    from wsss_lib.synthetic import teaching_world
    teaching_world(lab.tmp/'data', n_train=8, n_val=8, seed=1)
    runs = dict(affinity=lab.tmp/'run_affinity', prompts=lab.tmp/'run_prompts')
    pa = _start(lab, 'dash_affinity', runs['affinity'])
    try: pp = _start(lab, 'dash_prompt_sharpness', runs['prompts'])
    except Exception: pa.close(); raise
    try: _check_affinity_explorer(lab, pa, runs['affinity'])
    except Exception: pp.close(); raise                     # the first failure is the one reported
    _check_prompt_explorer(lab, pp, runs['prompts'])
