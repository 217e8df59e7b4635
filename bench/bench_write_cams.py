"""Benchmark `wsss_lib.cam.write_cams` (images read ahead and files written by two threads beside the computation)
against the loop the experiments used before it (read the image, compute, write the file, one after the other), on a
VOC-size folder of JPEGs, with the same CAM source; both write identical files (checked before the table).

    .venv/bin/python bench/bench_write_cams.py [--n 40] [--threads 1] [--model test_resnet]

Times are medians of `--reps` interleaved runs, ratio = loop / write_cams, measured in this run."""
import argparse, shutil, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import torch
from PIL import Image
from wsss_lib.data import SegDataset, save_mask
from wsss_lib.core import save_text
from wsss_lib.camfiles import save_cam_file, load_cam_file
from wsss_lib.cam import create_cam_source, write_cams


def voc_folder(root:Path, n:int)->SegDataset:
    "n textured 500×375 JPEGs (quality 90, as VOC's) with 1-3 of 20 classes each, in the VOC layout."
    rng = np.random.default_rng(0)
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'): (root/sub).mkdir(parents=True, exist_ok=True)
    ids = [f'im{i:04d}' for i in range(n)]
    for i in ids:
        low = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((500, 375), Image.BICUBIC)) + rng.integers(0, 30, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(img).save(root/'JPEGImages'/f'{i}.jpg', quality=90)
        m = np.zeros((375, 500), np.uint8)
        for k in rng.choice(20, int(rng.integers(1, 4)), replace=False): m[rng.integers(0, 300):, rng.integers(0, 400):][:60, :80] = k + 1
        save_mask(root/'SegmentationClass'/f'{i}.png', m)
    save_text(root/'ImageSets'/'Segmentation'/'val.txt', '\n'.join(ids) + '\n')
    return SegDataset(root, 'val', label_source='mask')


def loop(src, ds, out:Path, dtype):
    "The experiments' loop before write_cams."
    for i in ds.ids:
        image, keys = ds.image(i), ds.keys(i)
        save_cam_file(out/f'{i}.npy', keys, src.compute(image, keys, i)['cams'], dtype=dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=40); ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--model', default='test_resnet')
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    try:
        ds = voc_folder(tmp/'voc', a.n)
        src = create_cam_source('cam', model=a.model, num_classes=20, device='cpu')
        print(f"{a.n} images 500×375, source 'cam' ({a.model}), torch threads {a.threads}, reps {a.reps}")
        print(f"{'files':10s} {'loop s/img':>11s} {'write_cams s/img':>17s} {'ratio':>6s}")
        for dtype in ('float32', 'float16'):
            loop(src, ds, tmp/'a', dtype); write_cams(src, ds, tmp/'b', dtype=dtype, overwrite=True)   # warm-up, and the check
            for i in ds.ids:
                x, y = load_cam_file(tmp/'a'/f'{i}.npy'), load_cam_file(tmp/'b'/f'{i}.npy')
                assert np.array_equal(x['keys'], y['keys']) and np.array_equal(x['cams'], y['cams']), i
            t = {'loop': [], 'write_cams': []}
            for _ in range(a.reps):
                for k, f in (('loop', lambda: loop(src, ds, tmp/'a', dtype)), ('write_cams', lambda: write_cams(src, ds, tmp/'b', dtype=dtype, overwrite=True))):
                    t0 = time.perf_counter(); f(); t[k].append((time.perf_counter() - t0) / a.n)
            tl, tw = statistics.median(t['loop']), statistics.median(t['write_cams'])
            print(f"{dtype:10s} {tl:11.4f} {tw:17.4f} {tl / tw:6.2f}")
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__': main()
