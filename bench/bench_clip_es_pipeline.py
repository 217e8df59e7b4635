"""CLIP-ES end to end — CAMs + CAA + CRF pseudo masks — the official-equivalent way against wsss_lib's pipeline, in
one process, on the same images, interleaved (official, new, official, new, ...), medians of the repeats.

    .venv/bin/python bench/bench_clip_es_pipeline.py --threads 2      # and --threads 1

Model: open_clip ViT-B/16 with seeded random weights (no download; its projection ×8 and its q, k weights ×4 so that the
softmax and the attention are peaked as a trained CLIP's, --qk-scale), QuickGELU (OpenAI's activation), fp32 on CPU,
VOC's 20 class and 25 background texts; images: the bundled VOC sample (/work/shared/data/voc_sample, 4 photos,
their GT classes). `--threads T` pins this process (and its children) to T cores and gives torch T threads, so the
numbers mean "on T cores" even on a bigger machine.

official-equivalent (what generate_cams_voc12.py + eval_cam_with_crf.py do, in wsss_lib's faithful code):
  blocks 1..11 with need_weights=True keeping all 11 maps; per class, block 12 forward + backward (the per-class loop,
  through open_clip's fused attention: cheaper than the official need_weights forward, so the ratio is conservative)
  plus block 12's attention; CAA; float16 CAM files in CLIP-ES's layout; then the CRF over the folder with T worker
  processes (joblib-like), in float16 arithmetic as the official script on its files.
new (wsss_lib today): the frozen blocks keep only CAA's maps, from their own forward; one forward + one batched
  backward for the K classes; write_cams writes the float16 files and hands each image's CAMs in memory to a MaskPool
  with T−1 workers (at least 1) and the caller: by default in bursts between the network's images (overlap=False, the
  CPU setting: the pool's default burst is 4 images per process, so these 4 photos make one burst at the end), with
  --overlap beside the network (the GPU setting).

Stages reported: CAM (network + CAA + files; the new path's alone, without the pool), CRF (official: over the folder;
new: the pipeline). Two floors, because on a CPU the network's threads and the CRF share the same cores: (a) the
frozen blocks 1..11 alone, with torch's kernels as both paths run them, plus the faster CRF stage; (b) the frozen
blocks' multiply-adds at the rate of a large matrix product on these cores (measured in the same run) plus the CRF:
what is left if every other operator, the Grad-CAM, CAA and the files cost nothing. Checks: initial and refined
CAMs of both paths to 1e-5 (max |diff| printed), masks equal (differing pixels printed).
"""
import argparse, os, shutil, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2, help='cores (affinity), torch threads and official CRF workers')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--images', type=int, default=4)
    ap.add_argument('--net-threads', type=int, default=None, help='torch threads of the new path while the pool works (default: --threads)')
    ap.add_argument('--overlap', action='store_true', help="new path: CRF workers beside the network (MaskPool(overlap=True), the GPU setting) instead of in bursts (overlap=False, the CPU setting)")
    ap.add_argument('--qk-scale', type=float, default=4.0, help="scale of every block's q and k weights: a random ViT's attention is nearly uniform, so CAA's transition matrix is flat (entries within 0.1%%) and the min-max normalisation of the refined CAMs magnifies float noise ~1000×; at 4 the attention is peaked, as a trained CLIP's (1 = the raw random model)")
    ap.add_argument('--bf16', action='store_true', help="also the new path with precision='bf16' (not bit-faithful): time, CAM and mask differences")
    ap.add_argument('--voc', default=os.environ.get('WSSS_VOC_SAMPLE', '/work/shared/data/voc_sample'))
    a = ap.parse_args()
    if hasattr(os, 'sched_setaffinity'):
        cpus = sorted(os.sched_getaffinity(0))[:a.threads]; os.sched_setaffinity(0, cpus)
    import torch
    torch.set_num_threads(a.threads)
    from wsss_lib.clip import load_clip
    from wsss_lib.data import SegDataset
    from wsss_lib.cam import write_cams
    from wsss_lib.camfiles import save_cam_file, load_cam_file
    from wsss_lib.crf import make_pseudo_masks, MaskPool
    from wsss_lib.data import read_mask
    from wsss_lib.methods.clip_es import ClipES, frozen_forward, softmax_gradcam_loop, clip_es_input

    torch.manual_seed(0)
    clip = load_clip('ViT-B-16', pretrained=None, device='cpu', precision='fp32', quick_gelu=True)
    with torch.no_grad():
        clip.visual.proj.mul_(8.)   # a random CLIP's softmax is nearly flat: sharpen it (as the tests do)
        D = clip.visual.transformer.width
        for b in clip.visual.transformer.resblocks:   # and its attention (see --qk-scale); the FLOPs do not change
            b.attn.in_proj_weight[:2 * D].mul_(a.qk_scale); b.attn.in_proj_bias[:2 * D].mul_(a.qk_scale)
    es = ClipES(clip=clip, dataset='voc')
    if a.bf16:   # the same weights in bf16 (the text features stay the fp32 ones: only the image tower changes)
        wf = Path(tempfile.mkdtemp())/'w.pt'; torch.save(clip.model.state_dict(), wf)
        es_bf = ClipES(clip=load_clip('ViT-B-16', pretrained=str(wf), device='cpu', precision='bf16', quick_gelu=True), dataset='voc')
        es_bf.fg, es_bf.bg = es.fg, es.bg
    ds = SegDataset(a.voc, 'sample')
    ids = list(ds.ids[:a.images])
    L = len(clip.visual.transformer.resblocks)
    n_workers = max(1, a.threads - 1)
    net_threads = a.net_threads or a.threads

    def official_cams(image, keys):
        x = clip_es_input(clip, image)
        grid = (x.shape[-2] // 16, x.shape[-1] // 16)
        tokens, maps = frozen_forward(clip, x, n_attn=L - 1)
        text, tgt, _ = es.text_and_targets(keys)
        r = softmax_gradcam_loop(clip, tokens, text, len(keys), grid, targets=tgt)
        blk = clip.visual.transformer.resblocks[-1]
        with torch.no_grad():                            # block 12's attention as the official forward returns it (need_weights)
            A = blk.ln_1(tokens); r['attn'] = blk.attn(A, A, A, need_weights=True)[1]
        e = es._caa(r, tokens, maps)
        h, w = image.shape[:2]
        import cv2
        hi = lambda m: np.stack([cv2.resize(c, (w, h)) for c in m.numpy()])
        return hi(r['cams']), hi(e['refined_patch'])

    def run_official(root):
        t0 = time.perf_counter(); out = {}
        for i in ids:
            im, k = ds.image(i), np.asarray(ds.keys(i), np.int64)
            ini, ref = official_cams(im, k)
            save_cam_file(root/'cams'/f'{i}.npy', k, ref, dtype='float16', format='clip_es'); out[i] = (ini, ref)
        t1 = time.perf_counter()
        make_pseudo_masks(ds, root/'cams', root/'masks', ids=ids, n_jobs=a.threads, desc='official CRF')
        t2 = time.perf_counter()
        return dict(cam=t1 - t0, crf=t2 - t1, e2e=t2 - t0), out

    def run_new_cams(es=es):
        t0 = time.perf_counter(); out = {}
        for i in ids:
            r = es.compute(ds.image(i), np.asarray(ds.keys(i), np.int64)); out[i] = (r['initial'], r['cams'])
        return time.perf_counter() - t0, out

    def run_new_pipeline(root, cams, es=es):
        torch.set_num_threads(net_threads)
        t0 = time.perf_counter()
        with MaskPool(root/'masks', n_jobs=n_workers, dtype='float16', overlap=a.overlap) as pool:
            write_cams(es, ds, {'cams': root/'cams', 'initial': root/'init'}, ids=ids, dtype='float16',
                       on_cams=lambda i, im, k, m: pool.submit(i, im, m['cams'], k))
        e2e = time.perf_counter() - t0
        torch.set_num_threads(a.threads)
        t0 = time.perf_counter()                          # the CRF stage alone: the pool fed from memory
        with MaskPool(root/'masks_only', n_jobs=n_workers, dtype='float16') as pool:
            for i in ids: pool.submit(i, ds.image(i), cams[i][1].astype(np.float16), ds.keys(i))
        return dict(e2e=e2e, crf=time.perf_counter() - t0)

    print(f"CLIP-ES pipeline bench: {a.threads} core(s) (torch threads {a.threads}; new path: {net_threads} torch threads "
          f"+ {n_workers} CRF worker(s), caller joining in, {'overlapped' if a.overlap else 'in bursts'}), ViT-B/16 random seeded fp32 QuickGELU, {len(ids)} VOC photos "
          f"(K = {[len(ds.keys(i)) for i in ids]}), q/k ×{a.qk_scale:g}, median of {a.repeats} interleaved repeats; load average "
          f"{os.getloadavg()[0]:.2f} at start", flush=True)
    es.compute(ds.image(ids[0]), np.asarray(ds.keys(ids[0]), np.int64))      # warm-up
    T = {k: [] for k in ('o_cam', 'o_crf', 'o_e2e', 'n_cam', 'n_crf', 'n_e2e', 'frozen')}
    g = torch.randn(2048, 2048); g @ g
    t0 = time.perf_counter()
    for _ in range(10): g @ g
    gemm = 10 * 2 * 2048 ** 3 / (time.perf_counter() - t0)     # FLOP/s of a large fp32 matrix product on these cores
    xs = {i: clip_es_input(clip, ds.image(i)) for i in ids}
    flops = 0
    for x in xs.values():     # per block: q, k, v, out and the MLP (24·N·D²) plus q·kᵀ and P·v (4·N²·D), multiply-adds counted 2
        N, D = (x.shape[-2] // 16) * (x.shape[-1] // 16) + 1, clip.visual.transformer.width
        flops += (L - 1) * (24 * N * D * D + 4 * N * N * D)
    for rep in range(a.repeats):
        tmp = Path(tempfile.mkdtemp())
        to, ocams = run_official(tmp/'official')
        tn_cam, ncams = run_new_cams()
        tn = run_new_pipeline(tmp/'new', ncams)
        t0 = time.perf_counter()
        for x in xs.values(): frozen_forward(clip, x, n_attn=7)
        T['frozen'].append(time.perf_counter() - t0)
        for k in ('cam', 'crf', 'e2e'): T['o_' + k].append(to[k])
        T['n_cam'].append(tn_cam); T['n_crf'].append(tn['crf']); T['n_e2e'].append(tn['e2e'])
        if a.bf16:
            tb_cam, bcams = run_new_cams(es_bf); tb = run_new_pipeline(tmp/'bf16', bcams, es_bf)
            T.setdefault('b_cam', []).append(tb_cam); T.setdefault('b_crf', []).append(tb['crf']); T.setdefault('b_e2e', []).append(tb['e2e'])
            if rep == 0:
                b_ini = max(float(np.abs(bcams[i][0] - ncams[i][0]).max()) for i in ids)
                b_ref = max(float(np.abs(bcams[i][1] - ncams[i][1]).max()) for i in ids)
                b_mean = float(np.mean([np.abs(bcams[i][1] - ncams[i][1]).mean() for i in ids]))
                b_px = sum(int((read_mask(tmp/'bf16'/'masks'/f'{i}.png') != read_mask(tmp/'new'/'masks'/f'{i}.png')).sum()) for i in ids)
        if rep == 0:
            d_ini = max(float(np.abs(ocams[i][0] - ncams[i][0]).max()) for i in ids)
            d_ref = max(float(np.abs(ocams[i][1] - ncams[i][1]).max()) for i in ids)
            px = sum(int((read_mask(tmp/'official'/'masks'/f'{i}.png') != read_mask(tmp/'new'/'masks'/f'{i}.png')).sum()) for i in ids)
            px2 = sum(int((read_mask(tmp/'new'/'masks_only'/f'{i}.png') != read_mask(tmp/'new'/'masks'/f'{i}.png')).sum()) for i in ids)
            npx = sum(int(np.prod(ds.image(i).shape[:2])) for i in ids)
            f16 = sum(int((ocams[i][1].astype(np.float16) != ncams[i][1].astype(np.float16)).sum()) for i in ids)   # the CRF's input
            nf16 = sum(ocams[i][1].size for i in ids)
            steps = max(float((np.abs(ocams[i][1].astype(np.float16).astype(np.float32) - ncams[i][1].astype(np.float16).astype(np.float32))
                               / np.spacing(np.maximum(np.abs(ocams[i][1]), np.abs(ncams[i][1])).astype(np.float16)).astype(np.float32)).max()) for i in ids)
        shutil.rmtree(tmp)
        print(f"repeat {rep + 1}: official {to['e2e']:.2f} s, new {tn['e2e']:.2f} s", flush=True)
    m = {k: statistics.median(v) for k, v in T.items()}
    n = len(ids)
    print(f"\n| stage ({a.threads} core(s), s per image) | official-equivalent | new | new / official |")
    print("|---|---|---|---|")
    for k, name in (('cam', 'CAMs + CAA (+ files)'), ('crf', 'CRF pseudo masks'), ('e2e', 'end to end (CAMs + CAA + CRF masks)')):
        print(f"| {name} | {m['o_' + k] / n:.3f} | {m['n_' + k] / n:.3f} | {m['n_' + k] / m['o_' + k]:.2f}× |")
    crf = min(m['o_crf'], m['n_crf'])
    floor, bound = m['frozen'] + crf, flops / gemm + crf
    print(f"| floor (a): frozen blocks 1..11 + CRF | | {floor / n:.3f} | {floor / m['o_e2e']:.2f}× |")
    print(f"| floor (b): their multiply-adds at the large-GEMM rate + CRF | | {bound / n:.3f} | {bound / m['o_e2e']:.2f}× |")
    print(f"\nThe frozen blocks 1..11: {m['frozen'] / n:.3f} s per image, {flops / m['frozen'] / 1e9:.0f} GFLOP/s, "
          f"{flops / m['frozen'] / gemm:.0%} of a 2048³ fp32 matrix product's {gemm / 1e9:.0f} GFLOP/s on {a.threads} core(s) "
          f"(the rest: attention's 64-wide products, softmax, LayerNorm, GELU).")
    if a.bf16:
        for k, name in (('cam', 'CAMs + CAA, bf16 (not bit-faithful)'), ('e2e', 'end to end, bf16 (not bit-faithful)')):
            print(f"| {name} | {m['o_' + k] / n:.3f} | {m['b_' + k] / n:.3f} | {m['b_' + k] / m['o_' + k]:.2f}× |")
        print(f"\nbf16 vs fp32 (new path): initial CAMs max |diff| {b_ini:.2e}, refined CAMs max |diff| {b_ref:.2e} "
              f"(mean {b_mean:.2e}); masks: {b_px} of {sum(int(np.prod(ds.image(i).shape[:2])) for i in ids)} pixels differ")
    print(f"\nmax |diff| official vs new: initial CAMs {d_ini:.1e}, refined CAMs {d_ref:.1e}; "
          f"masks: {px} of {npx} pixels differ (pipelined vs the pool fed afterwards: {px2}); the float16 refined CAMs the CRF reads: "
          f"{f16} of {nf16} values differ, by at most {steps:.0f} float16 step(s); load average {os.getloadavg()[0]:.2f} at end")


if __name__ == '__main__':
    main()
