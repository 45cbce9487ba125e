"""Import Hugging Face model snapshots (BERT/MiniLM, ELECTRA, RoBERTa/XLM-RoBERTa, DistilBERT) as model directories.

``lrt-rerank models import SRC --out DST``, or ``CrossEncoder.load(SRC)`` / ``BiEncoder.load(SRC)``
on a snapshot folder (imported once into ``<model home>/imported``).
"""

from lrt_rerank.models.importers.build import import_snapshot, imported_model_dir
from lrt_rerank.models.importers.snapshot import is_snapshot, snapshot_key

__all__ = ["import_snapshot", "imported_model_dir", "is_snapshot", "snapshot_key"]
