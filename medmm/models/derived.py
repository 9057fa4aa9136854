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
                   train_reports: Sequence[str] | None = None, ontology=None,
                   labels: Sequence[str] | None = None) -> NetworkDerived:
    """The `NetworkDerived` of ``network`` under ``preprocessing`` (and the training reports).

    Args:
        network: the workflow's network section.
        preprocessing: the workflow's preprocessing (its HU window maps histogram centres).
        train_reports: reference reports of the training split; needed for the compact decoder
            vocabulary (``report_generator.vocabulary: training_reports``), else ignored.
        ontology / labels: the run's `medmm.knowledge.Ontology` and finding labels; needed by
            ``network.hierarchy`` (group outputs) and ``fusion.head: knowledge_queries`` (query texts).
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
    return NetworkDerived(
        histogram_centres=to_input(radiomics.intensity_hu if radiomics is not None else None),
        context_centres=to_input(context.hu if context else None),
        context_context_centres=to_input(context.context_hu if context else None),
        vocab_ids=vocab_ids,
        **_knowledge_outputs(network, ontology, labels),
    )


def _knowledge_outputs(network: ModelConfig, ontology, labels: Sequence[str] | None) -> dict:
    """Issue 20: the hierarchy's group outputs and edges, and the label-query texts, from the ontology."""
    wants_queries = network.fusion.head == "knowledge_queries"
    if network.hierarchy is None and not wants_queries:
        return {}
    if ontology is None or labels is None:
        from medmm.errors import MedmmConfigError

        raise MedmmConfigError("network", "hierarchy / knowledge_queries need the ontology and labels to build")
    from medmm.knowledge.hierarchy import Hierarchy

    out: dict = {}
    names = list(labels)
    if network.hierarchy is not None:
        hierarchy = Hierarchy.from_ontology(ontology, labels)
        out.update(hierarchy_groups=list(hierarchy.groups), hierarchy_edges=[list(e) for e in hierarchy.edges])
        names = hierarchy.names
    if wants_queries:
        from medmm.models.query_head import label_query_embeddings, label_query_text

        out["label_query_texts"] = [label_query_text(ontology, name) for name in names]
        out["label_query_dim"] = int(label_query_embeddings(out["label_query_texts"], network.text_encoder).shape[1])
    return out
