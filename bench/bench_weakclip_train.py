"""WeakCLIP vs MCTformer training: throughput (images/s) and peak memory on the same machine, ratio printed.

The paper (seed 001, efficiency table): WeakCLIP 21.2 M trainable of 171.5 M parameters trains at 16.8 images/s in
9.7 GiB, against 3.9 images/s and 30.7 GiB for its MCTformer baseline (105.3 M parameters; the repo does not say which
configuration that is). Here the baseline is this project's MCTformer-V2 on DeiT-S (`create_mctformer(2,
'deit_small_patch16_224')`, 22 M parameters, all trainable, input 224 as its official training) — the one the
pipeline runs —, and WeakCLIP is `wsss_lib.methods.weakclip` on a random OpenAI-shaped ViT-B/16 at crop 512 with the
full training step (forward, the three losses, the boundary loss's CPU CRF in `--crf-jobs` processes, backward, AdamW
step with the official groups). `--scale world` compares the teaching-world configurations instead (tiny CLIP at crop
128 vs the MCTformer world ViT at 64).

Each model is measured in a fresh child process: median seconds per optimizer step over --steps steps after one warm-up
step; peak memory = torch.cuda.max_memory_allocated on CUDA, peak RSS above the child's baseline on CPU.

    .venv/bin/python bench/bench_weakclip_train.py [--device cpu|cuda] [--batch 2] [--steps 2] [--scale paper|world]

Measured on this project's shared 2-core CPU (load 4-8, one torch thread, CRF in this process), 2026-12-03:
  --scale paper --batch 2 --steps 1: WeakCLIP 171,464,725 params (21,240,853 non-CLIP) 106 s/step, 0.02 images/s, peak
      4.8 GiB RSS; MCTformer-V2 DeiT-S 21.7 M at 224: 2.3 s/step, 0.88 images/s, 0.7 GiB. WeakCLIP/MCTformer: throughput
      ×0.02, memory ×7.1 — the paper's ×4.3 / ×0.32 do NOT hold on CPU against this baseline: at 512 the ViT-B/16 sees
      1024 tokens (5× DeiT-S's 196, at 4× the width) and the faithful default back-propagates through the whole CLIP
      (its weights get gradients for the lr_mult-0 drift), and the 256-channel neck/head run at 128².
  --scale world --batch 8 --steps 2: WeakCLIP (tiny CLIP, crop 128) 5.8 s/step, 1.4 images/s, 0.8 GiB; MCTformer world
      ViT (64 px) 0.21 s/step, 37 images/s, 0.3 GiB: ×0.04 and ×2.9.
The GPU comparison of the paper (and its 105.3 M-parameter baseline, which is probably MCTformer's ResNet-38 stage,
not its transformer) was not measured: no GPU was lent to this task.
"""
import argparse, multiprocessing as mp, resource, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's wsss_lib, also in spawned children


def _rss_mib():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _weakclip(scale, device, crf_jobs):
    import torch, open_clip
    from wsss_lib.methods.weakclip import weakclip_from_clip, weakclip_class_names, WeakClipObjective, CRFWorkers, weakclip_optimizer, weakclip_param_counts
    if scale == 'paper':
        clip, size, fs, names = open_clip.create_model('ViT-B-16', pretrained=None), 512, 64, weakclip_class_names('voc')
    else:
        from wsss_lib.clip import load_clip
        clip, size, fs, names = load_clip('wsss-tiny-vit', pretrained='wsss-tiny', device='cpu'), 128, 32, weakclip_class_names(['c%d' % i for i in range(6)])
    m = weakclip_from_clip(clip, names, input_resolution=size).to(device).train()
    obj = WeakClipObjective((fs, fs), crf=CRFWorkers(crf_jobs))
    opt = weakclip_optimizer(m)
    pc = weakclip_param_counts(m)
    K = len(names)
    def batch(B):
        return torch.randn(B, 3, size, size, device=device), torch.randint(0, K, (B, size, size), device=device)
    return m, opt, lambda model, b: obj(model, b)[0], batch, dict(params=pc['total'], trainable=pc['non_clip'], input=size)


def _mctformer(scale, device):
    import torch
    from wsss_lib.methods.mctformer import create_mctformer, mctformer_loss
    if scale == 'paper': m, size = create_mctformer(2, 'deit_small_patch16_224', num_classes=20), 224
    else: m, size = create_mctformer(2, num_classes=6, img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4), 64
    m = m.to(device).train()
    opt = torch.optim.AdamW(m.parameters(), lr=5e-4, weight_decay=0.05)
    C = m.num_classes
    def batch(B):
        return torch.randn(B, 3, size, size, device=device), (torch.rand(B, C, device=device) > 0.7).float()
    n = sum(p.numel() for p in m.parameters())
    return m, opt, lambda model, b: mctformer_loss(model(b[0]), b[1])[0], batch, dict(params=n, trainable=n, input=size)


def _child(q, which, a):
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base_rss = _rss_mib()
    m, opt, loss_fn, batch, info = _weakclip(a.scale, a.device, a.crf_jobs) if which == 'weakclip' else _mctformer(a.scale, a.device)
    cuda = a.device.startswith('cuda')
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    times = []
    for s in range(a.steps + 1):
        b = batch(a.batch)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True); loss_fn(m, b).backward(); opt.step()
        if cuda: torch.cuda.synchronize()
        if s: times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    q.put(dict(info, step=statistics.median(times), ips=a.batch / statistics.median(times), mem=peak))


def measure(which, a):
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, which, a)); p.start(); r = q.get(); p.join()
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--batch', type=int, default=2); ap.add_argument('--steps', type=int, default=2)
    ap.add_argument('--scale', choices=('paper', 'world'), default='paper'); ap.add_argument('--crf-jobs', type=int, default=1)
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    a = ap.parse_args(argv)
    r = {w: measure(w, a) for w in ('weakclip', 'mctformer')}
    print(f"device {a.device}, batch {a.batch}, {a.steps} timed steps, scale {a.scale}")
    print(f"{'model':10} {'input':>5} {'params':>12} {'trainable':>12} {'s/step':>8} {'images/s':>9} {'peak MiB':>9}")
    for w, x in r.items():
        print(f"{w:10} {x['input']:5d} {x['params']:12,d} {x['trainable']:12,d} {x['step']:8.2f} {x['ips']:9.2f} {x['mem']:9.0f}")
    w, m = r['weakclip'], r['mctformer']
    print(f"WeakCLIP / MCTformer: throughput ×{w['ips'] / m['ips']:.2f} (paper 16.8/3.9 = ×4.31), "
          f"peak memory ×{w['mem'] / max(m['mem'], 1e-9):.2f} (paper 9.7/30.7 = ×0.32)")
    return r


if __name__ == '__main__': main()
