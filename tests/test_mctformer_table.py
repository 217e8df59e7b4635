"""MCTformer stage-table notebook (nbs/experiments/mctformer_table.ipynb) under papermill: the six columns come from the
right stages of the right runs, a run of the wrong variant is refused, and (slow) the smoke preset runs the three
pipeline variants itself and tables their real metrics."""
import json, os
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


def _fake_run(folder, version, unet, seeds, rw=None, rw_seeds='cams'):
    "A run folder shaped like the pipeline's (metrics.json as mctformer.ipynb writes it, params.yaml as `wsss run` does)."
    folder.mkdir(parents=True)
    m = dict(classifier=dict(version=version, unet=unet, per_image_mAP=0.5 + version / 10, history=[{}] * 3),
             seeds={k: dict(miou=v, best_t=0.1 + i / 10, first_local_max_t=0.1, curve={}) for i, (k, v) in enumerate(seeds.items())})
    if rw is not None: m['rw'] = dict(miou=rw, iou=[], seeds=rw_seeds, bg_thr=0.3, beta=8, logt=6, bg='constant')
    (folder/'metrics.json').write_text(json.dumps(m))
    (folder/'params.yaml').write_text('params: {world: true, seed_split: val}\n')
    return folder


def test_table_columns_from_the_right_runs(tmp_path, run_experiment_nb):
    _run = lambda out, **p: run_experiment_nb('mctformer_table', out, **p)
    v1 = _fake_run(tmp_path/'r'/'a', 1, False, dict(cams_attn=0.11, cams=0.12, cams_sym=0.13))
    v2 = _fake_run(tmp_path/'r'/'b', 2, False, dict(cams_attn=0.21, cams=0.22, cams_sym=0.23), rw=0.29)
    un = _fake_run(tmp_path/'r'/'c', 2, True, dict(cams_attn=0.31, cams=0.32, cams_sym=0.33), rw=0.39, rw_seeds='cams_sym')
    run = tmp_path/'table'
    _run(tmp_path/'out.ipynb', v1_run=str(v1), v2_run=str(v2), unet_run=str(un), figures_dir=None, run_dir=str(run), attention_stats=0)
    m = json.loads((run/'metrics.json').read_text())
    assert m['table'] == {'V1 seeds': 0.11, 'V2 seeds': 0.21, '+ patch affinity': 0.22, '+ S+Sᵀ': 0.23,
                          '+ U-Net branch': 0.33, '+ PSA random walk': 0.39}
    assert m['details']['v2']['rw_miou'] == 0.29 and m['world'] == 'teaching world' and m['split'] == 'val'
    md = (run/'figures'/'mctformer_stage_table.md').read_text()
    assert md.splitlines()[2] == '| 11.0 | 21.0 | 22.0 | 23.0 | 33.0 | 39.0 |'
    assert (run/'figures'/'mctformer_stage_table.png').stat().st_size > 0
    # a V2 run given as the V1 run, or a U-Net run that walked from the wrong seeds, is refused
    papermill = pytest.importorskip('papermill')
    with pytest.raises(papermill.PapermillExecutionError, match='not the V1 run'):
        _run(tmp_path/'bad.ipynb', v1_run=str(v2), v2_run=str(v2), unet_run=str(un), figures_dir=None, run_dir=str(tmp_path/'bad'))
    un2 = _fake_run(tmp_path/'r'/'d', 2, True, dict(cams_attn=0.31, cams=0.32, cams_sym=0.33), rw=0.39, rw_seeds='cams')
    with pytest.raises(papermill.PapermillExecutionError, match='cams_sym'):
        _run(tmp_path/'bad2.ipynb', v1_run=str(v1), v2_run=str(v2), unet_run=str(un2), figures_dir=None, run_dir=str(tmp_path/'bad2'))


@pytest.mark.slow
def test_table_smoke_preset_runs_the_three_variants(tmp_path, run_experiment_nb):
    _run = lambda out, **p: run_experiment_nb('mctformer_table', out, **p)
    run = tmp_path/'table'
    _run(tmp_path/'out.ipynb', smoke=True, run_dir=str(run))
    m = json.loads((run/'metrics.json').read_text())
    real = {k: json.loads((run/'variants'/'mctformer'/f'smoke-{k}'/'metrics.json').read_text()) for k in ('v1', 'v2', 'v2-unet')}
    assert real['v1']['classifier']['version'] == 1 and 'rw' not in real['v1']
    assert real['v2-unet']['classifier']['unet'] and real['v2-unet']['rw']['seeds'] == 'cams_sym'
    assert m['table']['V1 seeds'] == real['v1']['seeds']['cams_attn']['miou']
    assert m['table']['+ U-Net branch'] == real['v2-unet']['seeds']['cams_sym']['miou']
    assert m['table']['+ PSA random walk'] == real['v2-unet']['rw']['miou']
    assert all(0 <= v <= 1 for v in m['table'].values())
    for k in ('v2', 'unet'):    # attention diagnostics of the real checkpoints: 4 blocks, fractions
        a = m['attention'][k]
        assert a['images'] == 4 and len(a['row_entropy']) == 4 and all(0 < e <= 1 + 1e-6 for e in a['row_entropy'])
        assert all(0 <= v <= 1 for v in a['fg_share_received'] + a['fg_share_top5']) and 0 < a['fg_share_of_patches'] < 1
    # a second call finds the three runs finished and starts none
    _run(tmp_path/'out2.ipynb', smoke=True, run_dir=str(run))
    assert 'run mctformer --run-id' not in (tmp_path/'out2.ipynb').read_text()
