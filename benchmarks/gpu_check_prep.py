"""The Python half of benchmarks/gpu_check.sh: what the script needs before and around convbench.

Subcommands (run from the repository root):

* ``deps`` -- which of the modules the check uses import here (found, not imported), with
  versions; exit status 1 when a required one is missing;
* ``shim DIR`` -- make convbench runnable from this uninstalled checkout: when
  ``convbench_backends`` does not resolve to this checkout's ``backends/`` (with its entry
  points), build DIR holding links ``convbench``, ``convbench_backends``, ``convbench_suites``
  and a ``convbench-<version>.dist-info`` holding pyproject.toml's entry points, and print
  DIR (to be put first on PYTHONPATH); print nothing when the installed convbench is this one;
* ``suite FILE`` -- write a suite file holding ResNet-50's 3x3 layers (from the shipped suite);
* ``cuda-backends`` -- the registered backends that declare the ``cuda`` device.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
#: module -> why the check needs it; without a required one no convbench step can run
REQUIRED = {"numpy": "convbench", "scipy": "convbench", "ml_dtypes": "convbench",
            "pandas": "load_results, report"}
OPTIONAL = {"matplotlib": "plots in report --html", "torch": "torch and triton backends",
            "triton": "triton backend", "tensorflow": "tensorflow backend",
            "pyperf": "pyperf export only"}
#: package directory in the checkout -> import name when installed (pyproject's package-dir)
LINKS = {"convbench": "convbench", "backends": "convbench_backends", "suites": "convbench_suites"}


def _version(module: str) -> str:
    """The version of the distribution that provides ``module`` ("?" when unknown)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for dist in packages_distributions().get(module, []) + [module, module.replace("_", "-")]:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "?"


def deps() -> int:
    """Print each module's version or 'missing'; 1 when a required module is missing."""
    missing = []
    for table, kind in ((REQUIRED, "required"), (OPTIONAL, "optional")):
        for module, why in table.items():
            found = importlib.util.find_spec(module) is not None
            state = _version(module) if found else "MISSING"
            print(f"{module:12s} {state:14s} {kind}: {why}")
            if not found and kind == "required":
                missing.append(module)
    if missing:
        print(f"cannot run convbench: missing {', '.join(missing)} (carry them as wheels in .whl/)")
    return 1 if missing else 0


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def _installed_here(entry_points: dict[str, dict[str, str]]) -> bool:
    """Whether the importable convbench_backends is this checkout's, with every entry point."""
    from importlib.metadata import entry_points as installed

    spec = importlib.util.find_spec("convbench_backends")
    if spec is None or not spec.submodule_search_locations:
        return False
    if Path(list(spec.submodule_search_locations)[0]).resolve() != (REPO / "backends").resolve():
        return False
    return all(set(eps) <= {ep.name for ep in installed(group=group)}
               for group, eps in entry_points.items())


def shim(directory: str) -> int:
    """Build the shim directory (see the module docstring) unless it is not needed."""
    project = _pyproject()["project"]
    groups = project.get("entry-points", {})
    if _installed_here(groups):
        print("convbench is installed from this checkout: no shim needed", file=sys.stderr)
        return 0
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for src, name in LINKS.items():
        link = d / name
        if not link.exists():
            link.symlink_to(REPO / src, target_is_directory=True)
    info = d / f"convbench-{project['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: convbench\nVersion: {project['version']}\n")
    lines = []
    for group, eps in groups.items():
        lines += [f"[{group}]"] + [f"{k} = {v}" for k, v in eps.items()] + [""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    n = sum(len(eps) for eps in groups.values())
    print(f"convbench is not installed from this checkout: shim with {n} entry points in {d}",
          file=sys.stderr)
    print(d)
    return 0


def write_3x3_suite(path: str, source_suite: str = "resnet50") -> int:
    """Write the 3x3 layers of a shipped suite as a suite file (benchdnn descriptors)."""
    import convbench as cb

    suite = cb.load_suite(source_suite)
    keep = [p for p in suite if set(p.spec.kernel_size) == {3}]
    lines = ["[suite]",
             f"name = {json.dumps(source_suite + '-3x3')}",
             f"description = {json.dumps(f'the 3x3 convolutions of {source_suite} (written by gpu_check)')}",
             f"source = {json.dumps(suite.source)}", ""]
    for p in keep:
        lines += ["[[problem]]", f"name = {json.dumps(p.name)}",
                  f"benchdnn = {json.dumps(p.spec.to_benchdnn())}",
                  f"dtype = {json.dumps(p.spec.dtype)}", f"layout = {json.dumps(p.spec.layout)}",
                  f"count = {suite.counts.get(p.name, 1)}", ""]
    Path(path).write_text("\n".join(lines))
    print(f"{len(keep)} of {len(suite)} {source_suite} layers are 3x3: {path}")
    return 0 if keep else 1


def cuda_backends() -> int:
    """Print the registered backends that declare the cuda device, one line, space-separated."""
    import convbench as cb

    names = []
    for name in cb.list_backends():
        try:
            if "cuda" in cb.get_backend(name).capabilities.devices:
                names.append(name)
        except cb.ConvbenchError as exc:
            print(f"{name}: cannot load: {exc}", file=sys.stderr)
    print(" ".join(names))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(REPO))  # this checkout's convbench, installed or not
    commands = {"deps": (0, deps), "shim": (1, shim), "suite": (1, write_3x3_suite),
                "cuda-backends": (0, cuda_backends)}
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][0]:
        print(f"usage: {Path(__file__).name} deps | shim DIR | suite FILE | cuda-backends",
              file=sys.stderr)
        return 2
    return commands[args[0]][1](*args[1:])


if __name__ == "__main__":
    sys.exit(main())
