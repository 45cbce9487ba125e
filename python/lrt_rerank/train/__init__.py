"""Model factory (optional ``train`` extra: torch + transformers): teacher fine-tuning,
distillation into the LRT, ONNX export with INT8 quantization, and model cards.

Nothing here is imported at run time by the scoring engine.
"""
