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
