"""Built-in convbench backends, installed as ``convbench_backends``.

Each backend lives in its own module and registers through the ``convbench.backends``
entry-point group in pyproject.toml, exactly as a third-party backend would.
"""
