"""Segmentation experiment (nbs/experiments/seg.ipynb) on CPU, smoke settings (a tiny synthetic world, its GT masks
with a band of 255 as the 'pseudo masks'): the files and metrics, the scores recomputed from the written PNGs, and a
SIGKILL during training followed by a resume that ends with the uninterrupted run's metrics."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO/'nbs'/'experiments'/'seg.yaml').read_text())
PARAMS = dict(smoke=True, ckpt_every=1, n_jobs=1)   # a checkpoint after every optimizer step: the kill lands mid-training


def _stable(m):
    "Metrics that must not depend on an interruption (seconds left out)."
    out = {k: v for k, v in m.items() if k not in ('timing', 'history', 'masks', 'data_root')}
    out['history'] = [{k: v for k, v in h.items() if k != 'seconds'} for h in m['history']]
    return out


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    papermill = pytest.importorskip('papermill')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    d = tmp_path_factory.mktemp('seg')
    papermill.execute_notebook(str(REPO/'nbs'/'experiments'/'seg.ipynb'), str(d/'out.ipynb'), parameters=dict(PARAMS, run_dir=str(d/'run')),
                               kernel_name='python3', progress_bar=False, cwd=str(REPO))
    return d/'run'


def test_seg_smoke_files_and_metrics(smoke_run):
    from wsss_lib.data import SegDataset, read_mask
    from wsss_lib.metrics import evaluate_masks
    m = json.loads((smoke_run/'metrics.json').read_text())
    val = SegDataset(smoke_run/'data', 'val')
    assert sorted(p.stem for p in (smoke_run/'seg_val').glob('*.png')) == sorted(val.ids)
    for i in val.ids: assert read_mask(smoke_run/'seg_val'/f'{i}.png').shape == val.image(i).shape[:2]
    assert abs(evaluate_masks(smoke_run/'seg_val', val, n_jobs=1)['miou'] - m['seg']['miou']) < 1e-12
    assert m['setting'] == 'clip_es' and m['paper'] == {'val': 71.1, 'test': 71.4} and len(m['history']) == 3
    assert m['pseudo_masks']['ignored_fraction'] > 0 and m['pseudo_masks']['miou_kept'] == 1.0   # GT with a 255 band
    assert (smoke_run/'checkpoints'/'seg.pt').exists() and (smoke_run/'figures'/'seg.png').stat().st_size > 0
    assert set(SPEC['presets']) >= {'smoke', 'world', 'paper_clip_es', 'paper_clims', 'paper_mctformer', 'paper_weakclip', 'paper_mcis'}


def test_seg_sigkill_during_training_then_resume(smoke_run, tmp_path):
    "`wsss run seg --preset smoke` killed (SIGKILL) after a training checkpoint, resumed: the uninterrupted run's metrics."
    runs = tmp_path/'runs'
    env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(REPO/'nbs'/'experiments'), WSSS_DEVICE='cpu')   # the reference run's thread count: numerics depend on it
    env.pop('IN_TEST', None)
    cmd = [sys.executable, '-m', 'wsss_lib.cli', 'run', 'seg', '--preset', 'smoke', '-p', 'ckpt_every', '1', '-p', 'n_jobs', '1',
           '--run-id', 'killed', '--no-progress']
    d = runs/'seg'/'killed'
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd='/')
    t0 = time.time()
    while not (d/'checkpoints'/'seg.pt').exists():
        assert p.poll() is None and time.time() - t0 < 120, 'the run ended before its first checkpoint'
        time.sleep(0.02)
    assert p.poll() is None, 'the run finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait(30)
    assert not (d/'metrics.json').exists()
    import torch
    tr = torch.load(d/'checkpoints'/'seg.pt', weights_only=True)['extra']['trainer']
    assert (tr['epoch'], tr['batch']) < (3, 0), 'the kill came after training'     # killed mid-training (3 epochs of 2 batches)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd='/', timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '=== attempt 2' in (d/'log.txt').read_text()
    assert _stable(json.loads((d/'metrics.json').read_text())) == _stable(json.loads((smoke_run/'metrics.json').read_text()))
    # the smoke preset ran to the end through `wsss run` (test_runs' generic smoke test leaves this experiment to this test)
    assert json.loads((d/'status.json').read_text())['status'] == 'finished' and not list(d.rglob('*.tmp*'))
