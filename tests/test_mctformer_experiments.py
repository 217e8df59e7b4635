"""MCTformer pipeline notebook (nbs/experiments/mctformer.ipynb) end to end under papermill on CPU, smoke settings:
synthetic world, tiny MCTformer-V2 and AffinityNet from random init. Checks every stage's files and metrics, that the
written seeds evaluate to what the notebook reported, and that a rerun of the same run folder resumes (no retraining,
no file rewritten)."""
import json, os
from pathlib import Path
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mctformer_pipeline_smoke_and_resume(tmp_path, run_experiment_nb):
    _run = lambda out, **p: run_experiment_nb('mctformer', out, **p)
    from wsss_lib.camfiles import load_cam_file
    from wsss_lib.data import read_mask, SegDataset
    from wsss_lib.metrics import threshold_curve
    run = tmp_path/'run'
    _run(tmp_path/'out.ipynb', run_dir=str(run), smoke=True, n_jobs=1)
    m = json.loads((run/'metrics.json').read_text())
    assert len(m['classifier']['history']) == 2 and 0 <= m['classifier']['per_image_mAP'] <= 1
    ds = SegDataset(run/'data', 'train')
    ids = ds.ids
    for v in ('cams_attn', 'cams', 'cams_sym'):
        files = sorted((run/v).glob('*.npy'))
        assert [f.stem for f in files] == sorted(ids)
        for f in files[:4]:
            d = load_cam_file(f)
            assert d['keys'].tolist() == ds.keys(f.stem).tolist()
            assert d['cams'].shape[1:] == ds.image(f.stem).shape[:2] and 0 <= d['cams'].min() and d['cams'].max() <= 1
        assert 0 <= m['seeds'][v]['miou'] <= 1 and 0 <= m['seeds'][v]['best_t'] < 0.6
    # the evaluator scores the written seeds exactly as the notebook reported
    cur = threshold_curve(run/'cams', ds, ids=ids, powers=None, n_jobs=1)
    assert abs(cur.threshold.best['miou'] - m['seeds']['cams']['miou']) < 1e-12
    # PSA α maps: CRF posteriors {0: bg, key+1: class}, summing to 1
    q = np.load(run/'crf_12'/f'{ids[0]}.npy', allow_pickle=True).item()
    assert sorted(q) == [0] + [int(k) + 1 for k in ds.keys(ids[0])]
    assert np.allclose(sum(q.values()), 1, atol=1e-3)
    assert m['affinity']['history'][0]['loss'] > 0 and np.isfinite(m['affinity']['history'][0]['loss'])
    for i in ids:
        mk = read_mask(run/'masks'/f'{i}.png')
        assert mk.shape == ds.image(i).shape[:2] and set(np.unique(mk).tolist()) <= {0} | {int(k) + 1 for k in ds.keys(i)}
    assert 0 <= m['rw']['miou'] <= 1 and m['rw']['bg_thr'] == m['seeds']['cams']['best_t']
    assert set(m['table']) == {'V2 seeds', '+ patch affinity', '+ S + Sᵀ (instead)', '+ PSA random walk'}
    assert (run/'figures'/'overlays.png').stat().st_size > 0 and (run/'checkpoints'/'mctformer.pt').exists()
    # resume: same run folder -> no epoch retrained, no seed / α map / mask rewritten
    before = {p: p.stat().st_mtime_ns for d in ('cams', 'crf_1', 'masks') for p in (run/d).iterdir()}
    _run(tmp_path/'out2.ipynb', run_dir=str(run), smoke=True, n_jobs=1)
    assert {p: p.stat().st_mtime_ns for d in ('cams', 'crf_1', 'masks') for p in (run/d).iterdir()} == before
    text = (tmp_path/'out2.ipynb').read_text()
    assert 'epoch 1/2: loss' in (tmp_path/'out.ipynb').read_text() and 'AffinityNet 1/1: loss' in (tmp_path/'out.ipynb').read_text()
    assert 'epoch 1/2: loss' not in text and 'AffinityNet 1/1: loss' not in text   # the trainer's epoch lines: nothing retrained
    assert 'cams: 0 written' in text and '(0 written)' in text
    m2 = json.loads((run/'metrics.json').read_text())
    assert m2['table'] == m['table'] and len(m2['classifier']['history']) == 2
