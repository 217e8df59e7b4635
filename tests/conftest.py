import os, pytest
os.environ.setdefault('MPLBACKEND', 'Agg')

def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', default=False, help='also run tests marked slow')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: heavy test, run with --slow')

def pytest_collection_modifyitems(config, items):
    if config.getoption('--slow'): return
    skip = pytest.mark.skip(reason='slow: run with --slow (make test-slow)')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)

@pytest.fixture(scope='session')
def run_experiment_nb():
    "Execute nbs/experiments/NAME.ipynb under papermill (kernel python3, cwd = repo): run(name, out_nb, **params); stateless, so one per session serves module-scoped fixtures too."
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    def run(name, out_nb, **params):
        papermill = pytest.importorskip('papermill')
        os.environ.setdefault('MPLBACKEND', 'Agg')
        papermill.execute_notebook(str(repo/'nbs'/'experiments'/f'{name}.ipynb'), str(out_nb), parameters=params,
                                   kernel_name='python3', progress_bar=False, cwd=str(repo))
    return run


def kill_at_checkpoint_then_resume(experiment:str, # run `wsss run EXPERIMENT --preset smoke` ...
                                   runs, # ... into this runs folder
                                   ckpt:str, # checkpoints/<ckpt> whose appearance triggers the SIGKILL
                                   params=(), # extra '-p name value' pairs
                                   after_kill=None, # after_kill(run folder): checks on the interrupted folder
                                  ):
    "SIGKILL a smoke run once its first checkpoint exists, rerun the same command; the run folder, finished, no temporary file."
    import signal, subprocess, sys, time, json
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(repo/'nbs'/'experiments'), WSSS_DEVICE='cpu')
    env.pop('IN_TEST', None)   # the reference run's thread count: numerics depend on it
    cmd = [sys.executable, '-m', 'wsss_lib.cli', 'run', experiment, '--preset', 'smoke', *[x for kv in params for x in ('-p', *map(str, kv))],
           '--run-id', 'killed', '--no-progress']
    d = Path(runs)/experiment/'killed'
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd='/')
    t0 = time.time()
    while not (d/'checkpoints'/ckpt).exists():
        assert p.poll() is None and time.time() - t0 < 240, 'the run ended before its first checkpoint'
        time.sleep(0.02)
    assert p.poll() is None, 'the run finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait(30); time.sleep(1)
    if after_kill is not None: after_kill(d)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd='/', timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '=== attempt 2' in (d/'log.txt').read_text()
    assert json.loads((d/'status.json').read_text())['status'] == 'finished' and not list(d.rglob('*.tmp*'))
    return d
