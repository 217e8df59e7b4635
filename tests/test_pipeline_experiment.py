"""The whole pipeline (nbs/experiments/pipeline.ipynb) on CPU with the smoke presets: under papermill, the clip_es run
and the seg run it starts, the table; then a second pipeline on the same clip_es run killed (SIGKILL, every process of
it) while its seg run trains, rerun: it resumes the seg run and ends with the uninterrupted pipeline's metrics."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


def _stable(m):
    return {k: v for k, v in m.items() if k not in ('method_run', 'seg_run', 'table')} | {'table': [dict(r, source=None) for r in m['table']]}


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
    papermill = pytest.importorskip('papermill')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    runs = tmp_path_factory.mktemp('runs')
    papermill.execute_notebook(str(REPO/'nbs'/'experiments'/'pipeline.ipynb'), str(runs/'out.ipynb'),
                               parameters=dict(method='clip_es', smoke=True, run_dir=str(runs/'pipeline'/'ref')),
                               kernel_name='python3', progress_bar=False, cwd=str(REPO))
    return runs


def test_pipeline_smoke_runs_and_table(pipeline_run):
    from wsss_lib.runs import read_status, read_params_record
    m = json.loads((pipeline_run/'pipeline'/'ref'/'metrics.json').read_text())
    for d in ('clip_es/ref', 'seg/ref'): assert read_status(pipeline_run/d)['status'] == 'finished', d
    assert read_params_record(pipeline_run/'seg'/'ref')['params']['masks_run'] == 'clip_es/ref'
    seg = json.loads((pipeline_run/'seg'/'ref'/'metrics.json').read_text())
    ces = json.loads((pipeline_run/'clip_es'/'ref'/'metrics.json').read_text())
    t = {r['stage']: r for r in m['table']}
    assert t['CAM (initial Softmax-GradCAM)']['miou'] == ces['cams_initial']['best_power_1_2'] and t['CAM (initial Softmax-GradCAM)']['paper'] == 58.6
    assert t['pseudo masks (+ dCRF)']['miou'] == ces['pseudo_masks_crf']['miou'] and t['pseudo masks (+ dCRF)']['paper'] == 75.0
    assert t['segmentation + CRF (val)']['miou'] == seg['seg_crf']['miou'] and t['segmentation + CRF (val)']['paper'] == 71.1
    assert m['seg_miou'] == seg['seg']['miou'] and seg['masks'] == str(pipeline_run/'clip_es'/'ref'/'masks')
    assert '| stage | mIoU here (%) | paper, VOC (%)' in (pipeline_run/'pipeline'/'ref'/'figures'/'pipeline.md').read_text()


def _kill_tree(pid):
    import psutil
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    for p in procs:
        try: p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess: pass
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.slow   # ~3 min wall on a shared 2-core machine (four kernels, two of them nested); the seg experiment's own kill test runs in CI
def test_pipeline_killed_in_segmentation_then_resumed(pipeline_run):
    "A pipeline on the finished clip_es run, every process killed once its seg run has a training checkpoint; rerun: the same metrics."
    env = dict(os.environ, WSSS_RUNS=str(pipeline_run), WSSS_EXPERIMENTS=str(REPO/'nbs'/'experiments'), WSSS_DEVICE='cpu')   # the reference run's thread count: numerics depend on it
    env.pop('IN_TEST', None)
    cmd = [sys.executable, '-m', 'wsss_lib.cli', 'run', 'pipeline', '--preset', 'smoke', '-p', 'method_stage_id', 'ref',
           '-p', 'seg_params', '{ckpt_every: 1}', '--run-id', 'killed', '--no-progress']
    ck = pipeline_run/'seg'/'killed'/'checkpoints'/'seg.pt'
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd='/')
    t0 = time.time()
    while not ck.exists():
        assert p.poll() is None and time.time() - t0 < 240, 'the pipeline ended before its seg run checkpointed'
        time.sleep(0.02)
    _kill_tree(p.pid); time.sleep(2)
    assert not (pipeline_run/'seg'/'killed'/'metrics.json').exists(), 'the seg run finished before the kill'
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd='/', timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '=== attempt 2' in (pipeline_run/'seg'/'killed'/'log.txt').read_text()
    got = json.loads((pipeline_run/'pipeline'/'killed'/'metrics.json').read_text())
    ref = json.loads((pipeline_run/'pipeline'/'ref'/'metrics.json').read_text())
    assert _stable(got) == _stable(ref)


def test_every_pipeline_method_starts_valid_runs():
    "Each method's stage parameters (world and smoke, and WeakCLIP's input run) resolve against that experiment's schema, and the yaml lists exactly those methods."
    import nbformat, yaml
    from wsss_lib.core import BadInputError
    from wsss_lib.experiments import load_experiment, resolve_params
    nb = nbformat.read(REPO/'nbs'/'experiments'/'pipeline.ipynb', as_version=4)
    src = next(c.source for c in nb.cells if c.cell_type == 'code' and 'METHODS = {' in c.source)
    ns = dict(method='clip_es', teaching_world=lambda: '/teaching', BadInputError=BadInputError)
    exec(src, ns)
    M = ns['METHODS']
    assert set(M) == set(yaml.safe_load((REPO/'nbs'/'experiments'/'pipeline.yaml').read_text())['params']['method']['choices'])
    assert {m for m in M if M[m].get('input')} == {'weakclip'} and M['weakclip']['input'] == 'mctformer'
    for m, spec in M.items():
        exp = load_experiment(m, REPO/'nbs'/'experiments')
        for kind in ('world', 'smoke'):
            preset, pars = spec[kind](None)
            if kind == 'world' and spec.get('input'): pars = pars + [('masks_run', 'mctformer/x')]
            resolve_params(exp, [(k, str(v)) for k, v in pars], preset=preset)
            if kind == 'world': assert [v for k, v in pars if k in ('limit', 'train_limit')] == [1000], m   # 1000 train images each
    with pytest.raises(BadInputError, match='method'): exec(src, dict(ns, method='nope'))


def test_methods_table_segmentation_column(pipeline_run, tmp_path):
    "The all-methods table's segmentation column reads the pipeline's seg run, on the seg run's own val images: its mIoU + CRF, not marked †."
    import papermill
    seg = json.loads((pipeline_run/'seg'/'ref'/'metrics.json').read_text())
    papermill.execute_notebook(str(REPO/'nbs'/'experiments'/'methods_table.ipynb'), str(tmp_path/'out.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(REPO),
                               parameters=dict(data_root=seg['data_root'], split='val', methods=['clip_es'], seg_runs={'clip_es': 'ref'},
                                               seg_runs_root=str(pipeline_run), run_missing=False, figures_dir=None, n_overlay=2, run_dir=str(tmp_path/'mt')))
    m = json.loads((tmp_path/'mt'/'metrics.json').read_text())
    s = m['rows']['CLIP-ES']['seg']
    assert (s['miou'], s['crf_miou'], s['masks_run'], s['same_images']) == (seg['seg']['miou'], seg['seg_crf']['miou'], 'clip_es/ref', True)
    assert all('seg' not in r for n, r in m['rows'].items() if n != 'CLIP-ES')         # the Grad-CAM ablations make no masks to train on
    md = (tmp_path/'mt'/'figures'/'methods_table.md').read_text()
    assert f"| {100 * seg['seg_crf']['miou']:.1f} |" in md.split('| CLIP-ES |')[1].split('\n')[0] and '†' not in md
