"""wsss_lib.metrics together with the modules around it: GT from a data.SegDataset (synthetic and genuine VOC),
CAM files written and read by wsss_lib.cam (the evaluator's default loader), evaluation in worker processes."""
import os
from pathlib import Path
import numpy as np
import pytest
import wsss_lib
from wsss_lib.metrics import (evaluate_cams, evaluate_masks, threshold_curve, cams_to_label, confusion_matrix, miou)

os.environ.setdefault('WSSS_PROGRESS', '0')

def voc_sample():
    p = Path(os.environ.get('WSSS_VOC_SAMPLE', Path(wsss_lib.__file__).resolve().parents[2]/'shared'/'data'/'voc_sample'))
    return p if (p/'SegmentationClass').is_dir() else None

def test_cam_files_against_dataset(tmp_path):
    data = pytest.importorskip('wsss_lib.data'); cam = pytest.importorskip('wsss_lib.camfiles')
    from wsss_lib.synthetic import make_synthetic_voc
    root = make_synthetic_voc(tmp_path/'voc', n_train=6, n_val=2, seed=0)
    ds = data.SegDataset(root, 'train')
    rng = np.random.default_rng(0)
    ref, grid = {}, np.float32(np.arange(101) / 100)
    for i in ds.ids:
        g, keys = ds.mask(i), ds.keys(i)
        cams = rng.choice(grid, (len(keys),) + g.shape)                  # values on the thresholds
        cam.save_cam_file(tmp_path/'cams'/f'{i}.npy', keys, cams)
        back = cam.load_cam_file(tmp_path/'cams'/f'{i}.npy')             # as stored (the file may hold float16)
        ref[i] = (back['cams'], back['keys'], g)
    cur = threshold_curve(tmp_path/'cams', ds, n_jobs=2)              # default loader: wsss_lib.cam.load_cam_file
    assert cur.n_images == len(ds.ids)
    n = len(ds.classes) + 1
    for t in (0.0, 0.25, 0.5):
        per_t = sum(confusion_matrix(g, cams_to_label(c, k, bg=t), n) for c, k, g in ref.values())
        assert np.array_equal(cur.threshold.confs[round(t * 100)], per_t)
        r = evaluate_cams(tmp_path/'cams', ds, bg_threshold=t, n_jobs=2)
        assert np.array_equal(np.array(r['confusion']), per_t) and r['iou'].keys() >= set(ds.classes)
    r = evaluate_cams(tmp_path/'cams', ds, bg_power=2, n_jobs=1)
    assert np.array_equal(np.array(r['confusion']), cur.power.confs[1])

@pytest.mark.skipif(voc_sample() is None, reason='VOC sample not found')
def test_voc_sample_gt_against_itself():
    data = pytest.importorskip('wsss_lib.data')
    root = voc_sample()
    ds = data.SegDataset(root, root/'ImageSets'/'Segmentation'/'sample.txt')
    r = evaluate_masks(root/'SegmentationClass', ds, n_jobs=2, pred_invalid='ignore')   # the GT's 255 band as a prediction
    assert r['miou'] == 1.0 and r['miou_union'] == 1.0 and r['n_images'] == len(ds.ids)
    assert r['n_pixels'] < sum(ds.mask(i).size for i in ds.ids)       # the 255 band is not counted
