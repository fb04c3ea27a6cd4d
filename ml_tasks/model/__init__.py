"""The interest model, stage by stage: sequences -> LSTM -> hidden states -> PCA -> predictor.

``dataset`` (the exports as frames), ``samples`` (the in-memory sample definition), ``sequences`` (model
arrays), ``lstm``, ``pca``, ``predictor``, ``fit`` (fit and fine-tune), ``score`` (apply), ``persist``
(files). Pure: frames and config in, models and frames out; no DuckDB, no MLflow.
"""
