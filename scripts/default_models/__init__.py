"""The recipe of the default models (``scripts/build_default_models.py``), one module per group of steps.

* :mod:`~scripts.default_models.data`: ``split``, ``fit``, ``select``, ``normalise`` (photos -> training UV maps);
* :mod:`~scripts.default_models.uvapm`: ``uvapm`` (the UV albedo model, resolution and K by validation);
* :mod:`~scripts.default_models.detail`: ``detail`` (the detail generator);
* :mod:`~scripts.default_models.report`: ``report`` (held-out numbers, pictures, model cards from ``templates/``).
"""
