"""The light `wsss` commands (no papermill run): `--help`, `experiments`, `params`, `runs` and `compare` start without
importing torch (the 3–8 s of every start; bench/bench_cli_startup.py times them), `compare` puts the headline
metrics first and filters with `--metrics`, `runs` lists the notebooks' interactive run folders, `experiments` is one
line per experiment. Run folders are written by hand here; tests/test_runs.py makes real ones."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT/'tests'/'fixtures'/'experiments'
WSSS = [sys.executable, '-m', 'wsss_lib.cli']
# what the `wsss` console script that pip writes does (`wsss = wsss_lib.cli:main`)
CONSOLE_SCRIPT = "import sys; from wsss_lib.cli import main; sys.argv[0] = 'wsss'; sys.exit(main())"


def wsss(*args, runs, experiments=FIXTURES, importtime=False):
    env = dict(os.environ, WSSS_RUNS=str(runs), WSSS_EXPERIMENTS=str(experiments), COLUMNS='200')
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    cmd = [sys.executable, '-X', 'importtime', '-c', CONSOLE_SCRIPT] if importtime else WSSS
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=120, cwd='/')


def imported(stderr:str)->set:
    "Module names from `python -X importtime`'s report."
    return {l.rsplit('|', 1)[1].strip() for l in stderr.splitlines() if l.startswith('import time:') and l.count('|') == 2}


def make_run(root:Path, exp:str, rid:str, metrics:dict, params:dict, headline=None, started='2026-01-01T10:00:00'):
    d = root/exp/rid; d.mkdir(parents=True)
    (d/'metrics.json').write_text(json.dumps(metrics))
    (d/'params.yaml').write_text(yaml.safe_dump({'experiment': exp, 'preset': 'smoke', 'params': params}))
    st = {'status': 'finished', 'started': started, 'seconds': 3.0}
    if headline is not None: st['headline'] = {k: metrics[k] for k in headline}
    (d/'status.json').write_text(json.dumps(st))
    return d


def many_metrics(x:float)->dict:
    "A demo-like metrics.json: a deep `columns` tree (hundreds of rows flattened), the headlines at the end."
    cols = {c: {'miou': x, 'iou': {f'class{i}': x + i/100 for i in range(30)}, 'best_power': {'value': 1, 'miou': x}}
            for c in ('cnn', 'clip')}
    return {'columns': cols, 'clip': {'sha256': 'ab'*32}, 'seconds': 12.0, 'miou_cnn': x, 'miou_clip': x/2}


@pytest.fixture
def runs(tmp_path):
    r = tmp_path/'runs'
    make_run(r, 'toy', 'a', many_metrics(0.5), {'lr': 0.1}, headline=['miou_cnn', 'miou_clip'])
    make_run(r, 'toy', 'b', many_metrics(0.25), {'lr': 0.2}, headline=['miou_cnn', 'miou_clip'], started='2026-01-02T10:00:00')
    return r


@pytest.mark.parametrize('args', [['--help'], ['experiments'], ['runs'], ['params', 'toy'], ['compare', 'toy/a', 'toy/b']])
def test_light_commands_do_not_import_torch(runs, args):
    "What lists and compares needs no torch: importing it was most of each command's start-up time."
    r = wsss(*args, runs=runs, importtime=True)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = imported(r.stderr)
    assert 'wsss_lib.cli' in mods                      # the report is read right
    assert not {m for m in mods if m == 'torch' or m.startswith('torch.')}, 'torch was imported'
    assert not {m for m in mods if m.split('.')[0] in ('papermill', 'nbclient', 'ipywidgets', 'matplotlib')}


def test_compare_headlines_first(runs):
    r = wsss('compare', 'toy/a', 'toy/b', runs=runs)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = [l.split()[0] for l in lines if l.strip()]
    # the headline metrics come right after the status, before the long tail
    assert names.index('miou_cnn') < names.index('columns.cnn.miou') and names.index('miou_clip') < names.index('columns.cnn.miou')
    assert names.index('miou_cnn') < 8
    assert any(l.startswith('other metrics') for l in lines)
    row = next(l for l in lines if l.startswith('miou_cnn')).split()
    assert row[1:] == ['0.5', '0.25']
    assert max(len(l) for l in lines) < 120          # long strings (a sha256) are shortened, not 64 columns wide
    assert 'parameters that differ' in r.stdout


@pytest.mark.parametrize('pattern,want', [
    ('miou', ['miou_cnn', 'miou_clip']),                           # a name's start: demo's `--metrics miou` = its headlines
    ('columns.cnn.best_power', ['columns.cnn.best_power.value', 'columns.cnn.best_power.miou']),
    ('*.best_power.miou', ['columns.cnn.best_power.miou', 'columns.clip.best_power.miou']),   # a glob over the whole name
    ('miou_cnn,seconds', ['miou_cnn', 'seconds']),
])
def test_compare_metrics_filter(runs, pattern, want):
    r = wsss('compare', 'toy/a', 'toy/b', '--metrics', pattern, runs=runs)
    assert r.returncode == 0, r.stderr
    names = [l.split()[0] for l in r.stdout.split('parameters that differ')[0].splitlines()[2:] if l.strip()]
    assert sorted(n for n in names if n != 'status') == sorted(want)


def test_compare_metrics_filter_that_matches_nothing(runs):
    r = wsss('compare', 'toy/a', 'toy/b', '--metrics', 'mIoU_nope', runs=runs)
    assert r.returncode == 2 and "no metric matches 'mIoU_nope'" in r.stderr and 'columns' in r.stderr


def test_runs_lists_interactive_runs(runs):
    "A notebook run in Jupyter (run_dir None) writes runs/EXPERIMENT/interactive (prepare_run_dir): listed, marked."
    d = runs/'toy'/'interactive'
    for sub in ('cams', 'figures'): (d/sub).mkdir(parents=True)
    (d/'metrics.json').write_text(json.dumps({'final_loss': 0.5, 'n': 3}))
    (runs/'toy'/'empty').mkdir()                            # a folder that is no run stays out
    r = wsss('runs', runs=runs)
    assert r.returncode == 0, r.stderr
    rows = {l.split()[0]: l for l in r.stdout.splitlines()[2:]}
    assert set(rows) == {'toy/a', 'toy/b', 'toy/interactive'}
    assert 'interactive' in rows['toy/interactive'].split()[1:] and 'final_loss=0.5' in rows['toy/interactive']
    assert rows['toy/a'].split()[1] == 'headless' and rows['toy/interactive'].split()[1] == 'interactive'
    r = wsss('compare', 'toy/a', 'toy/interactive', runs=runs)
    assert r.returncode == 0, r.stderr


def test_experiments_one_line_each(tmp_path):
    "The real experiments: one short line each (`wsss params NAME` has the whole description)."
    exps = ROOT/'nbs'/'experiments'
    r = wsss('experiments', runs=tmp_path, experiments=exps)
    assert r.returncode == 0, r.stderr
    names = sorted(p.stem for p in exps.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    rows = [l for l in r.stdout.splitlines()[2:] if l.strip() and not l.startswith('`wsss')]
    assert [l.split()[0] for l in rows] == names
    assert max(len(l) for l in rows) <= 130
    assert all('cannot be run' not in l for l in rows)
    full = yaml.safe_load((exps/'clims.yaml').read_text())['description']
    r = wsss('params', 'clims', runs=tmp_path, experiments=exps)
    assert r.returncode == 0 and full in r.stdout
