"""CLIP-ES Softmax-GradCAM with ONE backward pass for all K classes of an image — 'batched' (the default since issue 18:
one last-block forward, a hand-written backward with the K cotangents as a batch) and
'copies' (last block on K copies, one backward) — against the official per-class loop (one last-block forward +
backward per class), on the same randomly initialised ViT-B/16-size CLIP (open_clip `ViT-B-16` config, no download)
at 448×448, K = 1, 3, 5 present classes, M = 25 background texts (VOC). Both also checked to agree to 1e-5.

    .venv/bin/python bench/bench_clip_es_batched.py [--repeats 3] [--size 448] [--device cpu] [--threads N]

Prints seconds per image for the Softmax-GradCAM step alone and for the whole CAM step (frozen blocks 1..11 + Grad-CAM),
and the loop/batched ratios (> 1 means the batched pass is faster). The batched pass also returns the last block's
head-averaged attention, which CAA needs; the loop does not, so `ClipES(batched=False)` computes it in one more pass:
the column "loop + attn" is that like-for-like cost, and its ratio is the one that decides `ClipES`'s speed.
"""
import argparse, time, statistics
import numpy as np
import torch
from wsss_lib.clip import load_clip, attention_weights
from wsss_lib.methods.clip_es import clip_es_input, frozen_forward, softmax_gradcam, softmax_gradcam_loop


def _time(fn, repeats, sync):
    ts = []
    for _ in range(repeats):
        sync(); t0 = time.perf_counter(); out = fn(); sync(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--size', type=int, default=448)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--ks', default='1,3,5')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    clip = load_clip('ViT-B-16', pretrained=None, device=a.device, precision='fp32')
    dev = clip.device
    sync = (lambda: torch.cuda.synchronize()) if dev.type == 'cuda' else (lambda: None)
    img = np.random.default_rng(0).integers(0, 255, (a.size, a.size, 3), dtype=np.uint8)
    x = clip_es_input(clip, img)
    grid = (x.shape[-2] // clip.patch_size, x.shape[-1] // clip.patch_size)
    M = 25
    print(f"device={dev} ({torch.get_num_threads()} threads), ViT-B-16 random init, input {tuple(x.shape[-2:])}, "
          f"grid {grid}, M={M} background texts, median of {a.repeats} runs", flush=True)
    t_frozen, (tokens, _) = _time(lambda: frozen_forward(clip, x), a.repeats, sync)
    print(f"frozen blocks 1..11 (once per image, both methods): {t_frozen:.3f} s", flush=True)
    rows = []
    for K in [int(k) for k in a.ks.split(',')]:
        text = torch.nn.functional.normalize(torch.randn(K + M, clip.model.text_projection.shape[-1], device=dev), dim=-1)
        tl, rl = _time(lambda: softmax_gradcam_loop(clip, tokens, text, K, grid), a.repeats, sync)
        blk = clip.visual.transformer.resblocks[-1]
        ta, _ = _time(lambda: torch.no_grad()(lambda: attention_weights(blk.attn, blk.ln_1(tokens)).mean(1))(), a.repeats, sync)
        tb, rb = _time(lambda: softmax_gradcam(clip, tokens, text, K, grid), a.repeats, sync)
        tc, rc = _time(lambda: softmax_gradcam(clip, tokens, text, K, grid, strategy='copies'), a.repeats, sync)
        err = max((rb['cams'] - rl['cams']).abs().max().item(), (rc['cams'] - rl['cams']).abs().max().item())
        assert err < 1e-5, f"batched and per-class CAMs differ by {err}"
        rows.append((K, tl, tb, tc, err, tl + ta))
        print(f"K={K} done", flush=True)
    print()
    print("Softmax-GradCAM step (s); per image = + frozen blocks; ratio = loop / method (> 1: faster than the official loop)")
    print("| K | loop (official) | loop + attn | batched (default) | ratio | ratio to loop + attn | copies | ratio | loop + attn s/image | batched s/image | ratio/image | max |diff| |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for K, tl, tb, tc, err, tla in rows:
        print(f"| {K} | {tl:.3f} | {tla:.3f} | {tb:.3f} | {tl / tb:.2f} | {tla / tb:.2f} | {tc:.3f} | {tl / tc:.2f} | {t_frozen + tla:.3f} "
              f"| {t_frozen + tb:.3f} | {(t_frozen + tla) / (t_frozen + tb):.2f} | {err:.1e} |")


if __name__ == '__main__':
    main()
