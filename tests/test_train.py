"""wsss_lib.train across processes: two gloo CPU processes through accelerate against one process, exact resume
after a SIGKILL (one process and two), a launch from a papermill kernel. The notebook `07_train` tests the rest."""
import json, os, signal, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch, torch.nn as nn
import cloudpickle
import wsss_lib
from wsss_lib.core import seed_everything
from wsss_lib.train import Trainer, Poly, OpenCLIPCosine, gather_with_grad, gather_objects

REPO = Path(wsss_lib.__file__).resolve().parents[1]
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the spawned processes get this module's functions by value

X = torch.randn(48, 3, 8, 8, generator=torch.Generator().manual_seed(0))
Y = (torch.rand(48, 3, generator=torch.Generator().manual_seed(1)) > 0.5).float()
CRIT = nn.MultiLabelSoftMarginLoss()


def fixed_batches(bs):
    "Deterministic data: the same global batches in every process (each takes its slice)."
    return lambda epoch, skip: ((X[i:i + bs], Y[i:i + bs]) for i in range(skip * bs, len(X), bs))

def cls_step(model, batch):
    x, y = batch
    return CRIT(model(x), y)

def tiny():
    torch.manual_seed(0)   # no BatchNorm: a process's batch statistics would differ from the global batch's
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

def losses(run_dir, name='last'):
    return [json.loads(l)['loss'] for l in (Path(run_dir)/'logs'/f'{name}.jsonl').read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path):
    "Same global batch, 1 vs 2 CPU processes (gloo, DDP through accelerate): the same loss curve and weights within float tolerance."
    runs = {}
    for n in (1, 2):
        m = tiny()
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01)
        h = Trainer(m, opt, cls_step, fixed_batches(8), epochs=3, steps_per_epoch=6, schedule=OpenCLIPCosine(18, 3),
                    run_dir=tmp_path/f'p{n}', processes=n, device='cpu').fit()
        runs[n] = m, h, losses(tmp_path/f'p{n}')
    (m1, h1, l1), (m2, h2, l2) = runs[1], runs[2]
    assert len(l1) == len(l2) == 18 and h1[-1]['loss'] < h1[0]['loss']     # it learns
    diff = np.abs(np.array(l1) - np.array(l2)).max()
    print(f"1 vs 2 processes: max |loss difference| over 18 steps {diff:.2e}")
    assert diff < 1e-5
    assert [h['lr'] for h in h1] == [h['lr'] for h in h2]
    for a, b in zip(m1.parameters(), m2.parameters()): assert torch.allclose(a, b, atol=1e-5)
    assert not next(m2.parameters()).is_cuda and len(h2) == 3   # the launching process got the trained weights back


def contrastive_step(model, batch):
    "A loss over the whole global batch (CLIP-style): features and texts gathered from every process."
    x, texts = batch
    f = gather_with_grad(nn.functional.normalize(model(x), dim=-1))
    texts = gather_objects(texts)
    same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
    logits = 10 * f @ f.t()
    return -(same / same.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()

def test_gathered_loss_matches_one_process(tmp_path):
    "With gather_with_grad/gather_objects, a loss that needs the whole batch trains as in one process."
    texts = [f't{i % 5}' for i in range(len(X))]
    data = lambda epoch, skip: ((X[i:i + 12], texts[i:i + 12]) for i in range(skip * 12, len(X), 12))
    out = {}
    for n in (1, 2):
        m = tiny()
        Trainer(m, torch.optim.SGD(m.parameters(), lr=0.5), contrastive_step, data, epochs=2, steps_per_epoch=4,
                run_dir=tmp_path/f'c{n}', processes=n, device='cpu').fit()
        out[n] = m, losses(tmp_path/f'c{n}')
    assert np.abs(np.array(out[1][1]) - np.array(out[2][1])).max() < 1e-5
    for a, b in zip(out[1][0].parameters(), out[2][0].parameters()): assert torch.allclose(a, b, atol=1e-5)


SCRIPT = '''
import os, signal, sys, torch, torch.nn as nn
import wsss_lib.train as T
from wsss_lib.core import seed_everything
run_dir, kill_after, processes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if kill_after and processes == 1:       # SIGKILL right after the kill_after-th checkpoint is on disk
    save, n = T.Checkpointer.save, [0]
    def save_then_die(self, *a, **k):
        p = save(self, *a, **k); n[0] += 1
        if n[0] == kill_after: os.kill(os.getpid(), signal.SIGKILL)
        return p
    T.Checkpointer.save = save_then_die

class Aug(torch.utils.data.Dataset):    # augmentation from the global generator, as ClsDataset
    def __init__(self): g = torch.Generator().manual_seed(3); self.x, self.y = torch.randn(40, 3, 8, 8, generator=g), (torch.rand(40, 3, generator=g) > .5).float()
    def __len__(self): return 40
    def __getitem__(self, i): x = self.x[i] + 0.1 * torch.randn(3, 8, 8); return (x.flip(-1) if torch.rand(()) < 0.5 else x), self.y[i]

calls = [0]
def step(m, batch):
    calls[0] += 1
    marker = os.path.join(run_dir, 'killed')
    if kill_after and processes > 1 and calls[0] == kill_after and torch.distributed.get_rank() == 0 and not os.path.exists(marker):
        open(marker, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)     # rank 0 dies in the middle of an epoch
    x, y = batch
    return nn.functional.multilabel_soft_margin_loss(m(x), y)

if __name__ == '__main__':
    seed_everything(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(6 * 36, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    T.Trainer(model, opt, step, Aug(), epochs=4, batch_size=8, schedule=T.Poly(20), ckpt_every=2,
              on_epoch_end=lambda m, e: dict(w=float(m[0].weight.sum())), run_dir=run_dir, processes=processes, device='cpu').fit()
'''

def run_script(tmp_path, run_dir, kill_after=0, processes=1):
    script = tmp_path/'train_script.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), WSSS_PROGRESS='0')
    return subprocess.run([sys.executable, str(script), str(run_dir), str(kill_after), str(processes)], env=env,
                          capture_output=True, text=True, timeout=600)

def final(run_dir):
    ck = torch.load(Path(run_dir)/'checkpoints'/'last.pt', weights_only=True)
    return ck['model'], [{k: v for k, v in h.items() if k != 'seconds'} for h in ck['extra']['history']], (Path(run_dir)/'logs'/'last.jsonl').read_text()

def assert_same(a, b):
    (ma, ha, la), (mb, hb, lb) = a, b
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)     # bit for bit
    assert ha == hb and la == lb

