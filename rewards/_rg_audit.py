"""A source audit of reasoning-gym's scorers: does a dataset's ``score_answer`` evaluate its input?

:func:`audit` walks, with :mod:`ast`, the source of a dataset's ``score_answer`` and of every
function, method and class of the ``reasoning_gym`` package it reaches (the *closure*), resolving
names through each function's globals and ``self.`` attributes through the dataset's class. It
reports a *finding* for anything that could evaluate text or reach outside the process:

- the builtins ``eval``, ``exec``, ``compile``, ``__import__``, ``open``, ``input``, ``breakpoint``;
- any use or function-local import of a module outside :data:`SAFE_MODULES` (sympy, whose functions ``sympify`` a string
  argument; ``ast.literal_eval``; ``subprocess``, ``os``, ``pickle``, ...), or of a function or
  class defined in one;
- an attribute named like a dangerous function on an object the walk cannot resolve
  (``x.parse_expr(...)``, ``obj.eval(...)``);
- a ``self.`` attribute the class does not define (an instance attribute set at run time, whose
  methods the walk cannot see).

The audit is conservative: a finding does not prove the scorer is exploitable, but a scorer
without findings calls only audited code and the standard-library modules listed here. The
closure's *digest* (SHA-256 of every reached function's source) pins what was audited:
:data:`rewards.reasoning_gym.ALLOWED` records it per dataset, and the reward refuses a dataset
whose installed scorer's digest differs (a new reasoning-gym version changed it).

>>> from reasoning_gym.factory import DATASETS
>>> r = audit(DATASETS["n_queens"][0])
>>> r.safe, r.findings[0]
(False, 'eval (builtin) in NQueensDataset.score_answer')
>>> audit(DATASETS["leg_counting"][0]).safe
True
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types
from dataclasses import dataclass, field

PACKAGES = frozenset({"reasoning_gym", "magiccube"})
"""Packages whose code the walk follows (magiccube: the cube simulator of ``rubiks_cube``'s scorer)."""
DANGEROUS_BUILTINS = frozenset({"eval", "exec", "compile", "__import__", "open", "input", "breakpoint"})
DANGEROUS_ATTRS = frozenset({"eval", "exec", "compile", "sympify", "parse_expr", "literal_eval", "system",
                             "popen", "Popen", "run", "call", "check_output", "loads", "load", "parse_latex",
                             "score_answer"})
SAFE_MODULES = frozenset({"re", "math", "cmath", "json", "fractions", "decimal", "collections", "itertools",
                          "functools", "string", "difflib", "typing", "dataclasses", "enum", "statistics",
                          "heapq", "copy", "random", "datetime", "calendar", "numbers", "operator",
                          "unicodedata", "bisect", "numpy", "abc", "builtins", "zss", "textwrap", "array"})
_GENERATED = frozenset({"__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__lt__",
                        "__le__", "__gt__", "__ge__"})
"""Methods ``dataclasses`` writes (they have no source file)."""
"""Modules whose functions never evaluate a string as code (numpy: ``np.round(float(x))`` and the like)."""


@dataclass
class AuditResult:
    """What :func:`audit` found for one dataset class."""

    dataset_class: str
    findings: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    """The qualified names of the reasoning-gym functions in the closure, sorted."""
    digest: str = ""

    @property
    def safe(self) -> bool:
        return not self.findings


def _parse(fn) -> tuple[ast.AST, str]:
    """The syntax tree and source of a function (a method's source is indented; a docstring line
    may be less so, which ``textwrap.dedent`` cannot undo)."""
    source = inspect.getsource(fn)
    try:
        return ast.parse(textwrap.dedent(source)), source
    except SyntaxError:
        return ast.parse("if True:\n" + source), source


def _root(module: str | None) -> str:
    return (module or "").split(".")[0]


class _Walker:
    def __init__(self, cls: type, packages: frozenset[str]):
        self.cls, self.packages = cls, packages
        self.seen: dict[str, str] = {}  # qualname -> source
        self.findings: list[str] = []

    def note(self, what: str, where: str) -> None:
        msg = f"{what} in {where}"
        if msg not in self.findings:
            self.findings.append(msg)

    # ---------------------------------------------------------------- objects
    def classify(self, obj, label: str, where: str) -> None:
        """Follow ``obj`` (reached as ``label`` in ``where``): recurse into reasoning-gym code,
        record a finding for anything else outside :data:`SAFE_MODULES`."""
        if isinstance(obj, types.ModuleType):
            if _root(obj.__name__) not in SAFE_MODULES | self.packages:
                self.note(f"module {obj.__name__} ({label})", where)
            return
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, property):
            for f in (obj.fget, obj.fset):
                if f is not None:
                    self.classify(f, label, where)
            return
        if isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType, type)) or callable(obj):
            module = getattr(obj, "__module__", None)
            if isinstance(obj, types.MethodType):
                obj = obj.__func__
            if _root(module) in self.packages:
                if isinstance(obj, type):
                    for name, member in vars(obj).items():
                        if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                            self.classify(member, f"{obj.__name__}.{name}", where)
                elif isinstance(obj, types.FunctionType):
                    self.walk(obj)
                else:  # an instance of a reasoning-gym class: its class's code
                    self.classify(type(obj), label, where)
                return
            if module == "builtins" and getattr(obj, "__name__", "") in DANGEROUS_BUILTINS:
                self.note(f"{obj.__name__} (builtin)", where)
            elif _root(module) not in SAFE_MODULES:
                self.note(f"{module}.{getattr(obj, '__qualname__', label)}", where)

    # ---------------------------------------------------------------- source
    def walk(self, fn: types.FunctionType, owner: type | None = None) -> None:
        qualname = f"{fn.__module__}.{fn.__qualname__}"
        if qualname in self.seen:
            return
        try:
            tree, source = _parse(fn)
        except (OSError, TypeError):
            file = fn.__code__.co_filename
            if fn.__name__ in _GENERATED and (file.startswith("<") or file.endswith(("dataclasses.py", "reprlib.py"))):
                return  # a dataclass's generated __init__/__eq__/...: field assignments and compares
            self.seen[qualname] = ""
            self.note("no source to audit", qualname)
            return
        self.seen[qualname] = source
        where = fn.__qualname__
        owner = owner or self._owner(fn)
        scope = fn.__globals__
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id in scope:
                    self.classify(scope[node.id], node.id, where)
                elif node.id in DANGEROUS_BUILTINS:
                    self.note(f"{node.id} (builtin)", where)
            elif isinstance(node, ast.Attribute):
                self.attribute(node, scope, owner, where)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):  # a function-local import
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for m in modules:
                    if node.__class__ is ast.ImportFrom and node.level:
                        continue  # relative: inside the package, its names resolve when used
                    if _root(m) not in SAFE_MODULES | self.packages:
                        self.note(f"import {m}", where)

    def _owner(self, fn: types.FunctionType) -> type | None:
        """The class a method belongs to: the audited class when it has the method, else None."""
        head = fn.__qualname__.split(".")[0]
        for klass in self.cls.__mro__:
            if klass.__name__ == head and klass.__module__ == fn.__module__:
                return self.cls
        return None

    def attribute(self, node: ast.Attribute, scope: dict, owner: type | None, where: str) -> None:
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls") and owner is not None:
            try:
                member = inspect.getattr_static(owner, node.attr)
            except AttributeError:
                self.instance_attribute(owner, node.attr, where)
                return
            if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                self.classify(member, f"self.{node.attr}", where)
            return
        if isinstance(base, ast.Name) and base.id in scope and isinstance(scope[base.id], types.ModuleType):
            module = scope[base.id]
            target = getattr(module, node.attr, None)
            if isinstance(target, types.ModuleType) or target is None:
                if _root(module.__name__) not in SAFE_MODULES | self.packages:
                    self.note(f"{module.__name__}.{node.attr}", where)
            else:
                self.classify(target, f"{base.id}.{node.attr}", where)
            return
        if node.attr in DANGEROUS_ATTRS:
            self.note(f".{node.attr} on an object the walk cannot resolve", where)

    def instance_attribute(self, owner: type, attr: str, where: str) -> None:
        """``self.attr`` set in an ``__init__`` of ``owner``'s classes: follow the names its value
        reads (``self._Game = Game`` reaches ``Game``'s code; ``self.word_sets = {...}`` is data)."""
        found = False
        for klass in owner.__mro__:
            init = vars(klass).get("__init__")
            if not isinstance(init, types.FunctionType) or _root(init.__module__) not in self.packages:
                continue
            try:
                tree, source = _parse(init)
            except (OSError, TypeError):
                continue
            self.seen.setdefault(f"{init.__module__}.{init.__qualname__}", source)
            for node in ast.walk(tree):
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
                for t in targets:
                    if isinstance(t, ast.Attribute) and t.attr == attr and isinstance(t.value, ast.Name) \
                            and t.value.id == "self" and node.value is not None:
                        found = True
                        for sub in ast.walk(node.value):
                            if isinstance(sub, ast.Name) and sub.id in init.__globals__:
                                self.classify(init.__globals__[sub.id], sub.id, where)
                            elif isinstance(sub, ast.Attribute):
                                self.attribute(sub, init.__globals__, None, where)
        if not found and attr not in ("config", "seed", "size"):  # ProceduralDataset.__init__'s data
            self.note(f"self.{attr} (an instance attribute the walk cannot follow)", where)


def audit(dataset_cls: type, packages: frozenset[str] = PACKAGES) -> AuditResult:
    """Walk the source reachable from ``dataset_cls.score_answer``, following the code of
    ``packages``; see the module docstring."""
    walker = _Walker(dataset_cls, packages)
    fn = inspect.getattr_static(dataset_cls, "score_answer")
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    walker.walk(fn, dataset_cls)
    h = hashlib.sha256()
    for name in sorted(walker.seen):
        h.update(name.encode() + b"\0" + walker.seen[name].encode() + b"\0")
    return AuditResult(dataset_cls.__name__, walker.findings, sorted(walker.seen), h.hexdigest()[:16])


