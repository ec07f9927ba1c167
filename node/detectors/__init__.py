"""Detection: a RequestRecord in, Hits out (``engine.py`` shows the stages in order).

Importing the package settles where the hot path modules come from (``hotpath.py``):
compiled when the build matches the sources, else the sources.
"""

from node.detectors import hotpath

hotpath.activate()
