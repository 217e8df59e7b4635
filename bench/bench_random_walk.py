"""Random walk: sparse propagation (wsss_lib.affinity.random_walk) vs PSA's dense matrix powers (random_walk_dense).

VOC size: a 480×360 image gives a 60×45 feature grid at stride 8 (N = 2700 pixels), 21 seed channels (bg + 20 classes).
For logt = 6 (MCTformer, t = 64) and logt = 8 (PSA, t = 256) it measures, in one run:
  time (median of --repeats), peak extra memory (each measurement in a fresh child process: CPU = peak RSS above the
  child's baseline, CUDA = torch.cuda.max_memory_allocated), and the max abs difference of the two outputs.
Prints a table with the dense baseline's time/memory divided by the sparse one's (ratio > 1: sparse is better).

    .venv/bin/python bench/bench_random_walk.py [--device cpu|cuda] [--repeats 3] [--h 60 --w 45]
"""
import argparse, json, multiprocessing as mp, resource, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's wsss_lib, also in spawned children


def _rss_mib():  # current resident set size of this process
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _child(q, method, logt, h, w, k, device, repeats, seed, threads):
    import torch
    from wsss_lib.affinity import random_walk, random_walk_dense, affinity_from_features
    if threads: torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    # smooth random features -> realistic affinities (high inside regions, low across)
    f = torch.nn.functional.interpolate(torch.randn(1, 32, h // 5 + 1, w // 5 + 1, generator=g), size=(h, w), mode='bilinear')
    aff = affinity_from_features(3 * f)[0].to(device)
    seeds = torch.rand(k, h, w, generator=g).to(device)
    fn = random_walk if method == 'sparse' else random_walk_dense
    cuda = device.startswith('cuda')
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    base_rss = _rss_mib()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(seeds, aff, beta=8, logt=logt)
        if cuda: torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    q.put(dict(time=statistics.median(times), mem=peak, out=out.cpu().numpy()))


def measure(method, logt, a):
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, method, logt, a.h, a.w, a.k, a.device, a.repeats, a.seed, a.threads))
    p.start(); r = q.get(); p.join()
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--h', type=int, default=60); ap.add_argument('--w', type=int, default=45)
    ap.add_argument('--k', type=int, default=21); ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)'); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--logt', type=int, nargs='+', default=[6, 8]); ap.add_argument('--json', default=None)
    a = ap.parse_args(argv)
    import numpy as np
    rows = []
    for logt in a.logt:
        d, s = measure('dense', logt, a), measure('sparse', logt, a)
        rows.append(dict(logt=logt, t=2**logt, dense_s=d['time'], sparse_s=s['time'], time_ratio=d['time'] / s['time'],
                         dense_mib=d['mem'], sparse_mib=s['mem'], mem_ratio=d['mem'] / max(s['mem'], 1e-3),
                         max_abs_diff=float(np.abs(d['out'] - s['out']).max()), max_value=float(np.abs(d['out']).max())))
    print(f"random walk, {a.h}×{a.w} grid (N={a.h*a.w}), {a.k} channels, beta=8, device={a.device}, threads={a.threads or 'default'}, median of {a.repeats}")
    print(f"{'logt':>4} {'t':>4} | {'dense s':>8} {'sparse s':>8} {'time ×':>7} | {'dense MiB':>9} {'sparse MiB':>10} {'mem ×':>7} | {'max|Δ|':>9}")
    for r in rows:
        print(f"{r['logt']:>4} {r['t']:>4} | {r['dense_s']:>8.3f} {r['sparse_s']:>8.3f} {r['time_ratio']:>7.1f} | "
              f"{r['dense_mib']:>9.1f} {r['sparse_mib']:>10.1f} {r['mem_ratio']:>7.1f} | {r['max_abs_diff']:>9.2e}")
    print("ratios = dense / sparse (> 1: sparse propagation is faster / smaller); max|Δ| = max abs difference of the outputs")
    if a.json:
        with open(a.json, 'w') as f: json.dump(rows, f, indent=2)
    return rows


if __name__ == '__main__':
    main()
