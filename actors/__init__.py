"""Node kinds: one module per actor kind, each a plain operator class (``graph/operator.py``).

The YAML ``kind`` -> class registry is ``graph/registry.py``.
"""
