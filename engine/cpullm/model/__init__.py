"""The model file layer: GGUF reading, hyperparameters, tokenizer, chat template, the default model."""
