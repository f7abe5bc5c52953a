"""Neural architecture search as meta-learning: a space of few-shot backbones and the searchers
that explore it (docs/architecture_search.md). Candidates are trained as sweep trials
(metalearn.sweep.architecture)."""

from metalearn.nas.searchers import (
    ArchitectureSearcher,
    DartsOptions,
    EvolutionOptions,
    RandomOptions,
    RandomSearch,
    Reinforce,
    ReinforceOptions,
    RegularisedEvolution,
    SearcherOptions,
    build_searcher,
)
from metalearn.nas.space import CONV4, Architecture, ArchitectureSpace, as_blocks, from_blocks

__all__ = ["CONV4", "Architecture", "ArchitectureSearcher", "ArchitectureSpace", "DartsOptions", "EvolutionOptions",
           "RandomOptions", "RandomSearch", "Reinforce", "ReinforceOptions", "RegularisedEvolution",
           "SearcherOptions", "as_blocks", "build_searcher", "from_blocks"]
