"""Model directories and the model factory's conversions.

* :mod:`~lrt_rerank.models.store`: model directories and cards, the packaged defaults, the model home;
* :mod:`~lrt_rerank.models.convert` and :mod:`~lrt_rerank.models.weights`: torch-free conversion of
  encoder weights to ONNX;
* :mod:`~lrt_rerank.models.importers`: Hugging Face snapshots into model directories;
* :mod:`~lrt_rerank.models.quantize`: dynamic INT8;
* :mod:`~lrt_rerank.models.default_dense`: how the packaged bge-small-en-v1.5 INT8 is made.
"""

from lrt_rerank.models.store import ModelCard, default_model_dir, dense_model_dir, resolve_model_dir

__all__ = ["ModelCard", "default_model_dir", "dense_model_dir", "resolve_model_dir"]