@pytest.mark.parametrize('kill_after', [3, 4])   # 5 batches an epoch, a step checkpoint every 2 steps: the 3rd checkpoint ends epoch 0, the 4th is mid-epoch 1
def test_resume_after_sigkill_is_bit_identical(tmp_path, kill_after):
    "A run killed with SIGKILL right after a checkpoint and rerun ends with the uninterrupted run's weights, history and log."
    r = run_script(tmp_path, tmp_path/'full'); assert r.returncode == 0, r.stderr
    r = run_script(tmp_path, tmp_path/'killed', kill_after=kill_after)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    ck = torch.load(tmp_path/'killed'/'checkpoints'/'last.pt', weights_only=True)['extra']['trainer']
    assert (ck['epoch'], ck['batch']) == {3: (1, 0), 4: (1, 1)}[kill_after]                # where the rerun goes on
    r = run_script(tmp_path, tmp_path/'killed'); assert r.returncode == 0, r.stderr
    assert_same(final(tmp_path/'killed'), final(tmp_path/'full'))


def test_two_process_resume_after_a_killed_rank_is_bit_identical(tmp_path):
    "Two processes, process 0 SIGKILLed mid-epoch: the launch fails cleanly; the rerun ends as an uninterrupted two-process run."
    r = run_script(tmp_path, tmp_path/'full', processes=2); assert r.returncode == 0, r.stderr
    r = run_script(tmp_path, tmp_path/'killed', kill_after=7, processes=2)
    assert r.returncode != 0 and 'a training process' in r.stderr, r.stderr[-2000:]     # died (SIGKILL) or failed (its peer lost)
    assert (tmp_path/'killed'/'killed').exists()
    r = run_script(tmp_path, tmp_path/'killed', processes=2); assert r.returncode == 0, r.stderr
    assert_same(final(tmp_path/'killed'), final(tmp_path/'full'))
    assert not list((tmp_path/'killed').glob('.*.tmp'))          # the spawn payloads are gone


def test_launch_from_a_papermill_kernel(tmp_path):
    "The spawned launch works from a Jupyter kernel (papermill), where functions live in the kernel's __main__."
    import nbformat, papermill as pm
    code = textwrap.dedent(f'''
        import torch, torch.nn as nn
        from wsss_lib.train import Trainer
        X = torch.randn(32, 5); Y = X @ torch.randn(5, 1)
        def data(epoch, skip): return ((X[i:i + 8], Y[i:i + 8]) for i in range(skip * 8, 32, 8))
        def step(m, b): return nn.functional.mse_loss(m(b[0]), b[1])
        torch.manual_seed(0); model = nn.Linear(5, 1)
        hist = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), step, data, epochs=3, steps_per_epoch=4,
                       run_dir={str(tmp_path/'run')!r}, processes=2, device='cpu').fit()
        assert len(hist) == 3 and hist[-1]['loss'] < hist[0]['loss'], hist
    ''')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, tmp_path/'launch.ipynb')
    pm.execute_notebook(str(tmp_path/'launch.ipynb'), str(tmp_path/'out.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    assert len(losses(tmp_path/'run')) == 12
