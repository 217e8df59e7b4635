"""End-to-end tests of the `wsss` command (wsss_lib.cli over wsss_lib.execute, .runs, .experiments): parameters,
validation, real papermill runs of a toy experiment (tests/fixtures/experiments/toy.ipynb), kills with SIGKILL and
SIGTERM and exact resume, time limits, concurrent runs of one run id, damaged records, failures, `runs` and
`compare`, and the smoke preset of every real experiment in nbs/experiments/."""
import configparser, importlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT/'tests'/'fixtures'/'experiments'
REAL_EXPERIMENTS = ROOT/'nbs'/'experiments'
# the `wsss` command as the console script runs it (`wsss = wsss_lib.cli:main`, see test_console_script), from this
# Python, so that the package under test is the one on sys.path
WSSS = [sys.executable, '-m', 'wsss_lib.cli']
# the killed runs and the uninterrupted one share every value that changes results; the delays only slow them down
SLOW = ['-p', 'epoch_delay', '0.6', '-p', 'item_delay', '0.6']


def env_for(runs, experiments=FIXTURES, **extra):
    env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(experiments), WSSS_DEVICE='cpu', **extra)
    env.pop('IN_TEST', None)
    return env


def wsss(*args, runs, experiments=FIXTURES, timeout=240, cwd='/'):
    "Run the `wsss` command (from an unrelated working directory) and return the completed process."
    return subprocess.run([*WSSS, *args], env=env_for(runs, experiments), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def start(*args, runs, stdout=subprocess.PIPE):
    return subprocess.Popen([*WSSS, *args], env=env_for(runs), stdout=stdout, stderr=subprocess.STDOUT, text=True, cwd='/')


def wait_for(cond, timeout=120, what=''):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def tmp_files(d): return [p for p in Path(d).rglob('*.tmp')]


def status(d): return json.loads((Path(d)/'status.json').read_text())


def metrics(d): return json.loads((Path(d)/'metrics.json').read_text())


def check_outputs_complete(d):
    "Every artefact that exists is complete: item files load, the checkpoint loads with weights_only=True."
    for p in (Path(d)/'cams').glob('*.npy'): np.load(p)
    if (Path(d)/'checkpoints'/'last.pt').exists(): torch.load(Path(d)/'checkpoints'/'last.pt', weights_only=True)
    json.loads((Path(d)/'notebook.ipynb').read_text()) if (Path(d)/'notebook.ipynb').exists() else None


@pytest.fixture(scope='module')
def runs(tmp_path_factory): return tmp_path_factory.mktemp('runs')


@pytest.fixture(scope='module')
def baseline(runs):
    "An uninterrupted toy run: the reference for the resumed ones."
    r = wsss('run', 'toy', '--run-id', 'base', runs=runs)
    assert r.returncode == 0, r.stdout + r.stderr
    return runs/'toy'/'base', r


def test_params_and_experiments(runs):
    r = wsss('params', 'toy', runs=runs)
    assert r.returncode == 0, r.stderr
    for frag in ('epochs', 'training epochs', '1 .. 1000', 'str|None', 'smoke: smoke=True, epochs=2', 'paper:'):
        assert frag in r.stdout, frag
    assert 'run_dir' not in r.stdout
    r = wsss('experiments', runs=runs)
    assert r.returncode == 0 and 'toy' in r.stdout and 'test fixture' in r.stdout


@pytest.mark.parametrize('args,frags', [
    (['nope'], ["unknown experiment 'nope'", 'toy']),
    (['toy', '-p', 'epoch', '3'], ["unknown parameter 'epoch' (did you mean 'epochs'?)", 'training epochs']),
    (['toy', '-p', 'epochs', 'many'], ['epochs = many: expects an int', 'training epochs']),
    (['toy', '-p', 'lr', '50'], ['lr = 50: must be <= 10.0']),
    (['toy', '-p', 'fail', 'maybe'], ['fail = maybe: expects a bool']),
    (['toy', '--preset', 'fast'], ["unknown preset 'fast'", 'smoke, paper']),
    (['toy', '-p', 'run_dir', '/x'], ['run_dir is set by wsss run']),
    (['toy', '--run-id', '../x'], ['run id']),
    (['toy', '--device', 'gpu0'], ['unknown device']),
])
def test_bad_input_is_refused_before_running(tmp_path, args, frags):
    r = wsss('run', *args, runs=tmp_path/'runs')
    assert r.returncode == 2, r.stdout + r.stderr
    for frag in frags: assert frag in r.stderr, (frag, r.stderr)
    assert not (tmp_path/'runs').exists() or not any((tmp_path/'runs').rglob('status.json'))


def test_bad_params_file(tmp_path):
    (tmp_path/'p.yaml').write_text('epochs: [1, 2]\nlr: 0.5\n')
    r = wsss('run', 'toy', '-f', str(tmp_path/'p.yaml'), runs=tmp_path/'runs')
    assert r.returncode == 2 and 'expects an int' in r.stderr and str(tmp_path/'p.yaml') in r.stderr


def test_unwritable_runs_dir(tmp_path):
    (tmp_path/'afile').write_text('x')  # a folder below a file cannot be created, even by root
    r = wsss('run', 'toy', runs=tmp_path/'afile'/'runs')
    assert r.returncode == 2 and 'cannot write the run folder' in r.stderr and '--runs-dir' in r.stderr


def test_run_records(baseline):
    d, r = baseline
    assert f'results: {d}' in r.stdout and 'final_loss=' in r.stdout
    for f in ('params.yaml', 'status.json', 'notebook.ipynb', 'metrics.json', 'log.txt', 'cams', 'masks', 'checkpoints', 'figures'):
        assert (d/f).exists(), f
    rec = yaml.safe_load((d/'params.yaml').read_text())
    assert rec['experiment'] == 'toy' and rec['preset'] is None and rec['params']['epochs'] == 4 and rec['params']['lr'] == 0.1
    st = status(d)
    assert st['status'] == 'finished' and st['headline']['final_loss'] == metrics(d)['final_loss'] and len(st['attempts']) == 1
    nb = json.loads((d/'notebook.ipynb').read_text())
    injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert injected and f'run_dir = "{d}"' in ''.join(injected[0]['source'])
    log = (d/'log.txt').read_text()
    assert 'epoch 3 loss' in log and 'wrote item005' in log and '--- cell' in log and f'cwd {d}' in log
    assert sorted(p.name for p in (d/'cams').iterdir()) == [f'item{i:03d}.npy' for i in range(6)]
    assert not tmp_files(d)


def test_finished_run_is_not_rerun(baseline, runs):
    d, _ = baseline
    before = (d/'metrics.json').stat().st_mtime_ns
    r = wsss('run', 'toy', '--run-id', 'base', runs=runs)
    assert r.returncode == 0 and 'already finished' in r.stdout and (d/'metrics.json').stat().st_mtime_ns == before
    r = wsss('run', 'toy', '--run-id', 'base', '-p', 'epochs', '5', runs=runs)
    assert r.returncode == 2 and 'other parameters' in r.stderr and 'epochs: recorded 4, now 5' in r.stderr


def test_sigkill_during_training_and_during_a_write_then_resume(baseline, runs):
    d = runs/'toy'/'killed'
    # 1. kill -9 during training, once the first checkpoint is saved
    p = start('run', 'toy', '--run-id', 'killed', *SLOW, runs=runs)
    wait_for(lambda: (d/'checkpoints'/'last.pt').exists(), what='the first checkpoint')
    p.send_signal(signal.SIGKILL); p.wait(30)
    time.sleep(2)  # the kernel dies with `wsss run` (PR_SET_PDEATHSIG); let the system reap it
    check_outputs_complete(d)
    assert status(d)['status'] == 'running'  # as written; `wsss runs` derives that the process is gone
    r = wsss('runs', runs=runs)
    assert any(l.startswith('toy/killed') and 'interrupted' in l for l in r.stdout.splitlines()), r.stdout
    # 2. resume, and kill -9 again in the middle of an item write (its temporary file exists, the item does not)
    p = start('run', 'toy', '--run-id', 'killed', runs=runs)
    wait_for(lambda: list((d/'cams').glob('.item001.npy.*.tmp')), what='a write in progress')
    p.send_signal(signal.SIGKILL); p.wait(30)
    time.sleep(2)
    check_outputs_complete(d)
    assert (d/'cams'/'item000.npy').exists() and not (d/'cams'/'item001.npy').exists()
    # 3. resume to the end
    r = wsss('run', 'toy', '--run-id', 'killed', runs=runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'resuming toy as run killed' in r.stdout and 'removed 1 temporary file' in r.stdout
    log = (d/'log.txt').read_text()
    assert 'resumed after epoch' in log and '1 items done before, 5 to do' in log and all(f'=== attempt {n} of toy/killed' in log for n in (1, 2, 3))
    assert metrics(d) == metrics(baseline[0])
    st = status(d)
    assert st['status'] == 'finished' and len(st['attempts']) == 3 and not tmp_files(d)
    check_outputs_complete(d)


def test_sigterm_stops_the_kernel_and_resumes(baseline, runs):
    d = runs/'toy'/'termed'
    p = start('run', 'toy', '--run-id', 'termed', *SLOW, runs=runs)
    wait_for(lambda: (d/'checkpoints'/'last.pt').exists(), what='the first checkpoint')
    kpid = status(d)['kernel_pid']
    assert kpid
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, out
    assert 'interrupted toy/termed' in out and 'SIGTERM' in out and 'wsss run toy --run-id termed' in out
    st = status(d)
    assert st['status'] == 'interrupted' and st['error']['signal'] == 'SIGTERM'
    with pytest.raises(ProcessLookupError):  # the kernel is gone too
        os.kill(kpid, 0)
    assert not tmp_files(d)
    check_outputs_complete(d)
    r = wsss('run', 'toy', '--run-id', 'termed', runs=runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert metrics(d) == metrics(baseline[0]) and status(d)['status'] == 'finished'


def test_failed_run_reports_the_cell(runs):
    r = wsss('run', 'toy', '--run-id', 'failed', '-p', 'fail', 'True', '-p', 'epochs', '1', '-p', 'n_items', '1', runs=runs)
    assert r.returncode == 1
    d = runs/'toy'/'failed'
    for frag in ('FAILED toy/failed', 'if fail: raise RuntimeError', 'RuntimeError: toy failure requested',
                 str(d/'notebook.ipynb'), 'resume with: wsss run toy --run-id failed'):
        assert frag in r.stdout, (frag, r.stdout)
    st = status(d)
    assert st['status'] == 'failed' and st['error']['ename'] == 'RuntimeError'
    src = json.loads((FIXTURES/'toy.ipynb').read_text())['cells'][st['error']['cell_index']]
    assert ''.join(src['source']).startswith('if fail') and f"cell {st['error']['cell_index']} of toy.ipynb" in r.stdout
    nb = json.loads((d/'notebook.ipynb').read_text())  # the partially executed notebook, with the error in place
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code' and c['execution_count'] == st['error']['exec_count'])
    assert 'if fail' in ''.join(cell['source']) and any(o['output_type'] == 'error' for o in cell['outputs'])
    assert (d/'cams'/'item000.npy').exists()  # what ran before the failure is kept


def test_missing_dataset(runs, tmp_path):
    r = wsss('run', 'toy', '--run-id', 'nodata', '-p', 'data_root', str(tmp_path/'VOC2012'), runs=runs)
    assert r.returncode == 1
    assert f'missing input: {tmp_path/"VOC2012"}: toy dataset folder not found' in r.stdout, r.stdout
    assert status(runs/'toy'/'nodata')['error']['ename'] == 'MissingFileError'


def test_runs_and_compare(baseline, runs):
    # a second finished run, made by copying the baseline's record and changing a parameter and a metric
    d = runs/'toy'/'other'
    shutil.copytree(baseline[0], d)
    rec = yaml.safe_load((d/'params.yaml').read_text()); rec['params']['epochs'] = 9; rec['preset'] = 'smoke'
    (d/'params.yaml').write_text(yaml.safe_dump(rec))
    m = metrics(d); m['final_loss'] = 0.125; (d/'metrics.json').write_text(json.dumps(m))
    st = status(d); st['headline'] = {'final_loss': 0.125}; (d/'status.json').write_text(json.dumps(st))
    r = wsss('runs', runs=runs)
    assert r.returncode == 0, r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines()[2:]}
    assert 'finished' in lines['toy/base'] and 'final_loss=' in lines['toy/base']
    assert 'smoke' in lines['toy/other'] and 'final_loss=0.125' in lines['toy/other']
    if 'toy/failed' in lines: assert 'failed' in lines['toy/failed']
    r = wsss('compare', 'toy/base', 'other', str(baseline[0]), runs=runs)
    assert r.returncode == 0, r.stderr
    row = next(l for l in r.stdout.splitlines() if l.startswith('final_loss')).split()
    assert row[1] == row[3] == f"{metrics(baseline[0])['final_loss']:.4g}" and row[2] == '0.125'
    differ = r.stdout.split('parameters that differ')[1].splitlines()
    assert any(l.split()[:3] == ['epochs', '4', '9'] for l in differ) and not any(l.startswith('lr') for l in differ)
    r = wsss('compare', 'toy/base', 'toy/none', runs=runs)
    assert r.returncode == 2 and "no run 'toy/none'" in r.stderr


def test_console_script():
    "settings.ini's `wsss` console script is wsss_lib.cli:main (what the tests run as `python -m wsss_lib.cli`)."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    scripts = dict(l.strip().split('=', 1) for l in cfg['DEFAULT']['console_scripts'].split('\n') if l.strip())
    mod, fn = scripts['wsss'].split(':')
    assert getattr(importlib.import_module(mod), fn) is importlib.import_module('wsss_lib.cli').main


# each process imports everything, says it is ready, then waits for the start line: they call main at one instant
RACE = """import sys, time
from pathlib import Path
from wsss_lib.cli import main
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists(): time.sleep(0.001)
sys.exit(main(sys.argv[3:]))"""


def test_simultaneous_runs_of_one_run_id(tmp_path):
    "Three `wsss run` of one run id started at the same instant: one executes, the others are refused naming it."
    runs, go = tmp_path/'runs', tmp_path/'go'
    ps = [subprocess.Popen([sys.executable, '-c', RACE, str(tmp_path/f'ready{i}'), str(go), 'run', 'toy', '--run-id', 'same',
                            '--no-progress'], env=env_for(runs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd='/') for i in range(3)]
    wait_for(lambda: all((tmp_path/f'ready{i}').exists() for i in range(3)), what='three wsss processes ready')
    go.touch()
    outs = [p.communicate(timeout=240)[0] for p in ps]
    ran = [i for i, o in enumerate(outs) if 'running toy as run same' in o]
    assert len(ran) == 1, outs
    w = ps[ran[0]]
    assert w.returncode == 0, outs[ran[0]]
    for p, o in zip(ps, outs):  # refused while it runs (or, arriving after it ended, nothing to do)
        if p is not w:
            assert (p.returncode == 2 and f'(process {w.pid})' in o) or (p.returncode == 0 and 'already finished' in o), o
            assert 'Traceback' not in o, o
    d = runs/'toy'/'same'
    log = (d/'log.txt').read_text()
    assert log.count('=== attempt 1 of toy/same') == 1 and '=== attempt 2' not in log, log
    st = status(d)
    assert st['status'] == 'finished' and len(st['attempts']) == 1 and st['pid'] == w.pid and not tmp_files(d)


def test_time_limit_stops_a_hung_cell_and_the_run_resumes(baseline, runs, tmp_path):
    "`--timeout` stops a cell that would wait for ever: status 'timed out', exit 124, no kernel left; the rerun resumes."
    d, hang = runs/'toy'/'hung', tmp_path/'hang'
    hang.write_text('')  # the cell waits while this file exists: only the time limit can end it
    out = tmp_path/'out.txt'
    with open(out, 'w') as f:
        p = start('run', 'toy', '--run-id', 'hung', '--timeout', '20', '-p', 'hang_file', str(hang), runs=runs, stdout=f)
    try:
        wait_for(lambda: (d/'log.txt').exists() and 'waiting while' in (d/'log.txt').read_text(), what='the hung cell')
        kpid = status(d)['kernel_pid']
        rc = p.wait(120)
    finally: p.kill()
    text = out.read_text()
    assert rc == 124, text
    st = status(d)
    assert st['status'] == 'timed out' and st['error']['timeout'] == 20, st
    src = json.loads((FIXTURES/'toy.ipynb').read_text())['cells'][st['error']['cell_index']]
    assert ''.join(src['source']).startswith('if hang_file')
    for frag in ('timed out toy/hung', 'did not finish within the time limit (20 s per cell)', 'if hang_file',
                 'resume with: wsss run toy --run-id hung'):
        assert frag in text, (frag, text)
    with pytest.raises(ProcessLookupError):  # the kernel is gone
        os.kill(kpid, 0)
    hang.unlink()
    r = wsss('run', 'toy', '--run-id', 'hung', runs=runs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'resumed after epoch 3' in (d/'log.txt').read_text() and metrics(d) == metrics(baseline[0])
    assert [a['status'] for a in status(d)['attempts']] == ['timed out', 'finished']


def test_ctrl_c_again_and_again_exits_130(runs, tmp_path):
    "Ctrl-C pressed again and again until `wsss run` has exited: exit code 130, no traceback, the run interrupted."
    d, out = runs/'toy'/'ctrl-c', tmp_path/'out.txt'
    with open(out, 'w') as f: p = start('run', 'toy', '--run-id', 'ctrl-c', *SLOW, runs=runs, stdout=f)
    wait_for(lambda: (d/'checkpoints'/'last.pt').exists(), what='the first checkpoint')
    for n in range(1, 2401):  # through the stop, the record and Python's own exit (at most 2400 presses)
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
        if p.poll() is not None: break
    else:
        p.kill()
        raise AssertionError(f'wsss run did not exit after {n} SIGINTs: {out.read_text()}')
    text = out.read_text()
    assert n >= 2 and p.returncode == 128 + signal.SIGINT, (n, p.returncode, text)
    assert 'Traceback' not in text and 'interrupted toy/ctrl-c' in text, text
    st = status(d)
    assert st['status'] == 'interrupted' and st['error']['signal'] == 'SIGINT'


@pytest.fixture(scope='module')
def failed_run(runs):
    "A run that failed quickly: its copies get damaged records."
    r = wsss('run', 'toy', '--run-id', 'to-damage', '-p', 'fail', 'True', '-p', 'epochs', '1', '-p', 'n_items', '1', runs=runs)
    assert r.returncode == 1, r.stdout + r.stderr
    return runs/'toy'/'to-damage'


@pytest.mark.parametrize('name,text,why', [
    ('params.yaml', 'experiment: toy\nparams: {epochs: 1, n_items: [1\n', "the run's parameter record cannot be read"),
    ('params.yaml', '- toy\n- 1\n', "the run's parameter record cannot be read"),
    ('params.yaml', None, 'params.yaml: missing'),
    ('status.json', '{"status": "failed", "attem', "the run's status record cannot be read"),
    ('status.json', '{"status": "unknown"}', "not a run status record (status 'unknown'"),
])
def test_damaged_record_stops_the_run_untouched(failed_run, tmp_path, name, text, why):
    "A params.yaml or status.json that cannot be read stops `wsss run` (exit 2) before it changes any file."
    runs = tmp_path/'runs'
    d = runs/'toy'/'to-damage'
    shutil.copytree(failed_run, d)
    if text is None: (d/name).unlink()
    else: (d/name).write_text(text)
    files = lambda: {str(p.relative_to(d)): p.read_bytes() for p in d.rglob('*') if p.is_file()}
    before = files()
    r = wsss('run', 'toy', '--run-id', 'to-damage', runs=runs)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(d/name) in r.stderr and why in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert files() == before


def _real_experiments():
    if not REAL_EXPERIMENTS.is_dir(): return []
    return sorted(p.stem for p in REAL_EXPERIMENTS.glob('*.ipynb') if not p.name.startswith(('_', '.')))


# experiments whose own test module runs the smoke preset through `wsss run` to the end (its SIGKILL + resume test,
# which also checks the finished status and that no temporary file is left): the generic run here would repeat it
OWN_CLI_SMOKE = {'clims': 'test_clims_experiment.py', 'mcis': 'test_mcis_experiment.py', 'seg': 'test_seg_experiment.py',
                 'weakclip': 'test_weakclip_experiment.py', 'demo': 'test_teaching.py', 'wsss_on_a_laptop': 'test_teaching.py'}

@pytest.mark.parametrize('name', _real_experiments())
def test_experiment_smoke(name, tmp_path):
    "Every experiment in nbs/experiments has a smoke preset that runs through `wsss run` (about a minute on a CPU)."
    spec = REAL_EXPERIMENTS/f'{name}.yaml'
    assert spec.exists() and 'smoke' in (yaml.safe_load(spec.read_text()).get('presets') or {}), \
        f'{name}: nbs/experiments/{name}.yaml must define a smoke preset'
    if name in OWN_CLI_SMOKE:
        own = Path(__file__).parent/OWN_CLI_SMOKE[name]
        assert own.exists() and "'" + name + "'" in own.read_text(), f'{name}: its own experiment test is gone; run the smoke here'
        return
    r = wsss('run', name, '--preset', 'smoke', '--run-id', 'smoke', '--no-progress', runs=tmp_path/'runs',
             experiments=REAL_EXPERIMENTS, timeout=300)
    d = tmp_path/'runs'/name/'smoke'
    log = (d/'log.txt').read_text()[-3000:] if (d/'log.txt').exists() else ''
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert status(d)['status'] == 'finished' and (d/'metrics.json').exists() and not tmp_files(d)
