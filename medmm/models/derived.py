"""Values a network needs that follow from its workflow and training data, computed once.

They are stored in the run's `RunMeta` (``network_derived``) next to the network config, never
written back into a validated config: histogram bin centres mapped from HU into the input units
the preprocessing window produces, and the decoder vocabulary of the training reports.
"""

from __future__ import annotations

from collections.abc import Sequence

from medmm.config.network import ModelConfig, NetworkDerived
from medmm.config.preprocessing import PreprocessingConfig, hu_to_intensity


def derive_network(network: ModelConfig, preprocessing: PreprocessingConfig,
                   train_reports: Sequence[str] | None = None) -> NetworkDerived:
    """The `NetworkDerived` of ``network`` under ``preprocessing`` (and the training reports).

    Args:
        network: the workflow's network section.
        preprocessing: the workflow's preprocessing (its HU window maps histogram centres).
        train_reports: reference reports of the training split; give the compact decoder
            vocabulary (``report_generator.vocabulary: training_reports``) and the report words.
    """
    generator, radiomics = network.report_generator, network.radiomics

    def to_input(hu: list[float] | None) -> list[float] | None:
        return None if hu is None else [hu_to_intensity(h, preprocessing) for h in hu]

    context = radiomics.context if radiomics is not None else None
    vocab_ids = None
    if generator.name_or_path is None and generator.vocabulary == "training_reports" and train_reports is not None:
        from medmm.models.pretrained import load_tokenizer
        from medmm.models.report_generator import report_vocabulary

        vocab_ids = report_vocabulary(list(train_reports), load_tokenizer(network.text_encoder.name_or_path))
    report_words = None
    if train_reports is not None:
        from medmm.models.report_words import training_words

        report_words = training_words(train_reports) or None
    return NetworkDerived(
        histogram_centres=to_input(radiomics.intensity_hu if radiomics is not None else None),
        context_centres=to_input(context.hu if context else None),
        context_context_centres=to_input(context.context_hu if context else None),
        vocab_ids=vocab_ids,
        report_words=report_words,
    )
