"""Benchmark wsss_lib.cam: Grad-CAM for K classes in one backward pass vs one backward per class (the
pytorch-grad-cam / CLIP-ES way), and the allow-list CAM-file reader vs plain `np.load(allow_pickle=True)`.

    .venv/bin/python bench/bench_cam.py [--quick] [--device cpu|cuda]

Random weights (no downloads); times are medians of `--reps` runs after one warm-up, ratios against the baseline
measured in the same run."""
import argparse, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import numpy as np
import torch, timm
from wsss_lib.cam import GradCAM
from wsss_lib.camfiles import load_cam_file, save_cam_file

def med_time(fn, reps, sync):
    fn(); sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def interleaved(fns, reps, sync):
    "Median time of each function, measured round-robin so that load from other processes hits all alike."
    for f in fns.values(): f(); sync()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter(); f(); sync(); ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true', help='smaller inputs and fewer repetitions')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--reps', type=int, default=None)
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    reps = a.reps or (2 if a.quick else 7)
    torch.manual_seed(0)
    size = 128 if a.quick else 224
    cnn = timm.create_model('resnet18', pretrained=False, num_classes=20)
    vit = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=20, depth=4, dynamic_img_size=True)
    # a late layer (short backward: the per-class loop costs little more than the forward) and an early one (long backward)
    models = {'resnet18 layer4': (cnn, 'layer4', (size, size)), 'resnet18 layer2': (cnn, 'layer2', (size, size)),
              'vit-tiny(d4) blocks.-1.norm1': (vit, 'blocks.-1.norm1', (size, size + 64)),
              'vit-tiny(d4) blocks.0.norm1': (vit, 'blocks.0.norm1', (size, size + 64))}
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} reps={reps}\n")
    print("Grad-CAM, K classes of one image (median seconds; ratio = loop time / mode time)")
    print(f"{'model':32s} {'K':>3s} {'loop':>8s} {'grad_batched':>13s} {'ratio':>6s} {'repeat':>8s} {'ratio':>6s} {'max|diff|':>10s}")
    for name, (model, layer, hw) in models.items():
        model = model.to(dev)
        gc = GradCAM(model, layer)
        x = torch.randn(1, 3, *hw, device=dev)
        for K in ((1, 4) if a.quick else (1, 4, 8)):
            keys = list(range(K))
            t = interleaved({m: (lambda m=m: gc(x, keys, batched=m)) for m in ('loop', 'grad_batched', 'repeat')}, reps, sync)
            ref = gc(x, keys, batched='loop')
            d = max((gc(x, keys, batched=m) - ref).abs().max().item() for m in ('grad_batched', 'repeat'))
            print(f"{name:32s} {K:3d} {t['loop']:8.4f} {t['grad_batched']:13.4f} {t['loop']/t['grad_batched']:6.2f} "
                  f"{t['repeat']:8.4f} {t['loop']/t['repeat']:6.2f} {d:10.1e}")

    print("\nCAM file reading, 3 classes at 375×500 (median ms; ratio = safe reader / np.load + the same float32 conversion)")
    print(f"{'format':28s} {'np.load':>8s} {'load_cam_file':>14s} {'ratio':>6s}")
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    m = rng.random((3, 375, 500)).astype(np.float32)
    save_cam_file(tmp/'wsss.npy', [1, 5, 7], m)
    np.save(tmp/'clip.npy', {'keys': np.array([1, 5, 7]), 'attn_highres': m.astype(np.float16)})
    np.save(tmp/'irn.npy', {'keys': torch.tensor([1, 5, 7]), 'cam': torch.from_numpy(m[:, ::4, ::4].copy()), 'high_res': m})
    np.save(tmp/'mct.npy', {1: m[0], 5: m[1], 7: m[2]})
    n = 5 if a.quick else 20
    for f in ('wsss', 'clip', 'irn', 'mct'):
        p = tmp/f'{f}.npy'
        def plain(p=p):  # what a reader without the allow-list does: unpickle everything, then take the map as float32
            d = np.load(p, allow_pickle=True).item()
            mp = d.get('cams', d.get('attn_highres', d.get('high_res'))) if 'keys' in d else np.stack([d[k] for k in sorted(d)])
            return np.asarray(mp, dtype=np.float32)
        t = interleaved({'np': plain, 'safe': lambda p=p: load_cam_file(p)}, n, lambda: None)
        t0, t1 = t['np'], t['safe']
        print(f"{f:28s} {t0*1e3:8.2f} {t1*1e3:14.2f} {t1/t0:6.2f}")

if __name__ == '__main__': main()
