"""ML model adapters, the model store and demo-model training (model serving)."""
