"""MCIS pipeline notebook (nbs/experiments/mcis.ipynb) end to end on CPU, smoke settings (a tiny synthetic world, a
1/16-width VGG16-D1 at 32² inputs): the files and metrics of every stage, that the written maps evaluate to what the
notebook reported, a rerun that resumes without rewriting anything, a SIGKILL during training followed by a resume
that gives the same metrics as the uninterrupted run, and the presets' values against the reference (clims_mcis.md B7)."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from conftest import kill_at_checkpoint_then_resume
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO/'nbs'/'experiments'/'mcis.yaml').read_text())
# clims_mcis.md B7/B8: train.sh, train.py, test.py
REFERENCE = dict(input_size=256, epochs=15, batch_size=5, lr=1e-3, milestones=[5, 10], weight_decay=5e-4, contrast_from=2, common=1.0,
                 infer_epoch=10, n_related=3, gate=0.1, backbone='vgg16_d1')


def _assert(ok): assert ok, 'the killed run already wrote its later stages'


def _stable(m):
    "The metrics that must not depend on an interruption (timings and per-epoch seconds left out)."
    out = {k: v for k, v in m.items() if k not in ('timing', 'train')}
    out['history'] = [{k: v for k, v in h.items() if k != 'seconds'} for h in m['train']['history']]
    return out


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory, run_experiment_nb):
    "One uninterrupted smoke run under papermill (the reference of the resume tests)."
    d = tmp_path_factory.mktemp('mcis')
    run_experiment_nb('mcis', d/'out.ipynb', run_dir=str(d/'run'), smoke=True, n_jobs=1)
    return d


def test_mcis_smoke_files_metrics_and_resume(smoke_run, run_experiment_nb):
    from wsss_lib.camfiles import load_cam_file
    from wsss_lib.data import SegDataset, read_mask
    from wsss_lib.metrics import threshold_curve, evaluate_masks
    run = smoke_run/'run'
    m = json.loads((run/'metrics.json').read_text())
    ds = SegDataset(run/'data', 'val')
    for d in ('cams', 'cams_single', 'cams_self'):
        files = sorted((run/d).glob('*.npy'))
        assert [f.stem for f in files] == sorted(ds.ids)
        for f in files:
            c = load_cam_file(f)
            H, W = ds.image(f.stem).shape[:2]
            assert c['keys'].tolist() == ds.keys(f.stem).tolist() and c['cams'].shape[1:] == (H, W)
            assert 0 <= c['cams'].min() and c['cams'].max() <= 1
    h = m['train']['history']
    assert len(h) == 3 and all(np.isfinite(e['loss']) for e in h)
    assert h[0]['contrast_m'] == 0 and h[0]['contrast_n'] == 0 and h[2]['contrast_m'] > 0   # smoke: contrastive terms from epoch 1
    assert (run/'checkpoints'/'mcis_epoch_1.pt').exists() and m['cams']['checkpoint'] == 'mcis_epoch_1.pt'   # the kept epoch, not the last
    for k, d in (('cams', 'cams'), ('single', 'cams_single'), ('self_pairs', 'cams_self')):   # recomputed from the files
        cur = threshold_curve(run/d, ds, powers=None, n_jobs=1).threshold
        assert abs(cur.best['miou'] - m[k]['best']['miou']) < 1e-12 and cur.best_value == m[k]['best']['t'] and 0 <= m[k]['best']['fp'] <= 1
    for i in ds.ids:
        mk = read_mask(run/'masks'/f'{i}.png')
        assert mk.shape == ds.image(i).shape[:2] and set(np.unique(mk).tolist()) <= {0} | {int(k) + 1 for k in ds.keys(i)}
    assert abs(evaluate_masks(run/'masks', ds, n_jobs=1)['miou'] - m['masks']['miou']) < 1e-12
    assert m['masks']['rule'] == 'crf (departure: no saliency)' and m['masks']['bg_threshold'] == m['cams']['best']['t']
    assert set(m['table']) == {'single-image CAM', 'self-pair co-maps', 'MCIS maps', 'pseudo masks'}
    assert (run/'figures'/'overlays.png').stat().st_size > 0
    # rerun: nothing retrained, no map or mask rewritten, the same metrics
    dirs = ('cams', 'cams_single', 'cams_self', 'masks')
    before = {p: p.stat().st_mtime_ns for d in dirs for p in (run/d).iterdir()}
    run_experiment_nb('mcis', smoke_run/'out2.ipynb', run_dir=str(run), smoke=True, n_jobs=1)
    assert {p: p.stat().st_mtime_ns for d in dirs for p in (run/d).iterdir()} == before
    text = (smoke_run/'out2.ipynb').read_text()
    assert 'MCIS 1/3: loss' in (smoke_run/'out.ipynb').read_text() and 'MCIS 1/3: loss' not in text and 'maps (0 written)' in text
    assert _stable(json.loads((run/'metrics.json').read_text())) == _stable(m)


def test_mcis_sigkill_during_training_then_resume(smoke_run, tmp_path):
    "`wsss run mcis --preset smoke` killed (SIGKILL) after its first epoch's checkpoint, resumed: the uninterrupted metrics."
    d = kill_at_checkpoint_then_resume('mcis', tmp_path/'runs', 'mcis.pt', [('n_jobs', 1)], after_kill=lambda d: _assert(not (d/'metrics.json').exists() or 'masks' not in json.loads((d/'metrics.json').read_text())))
    assert 'MCIS 1/3: loss' not in (d/'log.txt').read_text().split('=== attempt 2')[-1]      # the first epoch was not trained again
    assert _stable(json.loads((d/'metrics.json').read_text())) == _stable(json.loads((smoke_run/'run'/'metrics.json').read_text()))


def test_presets_match_the_reference():
    from wsss_lib.methods.mcis import MCIS_SETTINGS
    for k in ('input_size', 'epochs', 'batch_size', 'lr', 'weight_decay', 'contrast_from', 'common', 'infer_epoch', 'n_related', 'gate'):
        assert MCIS_SETTINGS[k] == REFERENCE[k], k
    assert list(MCIS_SETTINGS['milestones']) == REFERENCE['milestones'] and MCIS_SETTINGS['lr_mults'] == (1, 2, 10, 20)
    paper = SPEC['presets']['paper']
    for k, v in REFERENCE.items(): assert paper[k] == v, (k, paper[k], v)
    src = json.loads((REPO/'nbs'/'experiments'/'mcis.ipynb').read_text())
    params = next(''.join(c['source']) for c in src['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    for k, v in REFERENCE.items(): assert f"{k} = {v!r}" in params, k   # the notebook's defaults are the code's too
