"""WeakCLIP experiment notebook (nbs/experiments/weakclip.ipynb) end to end on CPU, smoke settings: a tiny run world whose
input masks are CAM-baseline masks (the shipped tiny CNN's CAMs through a dense CRF), the shipped tiny CLIP, 6
iterations. The files and metrics (input and output masks scored by the same evaluator, recomputed here), the presets
against the reference's official settings, and a SIGKILL after the first checkpoint followed by a resume that gives the
uninterrupted run's metrics."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from conftest import kill_at_checkpoint_then_resume
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO/'nbs'/'experiments'/'weakclip.yaml').read_text())


def _assert(ok): assert ok, 'the killed run already wrote its later stages'


def _stable(m):
    "The metrics that must not depend on an interruption (timings and per-epoch seconds left out)."
    out = {k: v for k, v in m.items() if k not in ('timing', 'train')}
    out['input'] = {k: v for k, v in m['input'].items() if k != 'folder'}      # the run's own folder
    out['history'] = [{k: v for k, v in h.items() if k != 'seconds'} for h in m['train']['history']]
    return out


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    "One uninterrupted smoke run under papermill (the reference of the resume test)."
    papermill = pytest.importorskip('papermill')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    d = tmp_path_factory.mktemp('weakclip')
    papermill.execute_notebook(str(REPO/'nbs'/'experiments'/'weakclip.ipynb'), str(d/'out.ipynb'),
                               parameters=dict(run_dir=str(d/'run'), smoke=True), kernel_name='python3', progress_bar=False, cwd=str(REPO))
    return d


def test_weakclip_smoke_files_and_metrics(smoke_run):
    from wsss_lib.data import SegDataset, read_mask
    from wsss_lib.metrics import evaluate_masks
    run = smoke_run/'run'
    m = json.loads((run/'metrics.json').read_text())
    ds = SegDataset(run/'data', 'train')
    for d in ('input_masks', 'masks_raw', 'masks'):
        assert sorted(p.stem for p in (run/d).glob('*.png')) == sorted(ds.ids), d
        for i in ds.ids:
            mk = read_mask(run/d/f'{i}.png')
            assert mk.shape == ds.image(i).shape[:2] and set(np.unique(mk).tolist()) <= set(range(len(ds.classes) + 1)) | {255}
    # the same evaluator for the input masks and WeakCLIP's, recomputed from the files
    for key, d in (('input', 'input_masks'), ('weakclip_raw', 'masks_raw'), ('weakclip', 'masks')):
        assert abs(evaluate_masks(run/d, ds, n_jobs=1, pred_invalid='ignore')['miou'] - m[key]['miou']) < 1e-12
    assert m['direction']['delta'] == pytest.approx(m['weakclip']['miou'] - m['input']['miou'])
    assert m['direction']['holds'] == (m['weakclip']['miou'] > m['input']['miou'])
    h = m['train']['history']
    assert len(h) == 2 and all(np.isfinite(e['loss']) and {'seed', 'boundary', 'aux'} <= set(e) for e in h)
    assert m['train']['iters'] == 6 and m['train']['aux_weight'] == 0.4 and m['train']['chained'] is False and m['train']['adapter_lr_mult'] == 0
    assert (run/'checkpoints'/'weakclip.pt').exists() and (run/'figures'/'masks.png').stat().st_size > 0
    assert len(m['table']) == 3 and m['timing']['images_per_second'] > 0
    text = (smoke_run/'out.ipynb').read_text()
    assert 'WeakCLIP 1/2: loss' in text and "paper's direction" in text


def test_weakclip_presets_match_the_reference():
    "weakclip.md §7: VOC 20k it × 16, COCO 40k × 24, lr 1e-4, warm-up 1500, crop 512 in (2048, 512), loss at 64²."
    p = SPEC['presets']
    for name, it, bs in (('paper', 20000, 16), ('paper_coco', 40000, 24)):
        q = p[name]
        assert (q['iters'], q['batch_size'], q['lr'], q['warmup_iters'], q['crop'], q['img_scale'], q['feature_size']) == (it, bs, 1e-4, 1500, 512, [2048, 512], 64)
        assert (q['clip_model'], q['clip_pretrained']) == ('ViT-B-16', 'openai') and q['iters'] % q['ckpt_iters'] == 0
    assert p['paper_coco']['settings'] == 'coco' and p['world']['iters'] % p['world']['ckpt_iters'] == 0
    from wsss_lib.experiments import load_experiment, resolve_params
    exp = load_experiment('weakclip', REPO/'nbs'/'experiments')
    for name in p: resolve_params(exp, preset=name)          # every preset's values fit the notebook's parameters
    from wsss_lib.methods.weakclip import weakclip_settings
    assert weakclip_settings('voc')['crf_preset'] == 'weakclip' and weakclip_settings('coco')['crf_preset'] == 'weakclip_coco'


@pytest.fixture(scope='module')
def resumed_run(tmp_path_factory):
    "`wsss run weakclip --preset smoke` killed (SIGKILL) after its first checkpoint, then resumed to the end."
    return kill_at_checkpoint_then_resume('weakclip', tmp_path_factory.mktemp('runs'), 'weakclip.pt', (),
                                          after_kill=lambda d: _assert(not (d/'masks').exists() or not any((d/'masks').iterdir())))


def test_weakclip_sigkill_during_training_then_resume(smoke_run, resumed_run):
    "The killed and resumed run gives the uninterrupted run's metrics."
    d = resumed_run
    assert 'WeakCLIP 1/2: loss' not in (d/'log.txt').read_text().split('=== attempt 2')[-1]      # the first epoch was not trained again
    assert _stable(json.loads((d/'metrics.json').read_text())) == _stable(json.loads((smoke_run/'run'/'metrics.json').read_text()))


def test_methods_table_weakclip_row_recomputes_the_runs_masks(resumed_run, tmp_path):
    "The all-methods table's WeakCLIP row on the (resumed) smoke run's own images: its CAM source with the run's test views and make_crf's masks give the run's masks."
    import papermill
    from wsss_lib.data import read_mask
    run = resumed_run
    papermill.execute_notebook(str(REPO/'nbs'/'experiments'/'methods_table.ipynb'), str(tmp_path/'out.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(REPO),
                               parameters=dict(data_root=str(run/'data'), split='train', methods=['weakclip'], weakclip_runs={'mctformer': str(run)},
                                               seg_runs={}, run_missing=False, figures_dir=None, n_overlay=2, run_dir=str(tmp_path/'mt')))
    m = json.loads((tmp_path/'mt'/'metrics.json').read_text())
    r = m['rows']['WeakCLIP on MCTformer V2 masks']
    ids = sorted(p.stem for p in (run/'masks').glob('*.png'))
    same = np.mean([(read_mask(tmp_path/'mt'/'masks'/'weakclip_mctformer'/f'{i}.png') == read_mask(run/'masks'/f'{i}.png')).mean() for i in ids])
    assert same > 0.999, same          # one thread here, the run's own count there: at most a few pixels flip
    assert r['mask']['miou'] == pytest.approx(json.loads((run/'metrics.json').read_text())['weakclip']['miou'], abs=2e-3)
    assert 0 <= r['cam']['miou'] <= 1 and r['seconds_per_image'] > 0 and 'seg' not in r
    assert '| WeakCLIP on MCTformer V2 masks |' in (tmp_path/'mt'/'figures'/'methods_table.md').read_text()
