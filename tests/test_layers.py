"""The layers point one way (DESIGN.md, README "Architecture"): every import of a wsss_lib module — at the top of a
module or inside a function — goes to a lower layer; no method imports another; no shared module imports or names
a method; no `isinstance` of a method's class outside its own module; no import cycle."""
import ast, re
from pathlib import Path
import pytest
import wsss_lib

PKG = Path(wsss_lib.__file__).resolve().parent

# bottom to top; a module may import only modules of lower rank. Modules of one rank never import each other.
LAYERS = [['core'], ['data'], ['synthetic', 'camfiles', 'shipped'], ['metrics', 'crf', 'cam'], ['clip'], ['affinity'],
          ['train'], ['irn'], ['tiny'], ['seg'], ['methods.*'], ['dashboards'], ['cam_explorer', 'prompt_explorer', 'affinity_explorer'],
          ['experiments'], ['runs'], ['execute'], ['cli']]
RANK = {m: r for r, ms in enumerate(LAYERS) for m in ms}
METHOD_PATH = re.compile(r'(wsss_lib\.)?methods\.\w+')   # a string naming one method's module (the package alone is cam's discovery)


def modules()->dict:
    "{dotted name under wsss_lib: parsed AST} of every module (not _modidx, not __init__)."
    out = {}
    for p in sorted(PKG.rglob('*.py')):
        rel = p.relative_to(PKG).with_suffix('')
        if rel.name.startswith('_'): continue
        out['.'.join(rel.parts)] = ast.parse(p.read_text(), str(p))
    return out


def rank(mod:str)->int:
    key = 'methods.*' if mod.startswith('methods.') else mod
    assert key in RANK, f"wsss_lib.{mod} is in no layer: add it to LAYERS here and to the README's architecture section"
    return RANK[key]


def imports(name:str, tree)->set:
    "wsss_lib modules `name` imports anywhere in its code (absolute or relative)."
    pkg = name.split('.')[:-1]
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg[:len(pkg) - (n.level - 1)] if n.level > 1 else pkg
                mod = '.'.join(base + ([n.module] if n.module else []))
            elif n.module and n.module.startswith('wsss_lib'): mod = n.module[len('wsss_lib.'):] if n.module != 'wsss_lib' else ''
            else: continue
            if mod: out.add(mod)
            else: out.update(a.name for a in n.names)   # from wsss_lib import x
        elif isinstance(n, ast.Import):
            out.update(a.name[len('wsss_lib.'):] for a in n.names if a.name.startswith('wsss_lib.'))
    return {i for i in out if (i in MODS or i.startswith('methods.')) and i != name}   # a module naming itself (train's spawn target) is no edge


MODS = modules()
METHODS = {m for m in MODS if m.startswith('methods.')}


def test_every_module_has_a_layer():
    for m in MODS: rank(m)


def test_imports_point_down():
    bad = [(m, i) for m, t in MODS.items() for i in imports(m, t) if not rank(i) < rank(m)]
    assert not bad, f"imports that do not point to a lower layer: {bad}"


def test_no_method_imports_another_and_no_shared_module_imports_a_method():
    for m, t in MODS.items():
        for i in imports(m, t):
            if i.startswith('methods.'): assert False, f"wsss_lib.{m} imports the method wsss_lib.{i}"


def method_classes()->dict:
    "{class name: method module} of the classes the methods define."
    return {n.name: m for m in METHODS for n in MODS[m].body if isinstance(n, ast.ClassDef)}


def docstrings(tree)->set:
    "ids of the docstring nodes (prose may mention a method; code may not)."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body and \
           isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant): out.add(id(n.body[0].value))
    return out


def test_no_module_names_a_method():
    "No string in code naming a method's module, no identifier of a method's class, outside the method's own module."
    classes = method_classes()
    assert {'ClipES', 'MCTformerCAMSource'} <= set(classes)
    for m, t in MODS.items():
        doc = docstrings(t)
        for n in ast.walk(t):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in doc and not m.startswith('methods.'):
                assert not METHOD_PATH.search(n.value), f"wsss_lib.{m} names a method module: {n.value!r}"
            name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None
            if name in classes and classes[name] != m: assert False, f"wsss_lib.{m} refers to {name} of wsss_lib.{classes[name]}"


def test_no_isinstance_of_a_method_class_outside_its_module():
    classes = method_classes()
    for m, t in MODS.items():
        for n in ast.walk(t):
            if isinstance(n, ast.Call) and getattr(n.func, 'id', None) == 'isinstance' and len(n.args) == 2:
                cls = n.args[1]
                names = [e.id for e in (cls.elts if isinstance(cls, ast.Tuple) else [cls]) if isinstance(e, ast.Name)]
                for c in names: assert classes.get(c, m) == m, f"wsss_lib.{m}: isinstance(..., {c}) of wsss_lib.{classes[c]}"


def test_no_import_cycle():
    graph = {m: imports(m, t) for m, t in MODS.items()}
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'open', f"import cycle: {' -> '.join(path + [m])}"
        state[m] = 'open'
        for i in graph.get(m, ()): visit(i, path + [m])
        state[m] = 'done'
    for m in graph: visit(m, [])


def test_the_checks_catch_what_they_should(tmp_path):
    "The walker sees function-level and relative imports, so a violation hidden in a function is found."
    t = ast.parse("def f():\n    from ..methods.clip_es import ClipES\n    from wsss_lib.cam import CAMSource\n    return isinstance(f, ClipES)\n")
    assert imports('methods.other', t) == {'methods.clip_es', 'cam'}
    assert imports('dashboards', ast.parse("from .metrics import miou\nimport wsss_lib.core")) == {'metrics', 'core'}
    assert METHOD_PATH.search("{'clip_es': 'wsss_lib.methods.clip_es'}") and not METHOD_PATH.search("import_module('wsss_lib.methods')")
