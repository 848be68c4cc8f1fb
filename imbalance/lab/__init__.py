"""The book's lab: what only the chapters need, kept apart from the library a reader reuses.

The library (:mod:`imbalance.losses`, :mod:`imbalance.sampling`, :mod:`imbalance.necks`,
:mod:`imbalance.models`, :mod:`imbalance.data`, :mod:`imbalance.evaluation`,
:mod:`imbalance.train`, :mod:`imbalance.plotting`) never imports this package; the chapters import
both.

* :mod:`imbalance.lab.cache`: the lab's cache (``$IMBALANCE_CACHE``) and the ``configs/`` folder.
* :mod:`imbalance.lab.snapshot`: briefly trained detectors (``train.fit`` runs with the ``brief``
  preset, cached) and the outputs the concept chapters measure on them.
* :mod:`imbalance.lab.chapter`: the preset a chapter trains with, and its cached runs.
* :mod:`imbalance.lab.prepare`: ``python -m imbalance.lab``, which trains everything the chapters
  read into the cache before they run (``make book`` does it first).
* :mod:`imbalance.lab.experiments`: the experiment grids, their summaries and comparisons.
* :mod:`imbalance.lab.campaign`: issue 14's campaign, every run of the protocol's grids in order,
  shared between workers (``python -m imbalance.lab.campaign run``).
* :mod:`imbalance.lab.sampling_analysis`: chapter 6's measurements of the RoI samplers.

Where analysis code lives, by one rule: a function that measures tensors with an idea's own
formula (gradient norms and their density, a pyramid's level correlation) lives next to the idea
(:mod:`imbalance.losses.analysis`, :mod:`imbalance.necks.analysis`), because a reader applies it to
their own detector; a function that runs a detector over a dataset, reads the lab's cache or
results, or exists for one chapter's figure lives here. By the same rule :mod:`imbalance.plotting`
stays in the library: each of its functions draws arrays or tables it is given and knows no
chapter.
"""
