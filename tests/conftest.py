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
