"""Segmentation experiment (nbs/experiments/seg.ipynb) on CPU, smoke settings (a tiny synthetic world, its GT masks
with a band of 255 as the 'pseudo masks'): the files and metrics, the scores recomputed from the written PNGs, and a
SIGKILL during training followed by a resume that ends with the uninterrupted run's metrics."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import kill_at_checkpoint_then_resume
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
    def killed_mid_training(d):
        import torch
        assert not (d/'metrics.json').exists()
        tr = torch.load(d/'checkpoints'/'seg.pt', weights_only=True)['extra']['trainer']
        assert (tr['epoch'], tr['batch']) < (3, 0), 'the kill came after training'     # killed mid-training (3 epochs of 2 batches)
    d = kill_at_checkpoint_then_resume('seg', tmp_path/'runs', 'seg.pt', [('ckpt_every', 1), ('n_jobs', 1)], after_kill=killed_mid_training)
    assert _stable(json.loads((d/'metrics.json').read_text())) == _stable(json.loads((smoke_run/'metrics.json').read_text()))
