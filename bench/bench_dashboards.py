"""Benchmark wsss_lib.dashboards.CAMExplorer: the redraw from cache per slider move (background threshold t, power α,
a CRF parameter, the class shown) at VOC size (500×375) against the full recompute (CAM source forward/backward +
post-processing + CRF) the dashboard would do without its cache.

    .venv/bin/python bench/bench_dashboards.py [--quick] [--source clip_es|resnet50] [--reps N]

Random weights (no downloads): the CAMs mean nothing, the work is the real work (a full-size ViT-B/16 CLIP-ES forward
and Softmax-GradCAM + CAA, or a ResNet-50 Grad-CAM). `--quick` uses a tiny CLIP instead. Each row is the median of
`--reps` slider moves (every move sets a new value, so the CRF cache never answers); ratios are against the full
recompute measured in the same run. "fast panels" is what a move costs before the CRF panel (label map, its PNG,
IoU); the CRF then runs in the same callback (and is cached per parameter set). The "preview" rows run the CRF on a
½ / ¼ grid (`wsss_lib.dashboards.crf_preview`, approximate, labelled so in the dashboard)."""
import argparse, statistics, sys, tempfile, time, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import numpy as np
import torch
from PIL import Image
from wsss_lib.data import SegDataset, save_mask, read_mask
from wsss_lib.synthetic import make_synthetic_voc
from wsss_lib.cam_explorer import CAMExplorer

def voc_size_dataset(tmp:Path)->SegDataset:
    "One synthetic VOC-layout image resized to 500×375 (image bilinear, mask nearest), written as a VOC folder."
    src = make_synthetic_voc(tmp/'syn', n_train=4, n_val=1, seed=0, size=(120, 160))
    ds = SegDataset(src, 'train')
    iid = max(ds.ids, key=lambda i: len(ds.keys(i)))          # the image with the most classes
    root = tmp/'voc500'
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'): (root/d).mkdir(parents=True)
    Image.fromarray(ds.image(iid)).resize((500, 375), Image.BILINEAR).save(root/'JPEGImages'/f'{iid}.jpg', quality=90)
    save_mask(root/'SegmentationClass'/f'{iid}.png', np.asarray(Image.fromarray(ds.mask(iid)).resize((500, 375), Image.NEAREST)))
    (root/'ImageSets/Segmentation/train.txt').write_text(iid + '\n')
    (root/'dataset.json').write_text((src/'dataset.json').read_text())
    return SegDataset(root, 'train')

def make_source(kind:str, quick:bool, ds):
    from wsss_lib.cam import create_cam_source
    from wsss_lib.data import load_dataset_info
    torch.manual_seed(0)
    if kind == 'resnet50': return create_cam_source('cam', model='resnet50', num_classes=len(ds.classes), method='gradcam', device='cpu')
    from wsss_lib.clip import load_clip, register_model_config, small_clip_config
    if quick:
        register_model_config('bench-tiny', small_clip_config(image_size=224, patch_size=16, width=64, layers=4, heads=2))
        clip = load_clip('bench-tiny', pretrained=None, device='cpu')
    else: clip = load_clip('ViT-B-16', pretrained=None, device='cpu')   # full-size architecture, random weights
    return create_cam_source('clip_es', clip=clip, dataset=load_dataset_info(ds.root))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='tiny CLIP, fewer repetitions')
    ap.add_argument('--source', default='clip_es', choices=['clip_es', 'resnet50'])
    ap.add_argument('--reps', type=int, default=None)
    a = ap.parse_args()
    reps = a.reps or (3 if a.quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        ds = voc_size_dataset(Path(tmp))
        src = make_source(a.source, a.quick, ds)
        ex = CAMExplorer(ds, {'src': src}, auto_crf=True, crf_colour='rgb')
        assert ex.guard.error is None, ex.guard.error
        H, W = ex.image.shape[:2]
        assert (H, W) == (375, 500), (H, W)

        def full():
            ex.cache.clear(); ex.crf_cache.clear()
            t0 = time.perf_counter(); ex._load(); return time.perf_counter() - t0
        fulls = [full() for _ in range(max(2, reps // 2))]
        t_full = statistics.median(fulls)

        def moves(widget, values, crf:bool):
            ex.w_auto.value = crf
            ts, fast = [], []
            for v in values:
                t0 = time.perf_counter(); widget.value = v; ts.append(time.perf_counter() - t0)
                fast.append(ex.timings.get('post', np.nan) if widget in (ex.w_thr, ex.w_alpha) else np.nan)
                assert ex.guard.error is None, ex.guard.error
            return statistics.median(ts), statistics.median(fast)

        rows = []
        ex.w_bg.value = 'threshold'
        thr = [round(0.10 + 0.03 * i, 2) for i in range(2 * reps + 2)]
        rows.append(('threshold t (no CRF)',) + moves(ex.w_thr, thr[:reps], False))
        rows.append(('threshold t (+ CRF)',) + moves(ex.w_thr, thr[reps:2 * reps], True))
        ex.w_bg.value = 'power'
        al = [round(0.5 + 0.3 * i, 1) for i in range(2 * reps + 2)]
        rows.append(('power α (no CRF)',) + moves(ex.w_alpha, al[:reps], False))
        rows.append(('power α (+ CRF)',) + moves(ex.w_alpha, al[reps:2 * reps], True))
        rows.append(('CRF bi_compat (+ CRF)',) + moves(ex.w_crf['bi_compat'], [1.0 + 0.5 * i for i in range(reps)], True))
        for sc, name in ((0.5, '½'), (0.25, '¼')):   # crf_preview: the CRF on a smaller grid (approximate, labelled so)
            ex.w_auto.value = False; ex.w_crf_scale.value = sc
            rows.append((f'CRF bi_compat (+ CRF {name} preview)',) + moves(ex.w_crf['bi_compat'], [10.0 + 0.5 * i for i in range(reps)], True))
        ex.w_auto.value = False; ex.w_crf_scale.value = 1.0
        opts = [v for _, v in ex.w_class.options]
        rows.append(('class shown',) + moves(ex.w_class, [opts[i % len(opts)] for i in range(1, reps + 1)] if len(opts) > 1 else opts * reps, False))
        # the same image again (another image's visit in between): everything from the caches
        ex.w_auto.value = True
        t0 = time.perf_counter(); ex._load(); t_cached = time.perf_counter() - t0

        print(f"CAMExplorer at {W}×{H}, source {a.source}{' (tiny CLIP)' if a.quick and a.source == 'clip_es' else ''}, "
              f"K={len(ex.keys)} classes, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}")
        print(f"{'action':34s} {'per move ms':>12s} {'fast panels ms':>15s} {'vs full recompute':>18s}")
        print(f"{'full recompute (no cache)':34s} {1000 * t_full:12.1f} {'':>15s} {'1.00x':>18s}")
        for name, t, f in rows:
            fs = f'{1000 * f:15.1f}' if np.isfinite(f) else f"{'':>15s}"
            print(f"{name:34s} {1000 * t:12.1f} {fs} {t / t_full:17.3f}x")
        print(f"{'revisit (all cached)':34s} {1000 * t_cached:12.1f} {'':>15s} {t_cached / t_full:17.3f}x")
        fast = [t for n, t, _ in rows if '(no CRF)' in n or n == 'class shown']
        print(f"slider redraw from cache without CRF: max {1000 * max(fast):.1f} ms (target < 150 ms: {'met' if max(fast) < 0.150 else 'NOT met'})")

if __name__ == '__main__':
    main()
