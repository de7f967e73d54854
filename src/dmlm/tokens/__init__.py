"""Tokens stage: discrete units for audio, lips and images (codebooks) and text ids.

One interface for every media tokenizer: ``registry.ENCODERS[modality][encoder]`` names a module with

- ``fit(settings, media_path) -> Codebook``: fit on clean training media (``settings`` is the
  config's ``tokens.<modality>.<name>`` plus ``seed``, and ``sample_rate`` for audio);
- ``encode(codebook, media_path) -> list[np.ndarray]``: int32 ids per item; encoders of the timed
  modalities (audio, lips) take ``return_frames=True`` and then also return each kept unit's
  frame index (``encode_media`` writes the token times from them);
- ``describe(codebook) -> {"vocab_size": int, "frame_rate": float | None}``: ids lie in
  ``range(vocab_size)``, and ``vocab_size`` is ``codebook.n_units`` (training reads that alone); ``frame_rate`` is tokens per second of media before repeats are
  collapsed (None for images and text);
- optionally ``check_settings(settings)``: validate settings and local weights without fitting.

Pipeline entry points, in ``dmlm.tokens.registry``: ``fit_codebook``, ``encode_media``,
``describe`` and ``check_settings`` (dispatch on modality and encoder); text: ``dmlm.tokens.text.train_text_tokenizer`` /
``encode_table`` / ``decode`` / ``describe``.

The dispatch table lives in ``registry`` and not here because this file runs, and so is part of
the code fingerprint (``dmlm.codeversion``), wherever any module of the package is imported:
training and evaluation read codebooks through ``dmlm.tokens.codebook`` alone, and registering a
new encoder must not rerun them.
"""
