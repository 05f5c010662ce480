"""The model core: device placement, model references and loading, predictors, fine-tuning,
batched inference and model versions. Shared by every app; knows nothing about them."""
