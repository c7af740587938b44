"""Evaluation of generated audio against reference audio (``lora-audio eval``).

Depends only on :mod:`lora_audio.audio` and :mod:`lora_audio.files`, so it scores any two
folders of audio. Metrics are pure functions in :mod:`eval.distances`; hand-crafted features
in :mod:`eval.features`; embedding models in :mod:`eval.embeddings`; the report in
:mod:`eval.report`.
"""
