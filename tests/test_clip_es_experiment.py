"""CLIP-ES generation notebook (nbs/experiments/clip_es.ipynb) end to end under papermill, on CPU, with a small
random CLIP (no weights are downloaded): on the synthetic dataset (with a resume run) and on a copy of the bundled
VOC sample. Checks the files it promises and that its outputs evaluate with the foundation's evaluator."""
import json, os, shutil
from pathlib import Path
import numpy as np
import pytest
import wsss_lib

REPO = Path(__file__).resolve().parents[1]
NB = REPO/'nbs'/'experiments'/'clip_es.ipynb'


def _voc_sample():
    p = os.environ.get('WSSS_VOC_SAMPLE')
    p = Path(p) if p else Path(wsss_lib.__file__).resolve().parents[2]/'shared'/'data'/'voc_sample'
    return p if (p/'JPEGImages').is_dir() else None


def _run(out_nb, **params):
    papermill = pytest.importorskip('papermill')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    papermill.execute_notebook(str(NB), str(out_nb), parameters=params, kernel_name='python3', progress_bar=False,
                               cwd=str(REPO))


def _check_outputs(run_dir, n):
    from wsss_lib.camfiles import load_cam_file
    from wsss_lib.data import read_mask
    cams = sorted((run_dir/'cams').glob('*.npy'))
    assert len(cams) == n and len(list((run_dir/'cams_initial').glob('*.npy'))) == n
    for f in cams:
        d = load_cam_file(f)
        c = np.asarray(d['cams'], np.float32)
        assert c.ndim == 3 and c.shape[0] == len(d['keys']) and 0 <= c.min() and c.max() <= 1.001
        m = read_mask(run_dir/'masks'/f'{f.stem}.png')
        assert m.shape == c.shape[1:]
        assert set(np.unique(m).tolist()) <= {0, 255} | {int(k) + 1 for k in d['keys']}
    m = json.loads((run_dir/'metrics.json').read_text())
    assert m['n_images'] == n and 'random' in m['weights']
    for k in ('cams_initial', 'cams_caa'):
        assert 0 <= m[k]['best_power_1_2'] <= 1 and m[k]['curve']['power']['values'] == [1, 2, 3, 4]
    assert 0 <= m['pseudo_masks_crf']['miou'] <= 1 and 0 <= m['pseudo_masks_filtered']['ignored_fraction'] <= 1
    assert (run_dir/'figures'/'overlay.png').stat().st_size > 0
    return m


def test_clip_es_experiment_synthetic(tmp_path):
    run_dir = tmp_path/'run'
    _run(tmp_path/'out.ipynb', run_dir=str(run_dir), smoke=True, pretrained='random', save_clip_es_layout=True)
    m = _check_outputs(run_dir, 3)
    for f in sorted((run_dir/'cams_clip_es').glob('*.npy')):   # the official layout holds the two CAM files' maps as written
        d = np.load(f, allow_pickle=True).item()
        assert set(d) == {'keys', 'attn_highres', 'highres'} and d['attn_highres'].dtype == np.float16
        for key, sub in (('attn_highres', 'cams'), ('highres', 'cams_initial')):
            np.testing.assert_array_equal(d[key], np.load(run_dir/sub/f.name, allow_pickle=True).item()['cams'])
    # the foundation's evaluator scores the written CAMs directly, as the notebook reported
    from wsss_lib.data import SegDataset
    from wsss_lib.metrics import evaluate_cams
    ds = SegDataset(run_dir/'data', 'train')
    ids = sorted(p.stem for p in (run_dir/'cams').glob('*.npy'))
    assert abs(evaluate_cams(run_dir/'cams', ds, ids=ids, bg_power=1, n_jobs=1)['miou'] - m['cams_caa']['miou_power']['1']) < 1e-12
    # resume: a second run finds every image done and rewrites nothing
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir/'cams').iterdir()}
    _run(tmp_path/'out2.ipynb', run_dir=str(run_dir), smoke=True, pretrained='random')
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir/'cams').iterdir()} == before
    assert '3 images already done, 0 computed' in (tmp_path/'out2.ipynb').read_text()


def test_clip_es_experiment_voc_folder(tmp_path):
    src = _voc_sample()
    if src is None: pytest.skip('VOC sample not found (set WSSS_VOC_SAMPLE)')
    root = tmp_path/'voc'
    shutil.copytree(src, root)
    split = 'sample'
    run_dir = tmp_path/'run'
    # the OpenAI weights are absent here: random_if_missing falls back to the small random CLIP
    _run(tmp_path/'out.ipynb', run_dir=str(run_dir), dataset='folder', data_root=str(root), split=split, limit=2,
         random_if_missing=True, cache_dir=str(tmp_path/'no_weights'))
    _check_outputs(run_dir, 2)


def test_clip_es_experiment_killed_mid_pipeline_resumes(tmp_path):
    "SIGKILL `wsss run clip_es` once its first CAM file exists (the CRF pool busy beside the network), rerun the same"
    "command: every image gets its CAM files and both masks, the masks_crf argmax agrees with masks wherever kept."
    import signal, subprocess, sys, time
    from wsss_lib.data import read_mask
    runs = tmp_path/'runs'
    env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(REPO/'nbs'/'experiments'), WSSS_DEVICE='cpu')
    cmd = [sys.executable, '-m', 'wsss_lib.cli', 'run', 'clip_es', '--preset', 'smoke', '-p', 'n_jobs', '2',
           '--run-id', 'killed', '--no-progress']
    d = runs/'clip_es'/'killed'
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd='/')
    t0 = time.time()
    while not list((d/'cams').glob('*.npy')) if (d/'cams').exists() else True:
        assert p.poll() is None and time.time() - t0 < 300, 'the run ended before its first CAM file'
        time.sleep(0.02)
    assert p.poll() is None, 'the run finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait(30); time.sleep(1)
    assert not (d/'metrics.json').exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd='/', timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '=== attempt 2' in (d/'log.txt').read_text()
    assert json.loads((d/'status.json').read_text())['status'] == 'finished' and not list(d.rglob('*.tmp*'))
    ids = sorted(f.stem for f in (d/'cams').glob('*.npy'))
    assert len(ids) == 3
    for i in ids:
        assert (d/'cams_initial'/f'{i}.npy').exists()
        m, mc = read_mask(d/'masks'/f'{i}.png'), read_mask(d/'masks_crf'/f'{i}.png')
        assert ((m == mc) | (m == 255)).all()
