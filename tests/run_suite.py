"""Run the whole test suite: `nbdev_test` on the library notebooks, then `pytest tests/`, and close with
one line `N passed, N failed` (notebooks count one test each). `--slow` adds `#| slow` cells and slow tests."""
import argparse, os, re, subprocess, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def library_notebooks():
    "Notebooks nbdev_test runs: those under nbs/ not in a folder holding `.notest`, no `_`/`.` prefix."
    out = []
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        rel = p.relative_to(ROOT/'nbs')
        if any(part.startswith(('_', '.')) for part in rel.parts): continue
        if (p.parent/'.notest').exists() or '.ipynb_checkpoints' in rel.parts: continue
        out.append(p)
    return out

def run_notebooks(slow):
    nbs = library_notebooks()
    cmd = [str(BIN/'nbdev_test'), '--n_workers', '2', '--timing']
    if slow: cmd += ['--flags', 'slow']
    print('$', ' '.join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(r.stdout[-20000:], r.stderr[-20000:], sep='\n', flush=True)
    failed = set()
    if r.returncode:
        # nbdev_test ends a failure with "nbdev Tests Failed On The Following Notebooks:" then one path a line
        tail = r.stderr.split('Failed On The Following Notebooks:')[-1]
        failed = {p.name for p in nbs if p.name in tail} or {'nbdev_test'}
    print(f"notebooks: {len(nbs)-len(failed & {p.name for p in nbs})} of {len(nbs)} passed in {time.time()-t0:.0f}s", flush=True)
    return len(nbs) - len(failed & {p.name for p in nbs}), max(len(failed), 0)

def run_pytest(slow, extra):
    xml = ROOT/'.pytest_junit.xml'
    cmd = [str(BIN/'python'), '-m', 'pytest', 'tests', '-p', 'no:cacheprovider', '-rs', f'--junitxml={xml}'] + extra
    if slow: cmd += ['--slow']
    print('$', ' '.join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode == 5: return 0, 0, 0  # no tests collected
    if not xml.exists(): return 0, 1, 0
    s = ET.parse(xml).getroot()
    s = s if s.tag == 'testsuite' else s.find('testsuite')
    n, f, e, sk = (int(s.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped'))
    xml.unlink()
    if r.returncode not in (0, 1) and f + e == 0: e = 1  # pytest itself broke
    return n - f - e - sk, f + e, sk

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--slow', action='store_true')
    ap.add_argument('--no-notebooks', action='store_true')
    a, extra = ap.parse_known_args()
    os.environ.setdefault('MPLBACKEND', 'Agg')
    nb_pass, nb_fail = (0, 0) if a.no_notebooks else run_notebooks(a.slow)
    py_pass, py_fail, py_skip = run_pytest(a.slow, extra)
    passed, failed = nb_pass + py_pass, nb_fail + py_fail
    print(f"notebooks {nb_pass} passed, {nb_fail} failed; pytest {py_pass} passed, {py_fail} failed, {py_skip} skipped")
    print(f"{passed} passed, {failed} failed, {py_skip} skipped")
    sys.exit(1 if failed else 0)

if __name__ == '__main__': main()
