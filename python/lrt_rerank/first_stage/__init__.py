"""First-stage retrieval back-ends behind one interface (:class:`FirstStage`)."""

from lrt_rerank.first_stage.base import SYSTEMS, Candidate, FirstStage, System, check_system, wants_search

__all__ = ["SYSTEMS", "Candidate", "FirstStage", "System", "check_system", "wants_search"]
