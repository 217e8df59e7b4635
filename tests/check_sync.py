"""Check that notebooks and `wsss_lib/` agree: `nbdev_clean` then `nbdev_export` must change no file
under nbs/ or wsss_lib/ (new, untracked files included). Exits 1 and lists the files that changed."""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def snapshot():
    out = {}
    for top in ('nbs', 'wsss_lib'):
        for p in sorted((ROOT/top).rglob('*')):
            if p.is_dir() or any(part in ('__pycache__', '.ipynb_checkpoints') for part in p.parts): continue
            if p.name in ('.last_checked', '_quarto.yml', 'nbdev.yml', 'sidebar.yml'): continue
            out[str(p.relative_to(ROOT))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

def main():
    before = snapshot()
    for cmd in ('nbdev_clean', 'nbdev_export'):
        r = subprocess.run([str(BIN/cmd)], cwd=ROOT, capture_output=True, text=True)
        if r.returncode: sys.exit(f"{cmd} failed:\n{r.stdout}{r.stderr}")
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print("Notebooks and wsss_lib/ are not in sync: nbdev_clean/nbdev_export changed these files:")
        for k in changed: print("  ", k, "(new)" if k not in before else "(removed)" if k not in after else "")
        print("Run `make sync`, review and commit the result.")
        sys.exit(1)
    print(f"sync: notebooks and wsss_lib/ agree ({len(after)} files checked)")

if __name__ == '__main__': main()
