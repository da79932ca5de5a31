"""Captum's helpers that are not attribution methods: statistics of attributions (:mod:`.stat`,
:mod:`.summarizer`), interpretable embedding layers (:mod:`.embeddings`) and baselines drawn from value
lists (:mod:`.baselines`)."""
