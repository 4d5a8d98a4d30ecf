"""ML model adapters, the model store and demo-model training (model serving).

`store` lists and loads the files of MODEL_DIR, `base` holds the errors and the adapter
interface, `validation` checks request features; none of them imports an ML library, so
the web process can list models without torch, xgboost or lightgbm. The adapters
(`xgboost_adapter`, `lightgbm_adapter`, `torch_adapter`, `pickle_adapter`) import their
library and are imported only when a model of their type is loaded.
"""
