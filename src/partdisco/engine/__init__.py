"""The engine: what runs models on data, below the API (:mod:`partdisco.api`) and above the library floors.

Rooms, one job each:

- :mod:`.train` (package): a training run, from :func:`~partdisco.engine.train.fit` down to one step.
- :mod:`.evaluate` (package): the evaluation protocols, whole-image evaluation, ``partdisco eval``.
- :mod:`.inference` (package): images in, part maps out (:class:`~.inference.options.SegmentOptions`).
- :mod:`.segment` (package): ``partdisco segment``, image files in, part-map files out, resumable.
- :mod:`.discover`: foreground discovery (``data.foreground=discover``).
- :mod:`.checkpoint`: reading checkpoints and finding a run folder's.
- :mod:`.runfolder`: the run folder (its file names, lock, ownership, resume rules).
- :mod:`.distributed`: ``torch.distributed`` helpers that degrade to one process.

A package's ``__init__`` re-exports its modules' public names; the modules import each other directly, never
through an ``__init__`` of their own package (that would be an import circle).
"""
