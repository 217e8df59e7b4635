"""Benchmark the start-up of the `wsss` command: the wall time of `wsss --help`, `wsss experiments`, `wsss runs`,
`wsss params demo` and `wsss compare` (two hand-made runs) against `python -c pass` and `python -c "import torch"`,
all measured in the same run, so a loaded machine shows as slow baselines too.

    .venv/bin/python bench/bench_cli_startup.py [--reps N] [--checkout DIR]

Each row is the median (and the fastest) of N runs of a fresh process, started as pip's `wsss` console script starts
it (`from wsss_lib.cli import main`), with this checkout first on PYTHONPATH, from an unrelated working directory.
The listings import neither torch nor papermill (tests/test_cli.py checks the imports); the target is under 1 s on an
idle machine. `--checkout DIR` times another source tree (e.g. `git archive OLD | tar -x -C DIR`) with the same
runs, for a before/after in one sitting. `wsss run` is not timed: it starts a Jupyter kernel, which imports what the notebook needs."""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = "import sys; from wsss_lib.cli import main; sys.argv[0] = 'wsss'; sys.exit(main())"


def fake_runs(root:Path):
    "Two finished runs of `demo` with a demo-sized metrics.json (hundreds of flattened rows)."
    for rid, x in (('a', 0.5), ('b', 0.25)):
        d = root/'demo'/rid; d.mkdir(parents=True)
        cols = {c: {'miou': x, 'iou': {f'class{i}': x for i in range(20)}} for c in ('cnn', 'clip', 'caa', 'crf')}
        (d/'metrics.json').write_text(json.dumps({'columns': cols, 'miou_cnn': x}))
        (d/'params.yaml').write_text(f"experiment: demo\npreset: null\nparams: {{limit: {int(x*8)}}}\n")
        (d/'status.json').write_text(json.dumps({'status': 'finished', 'started': '2026-01-01T10:00:00+00:00',
                                                 'seconds': 60.0, 'headline': {'miou_cnn': x}}))


def wall(cmd:list, env:dict, reps:int)->tuple[float, float]:
    "(median, min) seconds of `reps` runs of `cmd`; fails loudly if the command fails."
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
        ts.append(time.perf_counter() - t0)
        if r.returncode: raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--reps', type=int, default=5, help='runs per command (default 5)')
    ap.add_argument('--checkout', type=Path, default=ROOT, help='the source tree whose wsss_lib is timed (default: this one)')
    a = ap.parse_args()
    src = a.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)/'runs'; fake_runs(runs)
        env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(src/'nbs'/'experiments'),
                   PYTHONPATH=os.pathsep.join([str(src)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
        py, wsss = [sys.executable], [sys.executable, '-c', CONSOLE_SCRIPT]
        got = subprocess.run(py + ['-c', 'import wsss_lib; print(wsss_lib.__file__)'], env=env, cwd=tempfile.gettempdir(),
                             capture_output=True, text=True).stdout.strip()
        if not Path(got).resolve().is_relative_to(src): raise SystemExit(f"wsss_lib comes from {got}, not from {src}")
        rows = [('python -c pass (baseline)', py + ['-c', 'pass']),
                ('python -c "import torch" (baseline)', py + ['-c', 'import torch']),
                ('wsss --help', wsss + ['--help']),
                ('wsss experiments', wsss + ['experiments']),
                ('wsss runs', wsss + ['runs']),
                ('wsss params demo', wsss + ['params', 'demo']),
                ('wsss compare demo/a demo/b', wsss + ['compare', 'demo/a', 'demo/b'])]
        print(f"wsss_lib from {src}")
        print(f"{'command':38s} {'median s':>9s} {'min s':>7s}   (median of {a.reps} fresh processes; os.cpu_count()={os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f})")
        for name, cmd in rows:
            med, lo = wall(cmd, env, a.reps)
            print(f"{name:38s} {med:9.3f} {lo:7.3f}", flush=True)


if __name__ == '__main__': main()
