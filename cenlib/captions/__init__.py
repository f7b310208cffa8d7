"""Captioners: what turns a patch's prompt into a caption when no paid model is used.

- :mod:`.rules`: a deterministic, seeded writer of one paragraph from the structured statistics
  of the ``chatearthnet-3.5`` and ``cen-layout`` styles; the demo's default and a baseline that
  states nothing the statistics do not support.
"""
