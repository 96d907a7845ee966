import os
import sys

# tests/ holds importable helper modules (fake backends) that worker processes import too
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import subprocess  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

import pytest  # noqa: E402

#: set in a child pytest that runs tests marked ``fresh_process`` for real
_CHILD_ENV = "CONVBENCH_FRESH_PROCESS_CHILD"
_child_results: dict[str, dict[str, str]] = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fresh_process: run the test's body in a fresh interpreter (once per module, "
        "all such tests of the module together): for libraries that must not meet in one process, "
        "e.g. triton (torch.compile's inductor imports it) after TensorFlow (LLVM clash)")


def _run_children(nodeids: list, tmp_dir: str) -> dict[str, str]:
    """Run these fresh_process tests in one child pytest; test name -> outcome."""
    xml = os.path.join(tmp_dir, "fresh.xml")
    env = {**os.environ, _CHILD_ENV: "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           "-o", "addopts=", f"--junitxml={xml}", *nodeids]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800,
                       cwd=os.path.dirname(TESTS_DIR))
    outcomes: dict[str, str] = {"__log__": (r.stdout + r.stderr)[-6000:]}
    if not os.path.exists(xml):
        return outcomes
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name")
        result = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                result = f"{child.tag}: {(child.get('message') or '')[:2000]}"
            elif child.tag == "skipped":
                result = f"skipped: {child.get('message') or ''}"
        outcomes[name] = result
    return outcomes


@pytest.fixture
def fresh_process(request, tmp_path_factory):
    """True in the child (run the body); in the parent, the child's outcome of this test is
    asserted and False is returned (the body must then return at once)."""
    if os.environ.get(_CHILD_ENV):
        return True
    path = str(request.node.path)
    if path not in _child_results:  # every selected fresh_process test of this module, at once
        nodeids = [i.nodeid for i in request.session.items
                   if i.path == request.node.path and i.get_closest_marker("fresh_process")]
        _child_results[path] = _run_children(nodeids, str(tmp_path_factory.mktemp("fresh")))
    res = _child_results[path]
    outcome = res.get(request.node.name)
    assert outcome is not None, f"the fresh-process run did not report {request.node.name}:\n{res['__log__']}"
    if outcome.startswith("skipped"):
        pytest.skip(outcome)
    assert outcome == "passed", f"{outcome}\n--- child log tail:\n{res['__log__']}"
    return False


@pytest.fixture
def fakes():
    """The fake backends of tests/fake_backends.py, registered for the test."""
    from convbench import registry
    import fake_backends

    for cls in fake_backends.ALL:
        registry.register(cls)
    yield
    for cls in fake_backends.ALL:
        registry.unregister(cls.name)
