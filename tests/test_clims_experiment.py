"""CLIMS pipeline notebook (nbs/experiments/clims.ipynb) end to end on CPU, smoke settings (a tiny synthetic world, the
shipped tiny CNN as the baseline CAM and the shipped tiny CLIP): the files and metrics of every stage, that the
written CAMs evaluate to what the notebook reported, a rerun that resumes without rewriting anything, a SIGKILL during
training followed by a resume that gives the same metrics as the uninterrupted run, CLIMS+ and a loss ablation, the IRN
stage's masks, and the presets' loss weights, τ, schedule and IRN settings against the reference tables."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from conftest import kill_at_checkpoint_then_resume
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO/'nbs'/'experiments'/'clims.yaml').read_text())
# clims_mcis.md A3: the improved version's VOC/COCO and the camera-ready settings
REFERENCE = {'voc': dict(weights=(10, 24, 1, 0.2), cbs_threshold=0.26, epochs=15, batch_size=16, lr=2.5e-4, head_lr_mult=10,
                         weight_decay=1e-4, power=0.9, momentum_quirk=True, resize_long=(320, 640), crop=512),
             'coco': dict(weights=(2, 14, 1.25, 0.2), cbs_threshold=0.285, epochs=8, batch_size=16, lr=5e-4),
             'camera_ready': dict(weights=(10, 25, 29.5, 1.15), epochs=10, batch_size=16, lr=2.5e-4)}


def _assert(ok): assert ok, 'the killed run already wrote its later stages'


def _stable(m):
    "The metrics that must not depend on an interruption (timings and per-epoch seconds left out)."
    out = {k: v for k, v in m.items() if k not in ('timing', 'train', 'irn')}
    out['history'] = [{k: v for k, v in h.items() if k != 'seconds'} for h in m['train']['history']]
    if 'irn' in m: out['irn'] = dict(m['irn'], history=[{k: v for k, v in h.items() if k != 'seconds'} for h in m['irn']['history']])
    return out


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory, run_experiment_nb):
    "One uninterrupted smoke run under papermill (the reference of the resume tests)."
    d = tmp_path_factory.mktemp('clims')
    run_experiment_nb('clims', d/'out.ipynb', run_dir=str(d/'run'), smoke=True, n_jobs=1)
    return d


def test_clims_smoke_files_metrics_and_resume(smoke_run, run_experiment_nb):
    from wsss_lib.camfiles import load_cam_file
    from wsss_lib.data import SegDataset, read_mask
    from wsss_lib.metrics import threshold_curve, evaluate_cams
    run = smoke_run/'run'
    m = json.loads((run/'metrics.json').read_text())
    ds = SegDataset(run/'data', 'val')
    for d in ('cams_baseline', 'cams'):
        files = sorted((run/d).glob('*.npy'))
        assert [f.stem for f in files] == sorted(ds.ids)
        for f in files:
            c = load_cam_file(f)
            H, W = ds.image(f.stem).shape[:2]
            assert c['keys'].tolist() == ds.keys(f.stem).tolist() and c['cams'].shape[1:] == (H, W)
            assert 0 <= c['cams'].min() and c['cams'].max() <= 1
            if d == 'cams':   # make_clims's stride-4 `cam` beside `high_res`
                s = load_cam_file(f, key='strided')['cams']
                assert s.shape[1:] == ((H - 1) // 4 + 1, (W - 1) // 4 + 1) and s.max() <= 1
    h = m['train']['history']
    assert len(h) == 3 and all(np.isfinite(e['loss']) and {'otm', 'btm', 'cbs', 'reg'} <= set(e) for e in h)
    # the presets' values reach the run: the reference's VOC weights and τ
    assert tuple(m['train']['weights']) == REFERENCE['voc']['weights'] and m['train']['cbs_threshold'] == REFERENCE['voc']['cbs_threshold']
    assert m['train']['momentum_quirk'] is True
    # CLIMS's convention (bg 0.15) and the curve, recomputed from the files
    assert abs(evaluate_cams(run/'cams', ds, bg_threshold=0.15, n_jobs=1)['miou'] - m['cams']['miou']) < 1e-12
    cur = threshold_curve(run/'cams', ds, powers=None, n_jobs=1).threshold
    assert abs(cur.best['miou'] - m['cams']['best']['miou']) < 1e-12 and cur.best_value == m['cams']['best']['t']
    for k in ('baseline', 'cams'): assert 0 <= m[k]['fp'] <= 1 and 0 <= m[k]['best']['fp'] <= 1
    for i in ds.ids:
        mk = read_mask(run/'masks'/f'{i}.png')
        assert mk.shape == ds.image(i).shape[:2] and set(np.unique(mk).tolist()) <= {0} | {int(k) + 1 for k in ds.keys(i)}
    assert 0 <= m['crf']['miou'] <= 1 and m['crf']['bg_threshold'] == m['cams']['best']['t']
    assert set(m['table']) == {'baseline CAM', 'CLIMS CAM', '+ CRF', '+ IRN'} and (run/'figures'/'overlays.png').stat().st_size > 0
    # IRN: an IR label and a walked mask per image, scored as reported, with CLIMS's thresholds
    from wsss_lib.metrics import evaluate_masks
    for i in ds.ids:
        ir, mk = read_mask(run/'ir_labels'/f'{i}.png'), read_mask(run/'irn_masks'/f'{i}.png')
        assert set(np.unique(ir).tolist()) <= {0, 255} | {int(k) + 1 for k in ds.keys(i)}
        assert mk.shape == ds.image(i).shape[:2] and set(np.unique(mk).tolist()) <= {0} | {int(k) + 1 for k in ds.keys(i)}
    assert abs(evaluate_masks(run/'irn_masks', ds, n_jobs=1)['miou'] - m['irn']['miou']) < 1e-12
    assert (m['irn']['conf_fg_thres'], m['irn']['conf_bg_thres'], m['irn']['sem_seg_bg_thres']) == (0.30, 0.10, 0.2)
    assert len(m['irn']['history']) == 1 and np.isfinite(m['irn']['history'][0]['loss'])
    # rerun: nothing retrained, no CAM or mask rewritten, the same metrics
    dirs = ('cams', 'cams_baseline', 'masks', 'ir_labels', 'irn_masks')
    before = {p: p.stat().st_mtime_ns for d in dirs for p in (run/d).iterdir()}
    run_experiment_nb('clims', smoke_run/'out2.ipynb', run_dir=str(run), smoke=True, n_jobs=1)
    assert {p: p.stat().st_mtime_ns for d in dirs for p in (run/d).iterdir()} == before
    text = (smoke_run/'out2.ipynb').read_text()
    assert 'CLIMS 1/3: loss' in (smoke_run/'out.ipynb').read_text() and 'CLIMS 1/3: loss' not in text and 'CLIMS CAMs: 0 written' in text
    assert 'IRN 1/1: loss' in (smoke_run/'out.ipynb').read_text() and 'IRN 1/1: loss' not in text   # the boundary net not retrained
    assert _stable(json.loads((run/'metrics.json').read_text())) == _stable(m)


def test_clims_sigkill_during_training_then_resume(smoke_run, tmp_path):
    "`wsss run clims --preset smoke` killed (SIGKILL) after its first epoch's checkpoint, resumed: the uninterrupted metrics."
    d = kill_at_checkpoint_then_resume('clims', tmp_path/'runs', 'clims.pt', [('n_jobs', 1)], after_kill=lambda d: _assert(not (d/'metrics.json').exists() or 'crf' not in json.loads((d/'metrics.json').read_text())))
    assert 'CLIMS 1/3: loss' not in (d/'log.txt').read_text().split('=== attempt 2')[-1]      # the first epoch was not trained again
    assert _stable(json.loads((d/'metrics.json').read_text())) == _stable(json.loads((smoke_run/'run'/'metrics.json').read_text()))


def test_clims_plus_ablation_and_stage_order(tmp_path, run_experiment_nb):
    from papermill.exceptions import PapermillExecutionError
    run = tmp_path/'plus'
    run_experiment_nb('clims', tmp_path/'plus.ipynb', run_dir=str(run), smoke=True, n_jobs=1, variant='clims_plus',
                      losses=['reg'], stages=['train'], bg_top_k=2)
    m = json.loads((run/'metrics.json').read_text())
    assert all(set(h) >= {'nce', 'reg'} and 'otm' not in h for h in m['train']['history'])
    bg = json.loads((run/'bg_texts.json').read_text())
    info = json.loads((run/'data'/'dataset.json').read_text())
    assert len(bg) == 12 and all(len(v) == 2 and set(v) <= set(info['background_texts']) for v in bg.values())
    with pytest.raises(PapermillExecutionError, match="stage 'irn' needs the CAMs"):   # IRN walks CAMs: none were made here
        run_experiment_nb('clims', tmp_path/'irn.ipynb', run_dir=str(run), smoke=True, stages=['irn'])
    with pytest.raises(PapermillExecutionError, match='resnet50_tv_in1k'):   # the paper's ImageNet backbone must be a local file
        run_experiment_nb('clims', tmp_path/'w.ipynb', run_dir=str(tmp_path/'w'), smoke=True, irn_weights='resnet50_tv_in1k.safetensors')
    src = json.loads((REPO/'nbs'/'experiments'/'clims.ipynb').read_text())
    params = next(''.join(c['source']) for c in src['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    assert "stages = ['baseline', 'finetune', 'train', 'cams', 'crf', 'irn']" in params


def test_presets_match_the_reference_table():
    from wsss_lib.methods.clims import clims_settings
    for name, ref in REFERENCE.items():
        s = clims_settings(name)
        for k, v in ref.items(): assert s[k] == (tuple(v) if isinstance(v, tuple) else v), (name, k, s[k], v)
    paper = SPEC['presets']['paper']
    assert paper['settings'] == 'voc' and 'weights' not in paper and 'cbs_threshold' not in paper   # weights and τ: the VOC table's
    ref = REFERENCE['voc']
    for k in ('epochs', 'batch_size', 'lr', 'crop', 'momentum_quirk'): assert paper[k] == ref[k], k
    assert tuple(paper['resize_long']) == ref['resize_long'] and paper['scales'] == [1.0, 0.5, 1.5, 2.0] and paper['bg_threshold'] == 0.15
    for n, p in SPEC['presets'].items():
        assert 'weights' not in p and 'cbs_threshold' not in p and p.get('settings', 'voc') == ('camera_ready' if n == 'paper_camera_ready' else 'voc')
    cr = SPEC['presets']['paper_camera_ready']      # finetune_CLIP.py and train_CLIMS.py's defaults
    assert (cr['version'], cr['finetune_epochs'], cr['finetune_batch_size'], cr['finetune_lr'], cr['finetune_crop']) == ('camera_ready', 20, 16, 5e-5, 448)
    assert (cr['epochs'], cr['batch_size'], cr['lr'], cr['crop']) == (REFERENCE['camera_ready']['epochs'], 16, 2.5e-4, 512)
    from wsss_lib.irn import IRN_TRAIN, IRN_PRESETS   # IRN's train_irn settings and CLIMS's run_sample.py thresholds
    assert (paper['irn_epochs'], paper['irn_batch_size'], paper['irn_crop'], paper['irn_lr'], paper['irn_backbone']) == \
           (IRN_TRAIN['epochs'], IRN_TRAIN['batch_size'], IRN_TRAIN['crop'], IRN_TRAIN['lr'], 'resnet50')
    assert paper['irn_preset'] == 'clims' and IRN_PRESETS['clims'] == dict(conf_fg_thres=0.30, conf_bg_thres=0.10, sem_seg_bg_thres=0.2)


def test_camera_ready_finetunes_clip_then_trains_the_bottleneck_head(tmp_path, run_experiment_nb):
    "version camera_ready: stage 'finetune' fine-tunes CLIP (its checkpoint, its history), CLIMS trains the Bottleneck head with the camera-ready weights."
    import torch
    from papermill.exceptions import PapermillExecutionError
    run = tmp_path/'cr'
    run_experiment_nb('clims', tmp_path/'cr.ipynb', run_dir=str(run), smoke=True, n_jobs=1, version='camera_ready',
                      stages=['baseline', 'finetune', 'train', 'cams'])
    m = json.loads((run/'metrics.json').read_text())
    assert len(m['finetune']['history']) == 1 and {'loss_i', 'loss_t'} <= set(m['finetune']['history'][0])
    assert tuple(m['train']['weights']) == REFERENCE['camera_ready']['weights'] and m['train']['cbs_threshold'] is None
    sd = torch.load(run/'checkpoints'/'clims.pt', weights_only=True)['model']
    assert 'classifier.1.weight' in sd and 'classifier.0.conv1.weight' in sd and sd['classifier.1.weight'].shape[0] == 6 + 1
    ft = torch.load(run/'checkpoints'/'clip_finetune.pt', weights_only=True)['model']
    from wsss_lib.clip import load_clip
    shipped = load_clip('wsss-tiny-vit', pretrained='wsss-tiny', device='cpu').model.state_dict()
    assert not torch.equal(ft['logit_scale'], shipped['logit_scale'])                # CLIP itself was trained
    assert 0 <= m['cams']['best']['miou'] <= 1 and 'CLIP fine-tuning 1/1' in (tmp_path/'cr.ipynb').read_text()
    with pytest.raises(PapermillExecutionError, match="run stage 'finetune' first"):
        run_experiment_nb('clims', tmp_path/'x.ipynb', run_dir=str(tmp_path/'x'), smoke=True, version='camera_ready', stages=['train'])
