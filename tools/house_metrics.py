"""The house's vital signs: the longest functions and modules of the core, and the places the
core names a backend or framework in code (identifiers, imports and strings that are not
docstrings). Used for the before/after figures of the refactor; reads files, runs nothing.

    python tools/house_metrics.py [REPO] [-v]
"""
import ast
import pathlib
import re
import sys

NAMES = ["numpy-direct", "numpy-im2col", "numpy-fft", "scipy-fft", "scipy-signal", "torch",
         "tensorflow", "tf", "numba", "triton", "onnxruntime", "jax", "jaxlib", "openvino", "cudnn",
         "onednn", "mkldnn", "cupy", "keras", "llvmlite"]
PATTERN = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in NAMES) + r")(?![\w-])", re.I)


def sizes(root: pathlib.Path) -> None:
    core = sorted((root / "convbench").rglob("*.py"))
    funcs = []
    for f in core:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(root)}:{node.name}"))
    funcs.sort(reverse=True)
    print("longest functions:", ", ".join(f"{n} {l}" for l, n in funcs[:5]))
    print("functions > 120 lines:", sum(l > 120 for l, _ in funcs), "; > 60:", sum(l > 60 for l, _ in funcs))
    mods = sorted(((len(f.read_text().splitlines()), str(f.relative_to(root))) for f in core), reverse=True)
    print("longest modules:", ", ".join(f"{n} {l}" for l, n in mods[:4]))
    print("modules > 700 lines:", sum(l > 700 for l, _ in mods))


def names(root: pathlib.Path, verbose: bool) -> None:
    hits = []
    for f in sorted((root / "convbench").rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {id(n.value) for n in ast.walk(tree)
                if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                text = node.value
            elif isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                text = " ".join([getattr(node, "module", "") or ""] + [a.name for a in node.names])
            for m in PATTERN.finditer(text or ""):
                hits.append(f"{f.relative_to(root)}:{node.lineno}: {m.group(0)!r} in {text[:70]!r}")
    print("places the core names a backend or framework in code:", len(hits))
    if verbose:
        print("\n".join(hits))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "-v"]
    repo = pathlib.Path(args[0] if args else ".")
    sizes(repo)
    names(repo, "-v" in sys.argv)
